"""Slow: the real offline MiniLM on real data from ../shared/data, end to end."""

from __future__ import annotations

import json

import pytest

from peftlab.run import execute
from tests.conftest import compose_config, shared_data
from tests.helpers import MINILM_BODY_PARAMETERS

pytestmark = pytest.mark.slow


def test_lora_on_a_few_hundred_wnut17_sentences(tmp_path):
    cfg = compose_config(
        [
            "task=wnut17", f"task.data.path={shared_data('wnut17')}", "method=lora",
            "task.max_train_samples=300", "task.max_eval_samples=100",
            "trainer.epochs=2", "trainer.progress_bar=false", "trainer.logging_steps=5",
        ]
    )
    result = execute(cfg, tmp_path)
    saved = json.loads((tmp_path / "result.json").read_text())
    assert saved["status"] == "ok" and saved["dataset"].endswith("wnut17")
    assert result.params["base_total"] == MINILM_BODY_PARAMETERS
    assert result.params["head"] == 384 * 13 + 13  # 6 types x B/I + O
    losses = [point["train_loss"] for point in result.history if "train_loss" in point]
    assert len(losses) >= 4 and losses[-1] < losses[0] * 0.7
    assert 0.0 <= result.metrics["test"]["f1"] <= 1.0
    assert result.timing["train_tokens_per_second"] > 0


def test_the_demo_teaches_minilm_to_find_unseen_entities(tmp_path):
    """The README's first command with its defaults: held-out names must be found."""
    cfg = compose_config(["task=ner", "method=lora", "trainer.progress_bar=false"])
    result = execute(cfg, tmp_path)
    assert result.metrics["test"]["f1"] > 0.8
