"""Few-shot training and validation sets: `task.shots_per_class=K`.

What a method does with little data is a question of its own (data efficiency): K examples of
each class for training, chosen by the data seed (`task.data_seed`), never by the training seed
(`seed`), so every method and every training seed of one data seed sees the same examples, and
another data seed draws others. The draw walks the split in one seeded order (`seeded_order`),
so for classification the K-shot set of a data seed holds its smaller-K sets.

- Classification (`PerLabel`): exactly K examples of every label of the task's label set. A
  label the training split has fewer than K of is refused, naming the label and its count.
- NER (`EntityCover`): a sentence holds several entities of several types, so exactly K per type
  cannot be had in general. The greedy rule: walk the sentences in the seeded order and keep a
  sentence when it has an entity of a type still short of K entities, until every type has at
  least K. A kept sentence brings all its entities, so frequent types (PER, LOC in CoNLL-2003)
  end with more than K: the rule may overshoot, and the run's notes give each type's count.
  Sentences without an entity are never kept.

Validation is drawn by the same rule from the validation split (the real one, or the share carved
from the whole training split), so a K-shot run is not chosen on a validation set far larger than
its training set (Perez et al. 2021, "True few-shot learning with language models"). Where the
validation split has fewer than K of a class, all of that class is kept and the note says so:
validation then is not K-shot for that class, but it is still drawn from validation only. Test
stays whole. `task.max_train_samples` is refused beside `task.shots_per_class` (both would choose
the training set; peftlab/config.py); `task.max_eval_samples` still caps validation and test,
after the draw.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from typing import Protocol

from seqeval.metrics.sequence_labeling import get_entities

from peftlab.data.columns import Example
from peftlab.errors import DataError


@dataclass(frozen=True)
class Draw:
    """One split's few-shot draw: the examples kept (in the split's order), how many of each
    class they hold, and the classes the whole split holds fewer than K of (with that count)."""

    examples: list[Example]
    counts: dict[str, int]
    short: dict[str, int]


class ShotRule(Protocol):
    """How a task kind draws K of each class: `unit` names what is counted, for messages."""

    unit: str

    def draw(self, examples: list[Example], shots: int, order: list[int]) -> Draw: ...


def seeded_order(count: int, seed: int) -> list[int]:
    """The positions 0..count-1 in the order the data seed shuffles them."""
    order = list(range(count))
    random.Random(seed).shuffle(order)
    return order


class PerLabel:
    """Exactly K examples of each label (the first K of the label in the order given)."""

    unit = "examples of label"

    def __init__(self, labels: list[str]) -> None:
        self.labels = labels

    def draw(self, examples: list[Example], shots: int, order: list[int]) -> Draw:
        by_label: dict[str, list[int]] = {label: [] for label in self.labels}
        for index in order:
            by_label[examples[index]["label"]].append(index)
        kept = sorted(index for indices in by_label.values() for index in indices[:shots])
        return Draw(
            examples=[examples[index] for index in kept],
            counts={label: min(len(indices), shots) for label, indices in by_label.items()},
            short={label: len(indices) for label, indices in by_label.items() if len(indices) < shots},
        )


class EntityCover:
    """Sentences in the order given, each kept when it has an entity of a type still short of K,
    until every type has K (the greedy rule of the module docstring). Entities are read from the
    tags as seqeval reads them (IOB2: B- starts one)."""

    unit = "entities of type"

    def __init__(self, labels: list[str]) -> None:
        self.labels = labels
        self.types = sorted({label.split("-", 1)[1] for label in labels if "-" in label})

    def draw(self, examples: list[Example], shots: int, order: list[int]) -> Draw:
        if not self.types:
            raise DataError(
                f"task.shots_per_class counts entities per type, and the label set {self.labels} has no entity type "
                "(tags such as B-PER): check the data's tag column or task.labels."
            )
        counts = Counter(dict.fromkeys(self.types, 0))
        kept = []
        for index in order:
            if all(count >= shots for count in counts.values()):
                break
            found = Counter(kind for kind, _, _ in get_entities(list(examples[index]["tags"])))
            if any(counts[kind] < shots for kind in found):
                kept.append(index)
                counts.update(found)
        # a type still short of K had every sentence holding it kept: its count is the split's
        short = {kind: count for kind, count in counts.items() if count < shots}
        return Draw([examples[index] for index in sorted(kept)], dict(counts), short)


@dataclass(frozen=True)
class FewShot:
    """The draws of a run: what `arrange_splits` keeps and what result.json's notes say."""

    shots: int
    seed: int
    unit: str
    train: Draw
    validation: Draw
    validation_pool: int  # examples of the validation split the draw chose from


def draw_few_shot(train: list[Example], validation: list[Example], shots: int, seed: int, rule: ShotRule) -> FewShot:
    """K of each class from train (refused where train has fewer) and from validation (all of a
    class where validation has fewer), each in the order `seed` shuffles it."""
    drawn_train = rule.draw(train, shots, seeded_order(len(train), seed))
    if drawn_train.short:
        counts = ", ".join(f"{name!r} ({count})" for name, count in sorted(drawn_train.short.items()))
        raise DataError(
            f"task.shots_per_class={shots}: the training split has fewer than {shots} {rule.unit} {counts}. "
            f"Set task.shots_per_class to at most {min(drawn_train.short.values())}, or use another dataset."
        )
    drawn_validation = rule.draw(validation, shots, seeded_order(len(validation), seed))
    return FewShot(shots, seed, rule.unit, drawn_train, drawn_validation, len(validation))


def few_shot_note(few_shot: FewShot, sizes: dict[str, int], whole_test: int | None) -> str:
    """What result.json's notes say of the draw: the sizes used (`sizes`, after any cap of
    task.max_eval_samples) and, for the test split, its size before any cap."""
    train, validation = few_shot.train, few_shot.validation
    parts = [
        f"few-shot (task.shots_per_class={few_shot.shots}, drawn by task.data_seed={few_shot.seed}): "
        f"K-shot train of {sizes['train']:,} examples ({few_shot.unit}: {_counts(train.counts)})",
        f"K-shot validation of {sizes['validation']:,} examples, drawn by the same rule from the "
        f"{few_shot.validation_pool:,} of the validation split ({few_shot.unit}: {_counts(validation.counts)})",
    ]
    if validation.short:
        parts.append(
            f"the validation split has fewer than {few_shot.shots} {few_shot.unit} {', '.join(sorted(validation.short))}: "
            "all of those kept"
        )
    if sizes["validation"] < len(validation.examples):
        parts.append(f"validation then capped to {sizes['validation']:,} (task.max_eval_samples)")
    if whole_test is not None:
        capped = sizes["test"] < whole_test
        parts.append(
            f"test {sizes['test']:,} of {whole_test:,} (task.max_eval_samples)" if capped else f"test whole ({whole_test:,})"
        )
    return "; ".join(parts)


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{name} {count}" for name, count in sorted(counts.items()))
