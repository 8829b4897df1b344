"""Slow: the real offline MiniLM with LoRA on a few hundred examples of the real SST-2 and
Banking77 files in ../shared/data, end to end. Short runs, so the bar is "clearly above chance",
not the published numbers."""

from __future__ import annotations

import json

import pytest

from peftlab.run import execute
from tests.conftest import compose_config, shared_data
from tests.helpers import MINILM_BODY_PARAMETERS

MINILM_POOLER = 384 * 384 + 384

pytestmark = pytest.mark.slow


def run_lora(tmp_path, task: str, *overrides: str):
    cfg = compose_config(
        [
            f"task={task}", f"task.data.path={shared_data(task)}", "method=lora", "task.max_length=64",
            "trainer.eval_strategy=no", "trainer.progress_bar=false", "trainer.logging_steps=10", *overrides,
        ]
    )
    result = execute(cfg, tmp_path)
    assert json.loads((tmp_path / "result.json").read_text())["status"] == "ok"
    assert result.primary_metric == "accuracy" and result.params.base_total == MINILM_BODY_PARAMETERS
    return result


def test_lora_on_a_few_hundred_sst2_sentences_beats_chance(tmp_path):
    result = run_lora(
        tmp_path, "sst2", "task.max_train_samples=256", "task.max_eval_samples=200", "trainer.epochs=3", "trainer.lr=2e-3",
    )
    assert result.params.head == MINILM_POOLER + 384 * 2 + 2
    assert result.notes == []
    assert result.metrics["test"]["accuracy"] > 0.6  # chance: 0.5


def test_lora_on_a_few_hundred_banking77_questions_beats_chance(tmp_path):
    result = run_lora(
        tmp_path, "banking77", "task.max_train_samples=400", "task.max_eval_samples=200",
        "trainer.epochs=3", "trainer.lr=2e-3",
    )
    assert result.params.head == MINILM_POOLER + 384 * 77 + 77  # all 77 intents from categories.json
    assert any("held out as validation" in note for note in result.notes)
    assert result.metrics["test"]["accuracy"] > 0.1  # chance: 1/77
