"""Model selection on validation (trainer.select_best, trainer.early_stopping_patience): the run
scores the weights of its best validation step, stops when validation stops improving, and
result.json says which step it kept and why."""

from __future__ import annotations

import pytest

from peftlab.config import check_config
from peftlab.errors import ConfigError
from peftlab.run import execute
from tests.conftest import compose_config

# Full fine-tuning of the tiny model at a learning rate far too high for it: entity F1 peaks at
# the first step, then every token is predicted O (F1 0) for the rest of the budget.
TOO_HIGH = (
    "method=full", "trainer.lr=0.01", "trainer.max_steps=8", "trainer.eval_strategy=steps", "trainer.eval_steps=1",
)
PROTOCOL_METHODS = ["full", "lora", "adapter", "bitfit", "ia3", "prompt_tuning"]


def validation_curve(result) -> dict[int, dict[str, float]]:
    return {point["step"]: point for point in result.history if "validation_f1" in point}


def first_best_step(curve: dict[int, dict[str, float]]) -> int:
    return max(curve, key=lambda step: (curve[step]["validation_f1"], -step))


def test_the_best_validation_step_is_kept_when_the_last_is_worse(tiny_config, tmp_path):
    result = execute(tiny_config(*TOO_HIGH, "trainer.select_best=true"), tmp_path / "best")
    curve = validation_curve(result)
    best = first_best_step(curve)
    assert curve[best]["validation_f1"] > curve[8]["validation_f1"], "the case needs a last step worse than the best"
    selection = result.selection
    assert (selection.metric, selection.best_step, selection.selected_step) == ("f1", best, best)
    assert (selection.last_step, selection.budget_steps, selection.early_stopped) == (8, 8, False)
    assert selection.best_value == pytest.approx(curve[best]["validation_f1"])
    # validation and test are scored on the restored weights: the same loss as at the best step
    assert result.metrics["validation"]["loss"] == pytest.approx(curve[best]["validation_loss"], rel=1e-5)
    assert result.metrics["validation"]["f1"] == pytest.approx(curve[best]["validation_f1"])
    assert result.notes == []
    assert not list((tmp_path / "best" / "trainer").glob("checkpoint-*"))  # Trainer's working copies are gone

    last = execute(tiny_config(*TOO_HIGH), tmp_path / "last")
    assert last.selection is None
    assert last.metrics["validation"]["loss"] == pytest.approx(validation_curve(last)[8]["validation_loss"], rel=1e-5)


def test_early_stopping_stops_after_patience_evaluations_without_a_better_score(tiny_config, tmp_path):
    result = execute(tiny_config(*TOO_HIGH, "trainer.early_stopping_patience=2"), tmp_path)
    curve = validation_curve(result)
    best = first_best_step(curve)
    assert sorted(curve) == list(range(1, best + 3))  # the best, then two evaluations that did not beat it
    selection = result.selection
    assert (selection.last_step, selection.budget_steps, selection.early_stopped) == (best + 2, 8, True)
    assert selection.selected_step == best + 2  # without select_best the run keeps its last weights
    assert result.metrics["validation"]["loss"] == pytest.approx(curve[best + 2]["validation_loss"], rel=1e-5)


@pytest.mark.parametrize("method", PROTOCOL_METHODS)
def test_every_protocol_method_gets_its_best_checkpoint_back(tiny_config, tmp_path, method):
    """Trainer restores a peft adapter, a prompt and a plain state dict each its own way, and
    only warns when it cannot (prompt learning: peft issue 2256)."""
    result = execute(
        tiny_config(f"method={method}", "trainer.max_steps=6", "trainer.eval_strategy=steps", "trainer.eval_steps=2",
                    "trainer.select_best=true"),
        tmp_path,
    )
    curve = validation_curve(result)
    best = result.selection.selected_step
    assert best == first_best_step(curve)
    assert result.metrics["validation"]["loss"] == pytest.approx(curve[best]["validation_loss"], rel=1e-5)
    assert result.notes == []


@pytest.mark.parametrize("setting", ["trainer.select_best=true", "trainer.early_stopping_patience=3"])
def test_choosing_on_validation_without_validation_during_training_is_refused(setting):
    with pytest.raises(ConfigError, match="trainer.eval_strategy='no' takes none: set trainer.eval_strategy=epoch"):
        check_config(compose_config([setting, "trainer.eval_strategy=no"]))


def test_a_patience_below_one_is_refused():
    with pytest.raises(ConfigError, match="trainer.early_stopping_patience=0 must be >= 1"):
        check_config(compose_config(["trainer.early_stopping_patience=0"]))


def test_a_generation_task_chooses_by_validation_loss(tiny_gen_config, tmp_path):
    """Trainer's evaluation during training scores a generation task's loss only (its primary
    metric needs generating): the loss chooses, lower being better."""
    result = execute(
        tiny_gen_config("method=lora", "trainer.lr=10.0", "trainer.max_steps=3", "trainer.eval_strategy=steps",
                        "trainer.eval_steps=1", "trainer.select_best=true"),
        tmp_path,
    )
    losses = {point["step"]: point["validation_loss"] for point in result.history if "validation_loss" in point}
    best = min(losses, key=lambda step: (losses[step], step))
    assert losses[best] < losses[max(losses)], ("the case needs a last step worse than the best", losses)
    assert (result.selection.metric, result.selection.selected_step) == ("loss", best)
    assert result.selection.best_value == pytest.approx(losses[best])
    assert result.metrics["validation"]["loss"] == pytest.approx(losses[best], rel=1e-4)
    assert result.notes == []
