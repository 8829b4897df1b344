"""Few-shot training and validation sets (`task.shots_per_class`, peftlab/data/few_shot.py): exactly K
per label for classification, the greedy entity rule for NER (checked by hand on a small example),
the same examples for every training seed and others for another data seed, validation drawn from
validation, test whole, and the refusals."""

from __future__ import annotations

from collections import Counter

import pytest
import transformers

from peftlab.config import check_config
from peftlab.data.few_shot import EntityCover, PerLabel, seeded_order
from peftlab.data.sources import arrange_splits
from peftlab.errors import ConfigError, DataError
from peftlab.tasks import build_task
from tests.conftest import compose_config, write_conll, write_csv

LABELS = ["neg", "pos", "neutral"]


def labelled(prefix: str, counts: dict[str, int]) -> list[dict]:
    """Examples `prefix0`, `prefix1`, ... with the labels interleaved."""
    pool = [label for label, count in counts.items() for _ in range(count)]
    pool = pool[::2] + pool[1::2]  # not grouped by label
    return [{"text": f"{prefix}{i}", "label": label} for i, label in enumerate(pool)]


def splits(train: dict[str, int] = {"neg": 20, "pos": 30, "neutral": 12}, validation: dict[str, int] = {"neg": 9, "pos": 9, "neutral": 9}) -> dict:
    return {"train": labelled("train", train), "validation": labelled("val", validation),
            "test": labelled("test", {"neg": 5, "pos": 5, "neutral": 5})}


def arranged(shots: int, *overrides: str, data=None, labels=LABELS) -> tuple[dict, list[str]]:
    task = compose_config(["task=classification", f"task.shots_per_class={shots}", *overrides]).task
    return arrange_splits(data or splits(), task, PerLabel(labels))


def texts(examples: list[dict]) -> list[str]:
    return [example["text"] for example in examples]


# --- classification: exactly K per label ----------------------------------------------------------

def test_exactly_k_examples_of_every_label_in_the_splits_order():
    drawn, _ = arranged(4)
    assert Counter(example["label"] for example in drawn["train"]) == {"neg": 4, "pos": 4, "neutral": 4}
    order = [int(text.removeprefix("train")) for text in texts(drawn["train"])]
    assert order == sorted(order)  # kept in file order, not in draw order


def test_validation_is_drawn_by_the_same_rule_from_validation_and_test_stays_whole():
    drawn, notes = arranged(3)
    assert Counter(example["label"] for example in drawn["validation"]) == {"neg": 3, "pos": 3, "neutral": 3}
    assert all(text.startswith("val") for text in texts(drawn["validation"]))
    assert texts(drawn["test"]) == texts(splits()["test"])
    (note,) = notes
    assert "K-shot train of 9 examples" in note and "K-shot validation of 9 examples" in note
    assert "from the 27 of the validation split" in note and "test whole (15)" in note


def test_a_validation_label_short_of_k_keeps_all_of_it_and_says_so():
    drawn, (note,) = arranged(8, data=splits(validation={"neg": 9, "pos": 5, "neutral": 9}))
    assert Counter(example["label"] for example in drawn["validation"]) == {"neg": 8, "pos": 5, "neutral": 8}
    assert "fewer than 8 examples of label pos: all of those kept" in note


def test_a_training_label_short_of_k_is_refused_naming_it_and_its_count():
    with pytest.raises(DataError, match=r"fewer than 13 examples of label 'neutral' \(12\).*at most 12"):
        arranged(13)


def test_a_pinned_label_absent_from_train_is_refused_with_count_zero():
    with pytest.raises(DataError, match=r"label 'mixed' \(0\)"):
        arranged(2, labels=[*LABELS, "mixed"])


def test_a_data_seed_holds_its_smaller_draws_and_another_data_seed_draws_others():
    eight, _ = arranged(8)
    four, _ = arranged(4)
    assert set(texts(four["train"])) < set(texts(eight["train"]))
    other, _ = arranged(4, "task.data_seed=1")
    assert texts(other["train"]) != texts(four["train"]) and texts(other["validation"]) != texts(four["validation"])


def test_max_eval_samples_caps_validation_and_test_after_the_draw():
    drawn, (note,) = arranged(3, "task.max_eval_samples=4")
    assert len(drawn["validation"]) == 4 and len(drawn["test"]) == 4
    assert set(texts(drawn["validation"])) < set(texts(arranged(3)[0]["validation"]))
    assert "validation then capped to 4 (task.max_eval_samples)" in note and "test 4 of 15" in note


def test_shots_with_max_train_samples_is_refused_naming_both_keys():
    cfg = compose_config(["task=sst2", "task.shots_per_class=8", "task.max_train_samples=100"])
    with pytest.raises(ConfigError, match=r"task.shots_per_class=8 and task.max_train_samples=100 both choose"):
        check_config(cfg)


def test_shots_below_one_is_refused():
    with pytest.raises(ConfigError, match=r"task.shots_per_class=0 must be >= 1"):
        check_config(compose_config(["task=sst2", "task.shots_per_class=0"]))


# --- NER: the greedy entity rule -------------------------------------------------------------------

NER_LABELS = ["O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER"]
HAND_CHECKED = [  # K = 2, walked in this order
    "O O",  # 0: no entity: never kept
    "B-PER I-PER O B-LOC",  # 1: PER 0 < 2: kept (PER 1, LOC 1)
    "B-PER O B-PER",  # 2: PER 1 < 2: kept (PER 3)
    "B-PER",  # 3: PER already 3, and nothing else: skipped
    "B-LOC",  # 4: LOC 1 < 2: kept (LOC 2)
    "B-ORG B-PER",  # 5: ORG 0 < 2: kept (ORG 1, PER 4: the overshoot)
    "B-ORG",  # 6: ORG 1 < 2: kept (ORG 2): every type has 2, stop
    "B-LOC",  # 7: never reached
]


def sentences(tags: list[str]) -> list[dict]:
    return [{"tokens": [f"w{i}"] * len(line.split()), "tags": line.split()} for i, line in enumerate(tags)]


def test_the_greedy_rule_on_a_hand_checked_example():
    draw = EntityCover(NER_LABELS).draw(sentences(HAND_CHECKED), 2, list(range(len(HAND_CHECKED))))
    assert [example["tags"] for example in draw.examples] == [HAND_CHECKED[i].split() for i in (1, 2, 4, 5, 6)]
    assert draw.counts == {"LOC": 2, "ORG": 2, "PER": 4} and draw.short == {}


def test_the_greedy_rule_gives_every_type_at_least_k_under_any_order():
    data = sentences(HAND_CHECKED * 3)
    for seed in range(5):
        draw = EntityCover(NER_LABELS).draw(data, 3, seeded_order(len(data), seed))
        assert all(count >= 3 for count in draw.counts.values())
        assert all(any(tag != "O" for tag in example["tags"]) for example in draw.examples)


def test_a_type_short_of_k_in_validation_keeps_every_sentence_holding_it():
    draw = EntityCover(NER_LABELS).draw(sentences(HAND_CHECKED), 4, list(range(len(HAND_CHECKED))))
    assert draw.short == {"LOC": 3, "ORG": 2}  # the split holds only 3 LOC and 2 ORG entities
    assert len(draw.examples) == 7  # every sentence with an entity


# --- through the task kinds, from files -------------------------------------------------------------

def classification_dir(tmp_path):
    """train and dev files with distinct texts, so the split an example came from shows."""
    for name, prefix, count in (("train.csv", "train", 40), ("dev.csv", "dev", 20), ("test.csv", "test", 10)):
        write_csv(tmp_path / name, ["text", "label"], [(f"{prefix} {i}", "ab"[i % 2]) for i in range(count)])
    return tmp_path


def task_splits(*overrides: str, seed: int = 0) -> tuple[dict, list[str]]:
    transformers.set_seed(seed)  # as prepare() does before the task loads: the draw must not depend on it
    cfg = compose_config([*overrides, f"seed={seed}"])
    task = build_task(cfg.task)
    return task.prepare_data(), task.notes


def test_training_seeds_of_one_data_seed_see_the_same_examples(tmp_path):
    folder = classification_dir(tmp_path)
    draws = [task_splits("task=classification", f"task.data.path={folder}", "task.shots_per_class=5", seed=seed)
             for seed in (0, 1, 2)]
    assert draws[0] == draws[1] == draws[2]
    (train, validation) = (draws[0][0]["train"], draws[0][0]["validation"])
    assert Counter(example["label"] for example in train) == {"a": 5, "b": 5}
    assert all(text.startswith("train") for text in texts(train))
    assert all(text.startswith("dev") for text in texts(validation)) and len(validation) == 10


def test_ner_through_the_task_every_type_reaches_k_and_the_note_counts_them(tmp_path):
    lines = [
        ("anna visited paris .", "B-PER O B-LOC O"), ("acme hired omar .", "B-ORG O B-PER O"),
        ("the euro cup is big .", "O B-MISC I-MISC O O O"), ("lima and acme .", "B-LOC O B-ORG O"),
    ] * 4
    for name in ("train.txt", "dev.txt", "test.txt"):
        write_conll(tmp_path / name, lines)
    data, notes = task_splits("task=conll2003", f"task.data.path={tmp_path}", "task.shots_per_class=3")
    entities = Counter(tag[2:] for sentence in data["train"] for tag in sentence["tags"] if tag.startswith("B-"))
    assert set(entities) == {"LOC", "MISC", "ORG", "PER"} and min(entities.values()) >= 3
    assert len(data["test"]) == 16
    counts = ", ".join(f"{kind} {entities[kind]}" for kind in sorted(entities))
    assert f"K-shot train of {len(data['train'])} examples (entities of type: {counts})" in notes[0]


def test_generation_tasks_have_no_few_shot_key():
    with pytest.raises(Exception, match="shots_per_class"):
        compose_config(["task=jsonl_gen", "task.shots_per_class=4"])
