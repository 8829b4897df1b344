"""Resume and reproducibility on the tiny model: a run killed mid-training and started again
with resume=true ends with the metrics and weights of the run that was never interrupted, bit
for bit on CPU; the same config twice gives the same result.json metrics; what a run folder
holds decides how a run starts there (run_folder.plan_start)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

import peftlab.run
from peftlab.errors import ConfigError
from peftlab.result import Result
from peftlab.run import execute
from peftlab.run_folder import TRAINER_DIR, begin, last_checkpoint, plan_start

ROOT = Path(__file__).resolve().parents[1]
STEPS = 12  # 16 sentences at batch 4: three epochs of four steps


class Killed(BaseException):
    """Ends a run the way SIGKILL does: not an Exception, so no failed result.json is written."""


class KillAfterStep(TrainerCallback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs) -> None:
        if state.global_step == self.step:
            raise Killed


@contextmanager
def killed_after(step: int) -> Iterator[None]:
    """Runs started inside stop dead after that optimizer step, leaving what a kill leaves."""
    build = peftlab.run.make_trainer

    def make_trainer_that_dies(cfg, prepared, output_dir):
        trainer = build(cfg, prepared, output_dir)
        trainer.add_callback(KillAfterStep(step))
        return trainer

    with pytest.MonkeyPatch.context() as patch, pytest.raises(Killed):
        patch.setattr(peftlab.run, "make_trainer", make_trainer_that_dies)
        yield


def trained_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return {
        f"{path.name}:{name}": tensor
        for path in sorted((run_dir / "checkpoint").glob("*.safetensors"))
        for name, tensor in load_file(path).items()
    }


def same_weights(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> bool:
    return first.keys() == second.keys() and all(torch.equal(first[name], second[name]) for name in first)


# save_every=3 leaves the kill after step 7 to resume mid-epoch (step 6); save_every=4 at an
# epoch boundary (step 4), where Trainer restores the RNG states at another point.
@pytest.mark.parametrize(
    "method, save_every, kill_step",
    [("lora", 3, 7), ("adapter", 3, 7), ("prompt_tuning", 3, 7), ("head_only", 4, 6)],
)
def test_a_killed_run_resumed_ends_bit_identical_to_one_never_interrupted(
    method, save_every, kill_step, tiny_config, tmp_path
):
    overrides = [f"method={method}", f"trainer.max_steps={STEPS}", f"trainer.save_every={save_every}", "trainer.lr=1e-2",
                 "trainer.logging_steps=1"]
    whole = execute(tiny_config(*overrides), tmp_path / "whole")

    with killed_after(kill_step):
        execute(tiny_config(*overrides), tmp_path / "killed")
    assert not (tmp_path / "killed" / "result.json").exists()
    assert last_checkpoint(tmp_path / "killed").name == f"checkpoint-{kill_step // save_every * save_every}"

    resumed = execute(tiny_config(*overrides, "resume=true"), tmp_path / "killed")
    assert resumed.metrics == whole.metrics
    assert resumed.history == whole.history  # every step's loss: the same batches, dropout and updates
    assert same_weights(trained_weights(tmp_path / "killed"), trained_weights(tmp_path / "whole"))
    assert any("resumed after step" in note for note in resumed.notes)
    assert not (tmp_path / "killed" / TRAINER_DIR).exists(), "resume checkpoints outlived the finished run"


@pytest.mark.parametrize("method", ["head_only", "adapter", "lora"])
def test_a_resume_checkpoint_holds_only_what_trains(method, tiny_config, tmp_path):
    cfg = tiny_config(f"method={method}", "trainer.max_steps=4", "trainer.save_every=2")
    with killed_after(3):
        execute(cfg, tmp_path)
    checkpoint = last_checkpoint(tmp_path)
    trainable = {name: p.numel() for name, p in peftlab.run.prepare(cfg).model.named_parameters() if p.requires_grad}
    weights = {path.name: load_file(path) for path in checkpoint.glob("*.safetensors")}
    assert len(weights) == 1, weights.keys()
    (saved,) = weights.values()
    if method == "lora":  # peft's adapter file: its own key names, the adapter and the head only
        assert all("lora_" in name or "classifier" in name for name in saved)
    else:
        assert set(saved) == set(trainable)
    assert sum(tensor.numel() for tensor in saved.values()) == sum(trainable.values())


def test_a_resumed_checkpoint_of_another_method_is_refused_naming_the_fix(tiny_config, tmp_path):
    with killed_after(3):
        execute(tiny_config("method=head_only", "trainer.max_steps=4", "trainer.save_every=2"), tmp_path)
    with pytest.raises(ConfigError, match="does not fit this run's model.*overwrite=true"):
        execute(tiny_config("method=bitfit", "trainer.max_steps=4", "trainer.save_every=2", "resume=true"), tmp_path)


@pytest.mark.parametrize("method", ["lora", "adapter", "prompt_tuning"])
def test_the_same_config_twice_gives_identical_metrics(method, tiny_config, tmp_path):
    overrides = [f"method={method}", "trainer.max_steps=8", "trainer.lr=1e-2", "trainer.logging_steps=1"]
    first = execute(tiny_config(*overrides), tmp_path / "first")
    second = execute(tiny_config(*overrides), tmp_path / "second")
    assert first.metrics == second.metrics and first.history == second.history
    assert same_weights(trained_weights(tmp_path / "first"), trained_weights(tmp_path / "second"))
    other_seed = execute(tiny_config(*overrides, "seed=1"), tmp_path / "other_seed")
    assert other_seed.history != first.history, "the seed changes nothing: the comparison above proves nothing"


# --- what a run folder holds decides how a run starts -----------------------------------------


def finished_run(run_dir: Path, status: str = "ok") -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    Result(status=status, task="ner", dataset="d", method="lora", backbone="b", quant="none", seed=0,
           error=None if status == "ok" else "ValueError: boom").write(run_dir)
    return run_dir


def checkpoint_at(run_dir: Path, step: int, complete: bool = True) -> Path:
    folder = run_dir / TRAINER_DIR / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    if complete:
        (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return folder


def test_a_finished_run_is_not_overwritten_resume_skips_it_overwrite_clears_it(tmp_path):
    finished_run(tmp_path)
    with pytest.raises(ConfigError, match="finished run.*overwrite=true.*resume=true"):
        plan_start(tmp_path, resume=False, overwrite=False)
    assert plan_start(tmp_path, resume=True, overwrite=False).finished.status == "ok"
    (tmp_path / "checkpoint").mkdir()
    checkpoint_at(tmp_path, 4)
    start = plan_start(tmp_path, resume=False, overwrite=True)
    assert (tmp_path / "result.json").exists(), "planning changed the folder"
    begin(tmp_path, start)
    assert sorted(path.name for path in tmp_path.iterdir()) == []


def test_an_unfinished_run_resumes_from_its_last_complete_checkpoint_and_needs_a_word_otherwise(tmp_path):
    checkpoint_at(tmp_path, 4)
    checkpoint_at(tmp_path, 8)
    cut_short = checkpoint_at(tmp_path, 12, complete=False)  # the kill came while it was written
    with pytest.raises(ConfigError, match="unfinished run.*checkpoint-8.*resume=true.*overwrite=true"):
        plan_start(tmp_path, resume=False, overwrite=False)
    start = plan_start(tmp_path, resume=True, overwrite=False)
    assert start.checkpoint.name == "checkpoint-8"
    begin(tmp_path, start)
    assert not cut_short.exists() and start.checkpoint.exists()


def test_resume_of_a_run_that_never_started_is_refused_alone_and_started_in_a_sweep(tmp_path):
    with pytest.raises(ConfigError, match="holds no run to resume.*hydra.run.dir=FOLDER"):
        plan_start(tmp_path, resume=True, overwrite=False)
    assert plan_start(tmp_path, resume=True, overwrite=False, in_sweep=True) == plan_start(tmp_path, False, False)
    finished_run(tmp_path, status="failed")
    with pytest.raises(ConfigError, match="failed before its first checkpoint \\(ValueError: boom\\)"):
        plan_start(tmp_path, resume=True, overwrite=False)
    assert plan_start(tmp_path, resume=False, overwrite=False).checkpoint is None  # a failed run may run again


def test_resume_and_overwrite_together_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="contradict"):
        plan_start(tmp_path, resume=True, overwrite=True)


# --- through the command line: SIGKILL, then the same command with resume=true -----------------


def peftlab_command(*overrides: str) -> list[str]:
    return [sys.executable, "-m", "peftlab", *overrides]


def cli_env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONPATH": str(ROOT)}


def test_the_cli_resumes_a_run_killed_by_sigkill_or_sigterm(tiny_backbone, tiny_ner_dir, tmp_path):
    command = [
        "task=conll2003", f"task.data.path={tiny_ner_dir}", f"backbone.pretrained={tiny_backbone}", "method=lora",
        "trainer=smoke", "trainer.max_steps=100", "trainer.save_every=10",
    ]
    whole = run_cli(*command, f"hydra.run.dir={tmp_path / 'whole'}", cwd=tmp_path)
    assert whole.returncode == 0, whole.stderr
    first = Result.read(tmp_path / "whole" / "result.json")
    for signal_number in (signal.SIGKILL, signal.SIGTERM):
        killed_dir = tmp_path / signal_number.name
        process = subprocess.Popen(peftlab_command(*command, f"hydra.run.dir={killed_dir}"), cwd=tmp_path,
                                   env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 300
        while last_checkpoint(killed_dir) is None and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        process.send_signal(signal_number)
        process.wait(timeout=60)
        assert not (killed_dir / "result.json").exists(), "the run finished before the signal: nothing was tested"

        resumed = run_cli(*command, f"hydra.run.dir={killed_dir}", "resume=true", cwd=tmp_path)
        assert resumed.returncode == 0, resumed.stderr
        second = Result.read(killed_dir / "result.json")
        assert second.metrics == first.metrics and second.history == first.history, signal_number.name
        assert same_weights(trained_weights(killed_dir), trained_weights(tmp_path / "whole")), signal_number.name


def run_cli(*overrides: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(peftlab_command(*overrides), cwd=cwd, env=cli_env(), capture_output=True, text=True, timeout=600)


def test_a_sweep_rerun_with_resume_skips_finished_jobs_resumes_unfinished_and_starts_the_rest(
    tiny_backbone, tiny_ner_dir, tmp_path
):
    sweep_dir = tmp_path / "sweep"
    command = [
        "-m", "task=conll2003", f"task.data.path={tiny_ner_dir}", f"backbone.pretrained={tiny_backbone}",
        "method=lora", "trainer=smoke", "trainer.max_steps=60", "trainer.save_every=5", f"hydra.sweep.dir={sweep_dir}",
    ]
    job = {seed: sweep_dir / f"{seed}_conll2003_lora_s{seed}" for seed in range(3)}
    process = subprocess.Popen(peftlab_command(*command, "seed=0,1"), cwd=tmp_path, env=cli_env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while last_checkpoint(job[1]) is None and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.kill()
    process.wait(timeout=60)
    assert (job[0] / "result.json").exists() and not (job[1] / "result.json").exists()
    finished_bytes = (job[0] / "result.json").read_bytes()

    rerun = run_cli(*command, "seed=0,1,2", "resume=true", cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    assert (job[0] / "result.json").read_bytes() == finished_bytes
    resumed, started = (Result.read(job[seed] / "result.json") for seed in (1, 2))
    assert resumed.status == started.status == "ok"
    assert any("resumed after step" in note for note in resumed.notes)
    assert not any("resumed" in note for note in started.notes)
    assert (sweep_dir / "report.md").exists()


def test_save_every_zero_writes_no_resume_checkpoint_and_keep_checkpoints_bounds_them(tiny_config, tmp_path):
    from peftlab.run import training_arguments

    assert training_arguments(tiny_config("trainer.save_every=0"), tmp_path).save_strategy == "no"
    arguments = training_arguments(tiny_config("trainer.save_every=7", "trainer.keep_checkpoints=3"), tmp_path)
    assert (arguments.save_strategy, arguments.save_steps, arguments.save_total_limit) == ("steps", 7, 3)
