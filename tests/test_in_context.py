"""method=in_context on the tiny Llama: nothing trains, every prompt is K demonstrations drawn
from the training split (seeded by task.data_seed, not seed) and then the example's own, a
prompt that no longer fits is refused, and a run writes the result every method writes."""

from __future__ import annotations

import json
import re

import pytest

import peftlab.tasks
from peftlab.errors import ConfigError, Unsupported
from peftlab.export import export
from peftlab.methods.in_context import DEMONSTRATIONS_FILE
from peftlab.run import execute, prepare
from tests.conftest import GEN_PAIRS, gen_rows

# Three disjoint splits, so a demonstration can be traced to the one it came from.
SPLITS = {"train": gen_rows(GEN_PAIRS[:8]), "validation": gen_rows(GEN_PAIRS[8:12]), "test": gen_rows(GEN_PAIRS[12:])}
EOS = "</s>"


@pytest.fixture
def in_context(tiny_gen_config, monkeypatch):
    """compose(more overrides) -> a method=in_context config on the three disjoint splits."""
    monkeypatch.setattr(peftlab.tasks, "load_splits", lambda data: SPLITS)
    return lambda *overrides: tiny_gen_config("method=in_context", "task.max_length=64", *overrides)


def shown_prompts(prepared, split: str) -> list[list[list[str]]]:
    """Each prompt of the split as the model sees it, in word pieces cut at each EOS: the
    demonstrations (prompt and completion words), then the example's own prompt."""
    tokenizer = prepared.tokenizer
    prompts = []
    for example in prepared.encoded[split]:
        words = tokenizer.convert_ids_to_tokens(example["input_ids"][: example["prompt_length"]])
        parts, part = [], []
        for word in words:
            if word == EOS:
                parts.append(part)
                part = []
            else:
                part.append(word)
        prompts.append([*parts, part])
    return prompts


def as_words(rows: list[dict]) -> list[list[str]]:
    return [f"{row['prompt']} {row['completion']}".split() for row in rows]


def test_nothing_trains_and_each_prompt_is_k_training_demonstrations_then_its_own(in_context):
    prepared = prepare(in_context("method.shots=3"))
    assert not prepared.method.trains
    assert prepared.params.trainable == prepared.params.method == prepared.params.head == 0
    assert not any(parameter.requires_grad for parameter in prepared.model.parameters())

    train, held_out = as_words(SPLITS["train"]), as_words(SPLITS["validation"] + SPLITS["test"])
    for split in ("validation", "test"):
        for shown, row in zip(shown_prompts(prepared, split), SPLITS[split], strict=True):
            *demonstrations, own = shown
            assert len(demonstrations) == 3 and len({tuple(d) for d in demonstrations}) == 3
            assert all(demonstration in train for demonstration in demonstrations)
            assert not any(demonstration in held_out for demonstration in demonstrations)
            assert own == row["prompt"].split()
    # one set for the whole run: every prompt starts with the same demonstrations
    assert len({str(shown[:-1]) for split in ("validation", "test") for shown in shown_prompts(prepared, split)}) == 1


def test_the_training_seed_leaves_the_demonstrations_alone_and_the_data_seed_draws_others(in_context):
    def demonstrations(*overrides: str):
        return prepare(in_context("method.shots=3", *overrides)).method.input_layout.demonstrations

    drawn = demonstrations("seed=0", "task.data_seed=0")
    assert demonstrations("seed=1", "task.data_seed=0") == drawn
    assert demonstrations("seed=0", "task.data_seed=1") != drawn


def test_zero_shot_prompts_are_the_tasks_own(in_context, tiny_gen_config):
    zero_shot = prepare(in_context("method.shots=0"))
    assert zero_shot.params.trainable == 0
    plain = prepare(tiny_gen_config("method=lora", "task.max_length=64"))
    for split in ("validation", "test"):
        assert zero_shot.encoded[split]["input_ids"] == plain.encoded[split]["input_ids"]


def test_a_prompt_that_no_longer_fits_max_length_is_refused_with_the_numbers(in_context):
    # 4 demonstrations of 6-7 words and an EOS each, then a 4-6 word prompt: 35 tokens at least
    numbers = r"with 4 demonstrations \(method.shots\).*task.max_length=24.*Raise task.max_length to at least (\d+)"
    with pytest.raises(ConfigError, match=numbers) as refused:
        prepare(in_context("method.shots=4", "task.max_length=24"))
    needed = int(re.search(numbers, str(refused.value)).group(1))
    assert needed >= 35
    assert prepare(in_context("method.shots=4", f"task.max_length={needed}")).params.trainable == 0  # and it fits


def test_more_shots_than_training_examples_are_refused(in_context):
    with pytest.raises(ConfigError, match=r"method.shots=9 .* training split of 8 examples"):
        prepare(in_context("method.shots=9"))


def test_tasks_of_other_kinds_are_refused_before_anything_loads(tiny_config, tiny_cls_config):
    for compose in (tiny_config, tiny_cls_config):
        cfg = compose("method=in_context", "backbone.pretrained=/nowhere/no_model")  # never loaded
        refusal = rf"method=in_context cannot run task={cfg.task.name} \(task.kind=.*use a generation task"
        with pytest.raises(ConfigError, match=refusal):
            prepare(cfg)


def test_an_encoder_backbone_is_refused_naming_it(in_context, tiny_backbone):
    with pytest.raises(ConfigError, match=r"backbone=smollm2 is an encoder \(bert\).*decoder backbone"):
        prepare(in_context(f"backbone.pretrained={tiny_backbone}"))


def test_a_run_evaluates_only_and_writes_what_every_run_writes(in_context, tmp_path):
    run_dir = tmp_path / "run"
    execute(in_context("method.shots=2"), run_dir)
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "ok" and result["method"] == "in_context"
    assert result["params"]["trainable"] == result["params"]["method"] == result["params"]["head"] == 0
    assert result["timing"]["train_seconds"] == 0.0 and result["timing"]["train_samples_per_second"] is None
    assert result["timing"]["eval_seconds"] > 0
    assert result["history"] == [] and result["selection"] == {}
    for split in ("validation", "test"):
        assert set(result["metrics"][split]) == {"loss", "exact_match", "rouge_l"}
    assert result["data_sizes"] == {"train": 8, "validation": 4, "test": 4}
    assert any("trains nothing: the model was evaluated as loaded" in note for note in result["notes"])
    saved = json.loads((run_dir / "checkpoint" / DEMONSTRATIONS_FILE).read_text())["demonstrations"]
    assert len(saved) == 2 and all(pair in SPLITS["train"] for pair in saved)

    with pytest.raises(Unsupported, match="nothing to merge"):
        export(run_dir, tmp_path / "merged", adapter=False)
