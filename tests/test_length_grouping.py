"""Length grouping, on by default (`trainer.group_by_length`): training batches of similar
lengths through transformers' LengthGroupedSampler, validation and test read longest first.
It must cut padding and change no metric and no example's prediction."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from peftlab.run import EpochSeededLengthGroupedSampler, evaluation_order, make_trainer, prepare, training_arguments
from tests.conftest import WORDS, compose_config, write_conll

IGNORED = -100


def padding_efficiency(batches) -> float:
    """Real tokens over processed tokens (batch size x the batch's padded width)."""
    real = sum(int(batch["attention_mask"].sum()) for batch in batches)
    processed = sum(batch["attention_mask"].numel() for batch in batches)
    return real / processed


@pytest.fixture
def ragged_ner_dir(tmp_path: Path) -> Path:
    """64 sentences of 1 to 24 words in random order: lengths vary as much as in real NER data."""
    rng = random.Random(0)
    names = [word for word in WORDS if not word.startswith("#") and word not in ".,"]
    sentences = []
    for _ in range(64):
        words = [rng.choice(names) for _ in range(rng.randint(1, 24))]
        sentences.append((" ".join(words), " ".join(["O"] * (len(words) - 1) + ["B-PER"])))
    folder = tmp_path / "ragged"
    folder.mkdir()
    for name in ("train.txt", "dev.txt", "test.txt"):
        write_conll(folder / name, sentences)
    return folder


def test_both_trainer_presets_group_by_length_and_the_knob_turns_it_off(tiny_config, tmp_path):
    assert compose_config([]).trainer.group_by_length is True
    assert compose_config(["trainer=smoke"]).trainer.group_by_length is True
    assert training_arguments(tiny_config(), tmp_path).train_sampling_strategy == "group_by_length"
    assert training_arguments(tiny_config("trainer.group_by_length=false"), tmp_path).train_sampling_strategy == "random"


def test_grouped_training_batches_carry_far_less_padding(tiny_backbone, ragged_ner_dir, tmp_path):
    def epoch_efficiency(*overrides: str) -> float:
        cfg = compose_config(
            ["task=conll2003", f"task.data.path={ragged_ner_dir}", f"backbone.pretrained={tiny_backbone}",
             "trainer=smoke", "trainer.batch_size=4", "method=head_only", *overrides]
        )
        prepared = prepare(cfg)
        return padding_efficiency(make_trainer(cfg, prepared, tmp_path).get_train_dataloader())

    grouped, random_batches = epoch_efficiency(), epoch_efficiency("trainer.group_by_length=false")
    assert grouped > 0.8 > random_batches + 0.1, (grouped, random_batches)


def test_evaluation_reads_longest_first_and_the_knob_keeps_the_stored_order(tiny_backbone, ragged_ner_dir, tmp_path):
    def eval_batches(*overrides: str):
        cfg = compose_config(
            ["task=conll2003", f"task.data.path={ragged_ner_dir}", f"backbone.pretrained={tiny_backbone}",
             "trainer=smoke", "trainer.eval_batch_size=8", "method=head_only", *overrides]
        )
        prepared = prepare(cfg)
        return prepared, list(make_trainer(cfg, prepared, tmp_path).get_eval_dataloader())

    prepared, grouped = eval_batches()
    widths = [batch["input_ids"].shape[1] for batch in grouped]
    assert widths == sorted(widths, reverse=True)
    stored = [len(ids) for ids in prepared.encoded["validation"]["input_ids"]]
    assert [int(length) for batch in grouped for length in batch["attention_mask"].sum(1)] == sorted(stored, reverse=True)
    assert len(prepared.encoded["validation"]) == 64  # what the run keeps is not reordered

    _, ungrouped = eval_batches("trainer.group_by_length=false")
    assert [int(length) for batch in ungrouped for length in batch["attention_mask"].sum(1)] == stored
    assert padding_efficiency(grouped) > padding_efficiency(ungrouped) + 0.2


def in_length_order(dataset) -> list[int]:
    """Stored positions, longest first, ties in stored order: what evaluation_order promises."""
    lengths = [len(ids) for ids in dataset["input_ids"]]
    return sorted(range(len(lengths)), key=lambda index: -lengths[index])


@pytest.mark.parametrize("kind", ["token_classification", "sequence_classification"])
def test_metrics_and_every_prediction_are_the_same_in_length_order(kind, tiny_config, tiny_cls_config, tmp_path):
    """Trained until it tells examples apart (an untrained tiny classifier gives every text
    the same class); evaluated 4 at a time, the two orders batch different examples together
    and pad them to different widths."""
    make = tiny_config if kind == "token_classification" else tiny_cls_config
    cfg = make("method=full", "trainer.max_steps=30", "trainer.lr=1e-2", "trainer.batch_size=8", "trainer.eval_batch_size=4")
    prepared = prepare(cfg)
    trainer = make_trainer(cfg, prepared, tmp_path)
    trainer.train()
    stored = prepared.encoded["test"]
    sorted_split = evaluation_order(cfg.trainer, stored)
    order = in_length_order(stored)
    assert sorted_split["input_ids"] == [stored["input_ids"][index] for index in order]
    assert order != list(range(len(stored)))

    as_stored = trainer.predict(stored, metric_key_prefix="test")
    as_sorted = trainer.predict(sorted_split, metric_key_prefix="test")

    for row, index in enumerate(order):
        labels = as_stored.label_ids[index]
        kept = labels != IGNORED
        assert np.array_equal(as_sorted.label_ids[row][as_sorted.label_ids[row] != IGNORED], labels[kept])
        assert np.array_equal(as_sorted.predictions[row][as_sorted.label_ids[row] != IGNORED], as_stored.predictions[index][kept])
    predicted = np.asarray(as_stored.predictions)
    assert len(np.unique(predicted[as_stored.label_ids != IGNORED])) > 1, "every prediction alike: a weak check"
    # Not the loss: transformers averages per-batch token means, so it moves when batches change.
    scores = {key: value for key, value in as_stored.metrics.items() if not key.endswith(("_loss", "second", "_runtime"))}
    assert len(scores) >= 2 and scores == {key: as_sorted.metrics[key] for key in scores}


def test_generation_scores_are_the_same_in_length_order(tiny_gen_config, tmp_path):
    """Greedy decoding pads prompts on the left to the batch's longest; in length order the
    batches change, the generated answers and their scores must not."""
    cfg = tiny_gen_config("method=lora", "trainer.max_steps=20", "trainer.batch_size=8", "trainer.lr=2e-2",
                          "trainer.eval_batch_size=4")
    prepared = prepare(cfg)
    trainer = make_trainer(cfg, prepared, tmp_path)
    trainer.train()
    stored = prepared.encoded["test"]
    assert in_length_order(stored) != list(range(len(stored)))
    as_stored = prepared.task.evaluate(trainer, stored, "test")
    as_sorted = prepared.task.evaluate(trainer, evaluation_order(cfg.trainer, stored), "test")
    assert as_stored["test_exact_match"] > 0
    for name in ("test_exact_match", "test_rouge_l"):
        assert as_sorted[name] == as_stored[name]


def test_shuffled_grouped_batches_keep_each_batch_and_lose_the_long_to_short_sweep():
    """transformers' order: each mega-batch of 50 batches longest first, a sweep from long to
    short. Shuffled: the same batches (the same padding), in another order, the longest batch
    still first and the short last batch still last; the same order again for the same seed
    and epoch (a resumed run trains on the same batches)."""
    lengths = [random.Random(row).randint(1, 60) for row in range(4 * 50 * 8 + 5)]

    def batches(shuffle: bool, epoch: int = 0) -> list[list[int]]:
        sampler = EpochSeededLengthGroupedSampler(8, lengths, seed=3, shuffle_batches=shuffle)
        sampler.set_epoch(epoch)
        order = list(sampler)
        assert sorted(order) == list(range(len(lengths)))
        return [order[start : start + 8] for start in range(0, len(order), 8)]

    swept, shuffled = batches(False), batches(True)
    assert sorted(map(sorted, shuffled)) == sorted(map(sorted, swept))
    assert shuffled[0] == swept[0] and max(lengths[i] for i in swept[0]) == max(lengths)
    assert len(shuffled[-1]) == 5 and shuffled[-1] == swept[-1]

    def falls(order: list[list[int]]) -> int:
        """Steps, after the first batch and before the short last one, to a batch no wider."""
        widths = [max(lengths[i] for i in batch) for batch in order[1:-1]]
        return sum(wider >= narrower for wider, narrower in zip(widths, widths[1:]))

    assert falls(swept) > 0.9 * (len(swept) - 3)  # non-increasing within each mega-batch
    assert falls(shuffled) < 0.7 * (len(shuffled) - 3)
    assert batches(True) == shuffled and batches(True, epoch=1) != shuffled


def test_the_trainer_shuffles_grouped_batches_only_when_asked(tiny_config, tmp_path):
    def sampler(*overrides: str):
        cfg = tiny_config("method=head_only", *overrides)
        return make_trainer(cfg, prepare(cfg), tmp_path)._get_train_sampler()

    assert compose_config([]).trainer.shuffle_grouped_batches is False
    assert sampler().shuffle_batches is False
    assert sampler("trainer.shuffle_grouped_batches=true").shuffle_batches is True
