"""benchmarks/resume_check.py, the real-data kill/resume check: its comparison finds a difference
wherever there is one (tests/test_resume.py runs the kill and resume themselves on tiny models).
No model, no data."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch

from peftlab.result import Result
from tests.helpers import result

ROOT = Path(__file__).resolve().parents[1]


def resume_check():
    spec = importlib.util.spec_from_file_location("resume_check", ROOT / "benchmarks" / "resume_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


def run_result(test_f1: float, losses: list[float]) -> Result:
    history = [{"step": 20 * (number + 1), "epoch": 0.5 * (number + 1), "train_loss": loss}
               for number, loss in enumerate(losses)]
    return Result.from_json(result("lora", 0, test_f1, validation_f1=0.78, history=history))


def test_equal_runs_compare_equal_on_every_row():
    script = resume_check()
    rows = script.compare_results(run_result(0.8, [1.5, 0.9]), run_result(0.8, [1.5, 0.9]))
    assert [row.quantity for row in rows] == [
        "validation f1", "validation loss", "test f1", "test loss", "train loss at step 20", "train loss at step 40",
    ]
    assert all(row.same for row in rows)


def test_a_difference_in_the_last_digits_or_a_missing_step_is_found():
    script = resume_check()
    rows = script.compare_results(run_result(0.8, [1.5, 0.9]), run_result(0.8 + 1e-15, [1.5]))
    differing = [row.quantity for row in rows if not row.same]
    assert differing == ["test f1", "train loss at step 40"]


def test_weights_must_be_bit_identical_and_the_largest_difference_is_said():
    script = resume_check()
    weights = {"adapter:lora_A": torch.ones(2, 3), "adapter:classifier": torch.zeros(4)}
    assert script.compare_weights(weights, {name: tensor.clone() for name, tensor in weights.items()}).same
    nudged = {**weights, "adapter:lora_A": weights["adapter:lora_A"] + 0.25}
    row = script.compare_weights(weights, nudged)
    assert not row.same and "1 differ, max |Δ| 0.25" in row.resumed
    assert not script.compare_weights(weights, {"adapter:lora_A": weights["adapter:lora_A"]}).same


def test_the_loss_lines_trainer_prints_are_counted():
    log = "loading\n{'loss': '1.23', 'grad_norm': '2.1', 'learning_rate': '1e-3', 'epoch': '0.5'}\n" * 3
    assert resume_check().logged_steps(log + "{'train_runtime': '12.0'}\n") == 3
