"""Guard rails of a run: a loss that turns nan stops it naming the step, before the optimizer
spreads the nan; result.json and the trained checkpoint are replaced whole or not at all; a
run folder that cannot be written is refused before anything loads."""

from __future__ import annotations

import json
import os
import stat

import pytest
import torch
from transformers import TrainerCallback

import peftlab.run
from peftlab import atomic
from peftlab.errors import ConfigError
from peftlab.guards import TrainingDiverged
from peftlab.run import execute


class PoisonWeightsAfterStep(TrainerCallback):
    """From the step after `step` on, the loss is nan: a trained weight turned nan."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, model=None, **kwargs) -> None:
        if state.global_step == self.step:
            with torch.no_grad():
                next(p for p in model.parameters() if p.requires_grad).fill_(float("nan"))


def test_a_nan_loss_stops_the_run_at_its_step_with_a_failed_result_and_no_checkpoint(tiny_config, tmp_path, monkeypatch):
    build = peftlab.run.make_trainer
    seen = {}

    def make_trainer(cfg, prepared, output_dir):
        trainer = build(cfg, prepared, output_dir)
        trainer.add_callback(PoisonWeightsAfterStep(2))
        seen["trainer"] = trainer
        return trainer

    monkeypatch.setattr(peftlab.run, "make_trainer", make_trainer)
    with pytest.raises(TrainingDiverged, match="training stopped at step 3: .* nan.*trainer.lr") as raised:
        execute(tiny_config("method=lora", "trainer.max_steps=8", "trainer.save_every=2"), tmp_path)
    assert seen["trainer"].state.global_step == 2, "it trained on past the nan step"
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["status"] == "failed" and result["error"] == str(raised.value)
    assert not (tmp_path / "checkpoint").exists()


def test_a_learning_rate_that_blows_up_is_stopped_on_a_real_run(tiny_config, tmp_path):
    with pytest.raises(TrainingDiverged, match="training stopped at step \\d+"):
        execute(tiny_config("method=full", "trainer.max_steps=30", "trainer.lr=1e30", "trainer.warmup=0"), tmp_path)


def test_result_write_replaces_the_file_whole_or_not_at_all(tmp_path):
    target = tmp_path / "result.json"
    atomic.write_text(target, '{"status": "ok"}\n')
    with pytest.raises(TypeError):
        atomic.write_text(target, None)  # fails while writing: the old file must survive
    assert json.loads(target.read_text()) == {"status": "ok"}
    assert sorted(path.name for path in tmp_path.iterdir()) == ["result.json"]


def test_a_checkpoint_folder_is_replaced_whole_or_not_at_all(tmp_path):
    target = tmp_path / "checkpoint"
    with atomic.folder(target) as staging:
        (staging / "weights").write_text("old")
    with pytest.raises(RuntimeError), atomic.folder(target) as staging:
        (staging / "weights").write_text("half")
        raise RuntimeError("killed while saving")
    assert (target / "weights").read_text() == "old"
    with atomic.folder(target) as staging:
        (staging / "weights").write_text("new")
    assert (target / "weights").read_text() == "new"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["checkpoint"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_an_unwritable_run_folder_is_refused_before_anything_loads(tiny_config, tmp_path):
    folder = tmp_path / "read_only"
    folder.mkdir()
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        with pytest.raises(ConfigError, match="cannot write into the run folder .*read_only.*hydra.run.dir=DIR"):
            execute(tiny_config("method=lora", "backbone.pretrained=/nowhere"), folder)
    finally:
        folder.chmod(stat.S_IRWXU)
    assert list(folder.iterdir()) == []


def test_a_run_folder_below_a_file_is_refused_before_anything_loads(tiny_config, tmp_path):
    (tmp_path / "results").write_text("a file where the run folder's parent should be")
    with pytest.raises(ConfigError, match="results/run cannot be created: .*results is a file, where a folder is expected.*hydra.run.dir=DIR"):
        execute(tiny_config("method=lora", "backbone.pretrained=/nowhere"), tmp_path / "results" / "run")
