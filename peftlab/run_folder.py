"""A run folder (`hydra.run.dir`, or one job's folder in a sweep) and what it holds: nothing yet,
an unfinished run (resume checkpoints in trainer/), a failed run, or a finished one
(result.json with status ok). `plan_start` decides, before anything loads, how a run begins
there, so a finished run is never overwritten by accident and a killed one is picked up where
its last checkpoint left it.

Resume checkpoints are transformers Trainer's own (`trainer/checkpoint-STEP`: what trains,
optimizer, scheduler, RNG states and the data position), written every `trainer.save_every`
steps. Trainer writes a checkpoint's files one after another and `trainer_state.json` last, so a
checkpoint counts once that file reads back; one cut short by a kill is skipped and removed."""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from peftlab.errors import ConfigError
from peftlab.result import RESULT_FILE, Result

log = logging.getLogger("peftlab")
TRAINER_DIR = "trainer"  # Trainer's output_dir inside a run folder: the resume checkpoints
CHECKPOINT_DIR = "checkpoint"  # the trained weights of a finished run, in the method's format
TRAINER_STATE = "trainer_state.json"  # written last into a Trainer checkpoint
HYDRA_CONFIG = Path(".hydra") / "config.yaml"
LISTED_RUNS = 3


@dataclass(frozen=True)
class Start:
    """How a run begins: from the beginning, from a resume checkpoint, or not at all, because
    the folder holds it finished (`finished` is its result)."""

    checkpoint: Path | None = None
    finished: Result | None = None


def plan_start(run_dir: Path, resume: bool, overwrite: bool, in_sweep: bool = False, main_process: bool = True) -> Start:
    """Where the run in `run_dir` starts, refusing what would lose or fake a result:

    - overwrite=true: whatever the folder holds is deleted (by the main process) and the run
      starts again;
    - resume=true: a finished run is skipped, an unfinished one continues from its last
      checkpoint; with nothing to continue a single run is refused (it never started here), a
      sweep's job starts (it is a job the interrupted sweep never reached);
    - neither: a folder holding a finished or an unfinished run is refused, naming both keys."""
    run_dir = Path(run_dir)
    if resume and overwrite:
        raise ConfigError("resume=true and overwrite=true contradict each other: keep one.")
    if overwrite:
        if main_process:
            clear(run_dir)
        return Start()
    result = read_result(run_dir)
    finished = result is not None and result.status == "ok"
    checkpoint = last_checkpoint(run_dir)
    if resume:
        if finished:
            return Start(finished=result)
        if checkpoint is not None:
            if main_process:
                _remove_incomplete_checkpoints(run_dir, checkpoint)
            return Start(checkpoint=checkpoint)
        if in_sweep:
            log.info("nothing to resume in %s: this job starts from the beginning", run_dir)
            return Start()
        raise ConfigError(_nothing_to_resume(run_dir, result))
    if finished:
        raise ConfigError(
            f"{run_dir} holds a finished run (its result.json says ok), which is not overwritten. Add overwrite=true "
            "to run it again, resume=true to keep it as it is, or choose another folder with hydra.run.dir=DIR."
        )
    if checkpoint is not None:
        raise ConfigError(
            f"{run_dir} holds an unfinished run (its last checkpoint: {checkpoint.name}). Add resume=true to continue "
            "it, or overwrite=true to start it again."
        )
    return Start()


def read_result(run_dir: Path) -> Result | None:
    """The folder's result.json; None when there is none, or one a peftlab older than atomic
    writes left truncated (that run did not finish)."""
    path = Path(run_dir) / RESULT_FILE
    if not path.is_file():
        return None
    try:
        return Result.read(path)
    except (ValueError, TypeError):
        return None


def last_checkpoint(run_dir: Path) -> Path | None:
    """The complete resume checkpoint of the latest step, if any."""
    complete = [path for path in _checkpoints(run_dir) if checkpoint_step(path) is not None]
    return max(complete, key=checkpoint_step, default=None)


def checkpoint_step(checkpoint: Path) -> int | None:
    """The optimizer step a checkpoint was taken after; None for one cut short (no readable
    trainer_state.json)."""
    try:
        return int(json.loads((checkpoint / TRAINER_STATE).read_text())["global_step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def clear(run_dir: Path) -> None:
    """Delete what a run wrote into its folder (result, trained weights, resume checkpoints);
    Hydra's own files (.hydra/, the log) stay."""
    (Path(run_dir) / RESULT_FILE).unlink(missing_ok=True)
    for name in (CHECKPOINT_DIR, TRAINER_DIR):
        shutil.rmtree(Path(run_dir) / name, ignore_errors=True)


def remove_resume_checkpoints(run_dir: Path) -> None:
    """Once result.json is written the resume checkpoints serve nothing (resume=true skips a
    finished run) and hold optimizer states several times the size of what trained."""
    shutil.rmtree(Path(run_dir) / TRAINER_DIR, ignore_errors=True)


def check_writable(run_dir: Path) -> None:
    """Refuse, before anything loads, a run folder this process cannot write into: the run would
    otherwise fail after training, when it saves."""
    run_dir = Path(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=run_dir):
            pass
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise ConfigError(
            f"cannot write into the run folder {run_dir} ({reason}). Choose a folder you can write to with "
            "hydra.run.dir=DIR (hydra.sweep.dir=DIR for a sweep), or fix its permissions."
        ) from error


def _checkpoints(run_dir: Path) -> list[Path]:
    folder = Path(run_dir) / TRAINER_DIR
    if not folder.is_dir():
        return []
    return [path for path in folder.glob(f"{PREFIX_CHECKPOINT_DIR}-*") if path.is_dir()]


def _remove_incomplete_checkpoints(run_dir: Path, resumed: Path) -> None:
    """A checkpoint cut short by the kill would otherwise count towards keep_checkpoints."""
    for path in _checkpoints(run_dir):
        if path != resumed and checkpoint_step(path) is None:
            shutil.rmtree(path, ignore_errors=True)


def _nothing_to_resume(run_dir: Path, result: Result | None) -> str:
    if result is not None:
        return (
            f"resume=true, but the run in {run_dir} failed before its first checkpoint ({_gist(result.error)}). "
            "Run it again without resume=true."
        )
    unfinished = _unfinished_runs_like(run_dir)
    if unfinished:
        listed = " or ".join(f"hydra.run.dir={path}" for path in unfinished)
        hint = f"Unfinished runs of this same config: add {listed}."
    else:
        hint = "No unfinished run of this config is beside it; run without resume=true to start one."
    return (
        f"resume=true, but {run_dir} holds no run to resume: this run never started here, or stopped before its "
        f"first checkpoint (trainer.save_every steps). To resume a run, name its folder: hydra.run.dir=FOLDER. {hint}"
    )


def _unfinished_runs_like(run_dir: Path) -> list[Path]:
    """Sibling run folders (the timestamped folders of outputs/runs/) with a resume checkpoint,
    no finished result and the same config as this one but for resume and overwrite: what a
    user who forgot hydra.run.dir meant to resume. Newest first."""
    mine = _config_without_start_keys(run_dir)
    if mine is None or not run_dir.parent.is_dir():
        return []
    found = []
    for sibling in run_dir.parent.iterdir():
        if sibling == run_dir or not sibling.is_dir() or last_checkpoint(sibling) is None:
            continue
        result = read_result(sibling)
        if (result is None or result.status != "ok") and _config_without_start_keys(sibling) == mine:
            found.append(sibling)
    return sorted(found, key=lambda path: path.stat().st_mtime, reverse=True)[:LISTED_RUNS]


def _config_without_start_keys(run_dir: Path) -> dict | None:
    from omegaconf import OmegaConf

    path = run_dir / HYDRA_CONFIG
    if not path.is_file():
        return None
    config = OmegaConf.to_container(OmegaConf.load(path))
    for key in ("resume", "overwrite"):
        config.pop(key, None)
    return config


def _gist(text: str | None) -> str:
    """An error in one line: a peftlab message's first, a traceback's last (the exception)."""
    lines = (text or "no error recorded").strip().splitlines()
    return lines[-1] if len(lines) > 1 else lines[0]

