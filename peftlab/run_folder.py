"""A run folder (`hydra.run.dir`, or one job's folder in a sweep) and what it holds: nothing yet,
an unfinished run (resume checkpoints in trainer/), a failed run, or a finished one
(result.json with status ok). `plan_start` decides, before anything loads, how a run begins
there, so a finished run is never overwritten by accident and a killed one is picked up where
its last checkpoint left it.

Resume checkpoints are transformers Trainer's own (`trainer/checkpoint-STEP`: what trains,
optimizer, scheduler, RNG states and the data position), written every `trainer.save_every`
steps. Trainer writes a checkpoint's files one after another and `trainer_state.json` last, so a
checkpoint counts once that file reads back; one cut short by a kill is skipped and removed.

Hydra creates the run folder and writes `.hydra/` into it before peftlab's code runs, so the
command line checks the folder earlier, in a Hydra callback (`CheckRunFolder`). This module is
imported when Hydra starts: it imports nothing heavy."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from peftlab.errors import ConfigError, PeftlabError, exit_with
from peftlab.result import RESULT_FILE, Result

log = logging.getLogger("peftlab")
TRAINER_DIR = "trainer"  # Trainer's output_dir inside a run folder: the resume checkpoints
CHECKPOINT_PREFIX = "checkpoint-"  # transformers.trainer_utils.PREFIX_CHECKPOINT_DIR, then the step
CHECKPOINT_DIR = "checkpoint"  # the trained weights of a finished run, in the method's format
TRAINER_STATE = "trainer_state.json"  # written last into a Trainer checkpoint
HYDRA_CONFIG = Path(".hydra") / "config.yaml"
START_KEYS = ("resume", "overwrite")  # how a run starts, not what it computes
LISTED_RUNS = 3


@dataclass(frozen=True)
class Start:
    """How a run begins: from the beginning (after deleting what the folder holds, with
    `clear`), from a resume checkpoint, or not at all, because the folder holds it finished
    (`finished` is its result)."""

    clear: bool = False
    checkpoint: Path | None = None
    finished: Result | None = None


def plan_start(run_dir: Path, resume: bool, overwrite: bool, in_sweep: bool = False, config: Any = None) -> Start:
    """Where the run in `run_dir` starts, refusing what would lose or fake a result. Reads the
    folder, changes nothing (`begin` does):

    - overwrite=true: whatever the folder holds goes, and the run starts again;
    - resume=true: a finished run is skipped, an unfinished one continues from its last
      checkpoint; with nothing to continue a single run is refused (it never started here), a
      sweep's job starts (it is a job the interrupted sweep never reached);
    - neither: a folder holding a finished or an unfinished run is refused, naming both keys.

    `config`, the run's config, lets the refusal of a resume name the folders of unfinished runs
    of the same config (the default run folders carry a timestamp)."""
    run_dir = Path(run_dir)
    if resume and overwrite:
        raise ConfigError("resume=true and overwrite=true contradict each other: keep one.")
    if overwrite:
        return Start(clear=True)
    result = read_result(run_dir)
    finished = result is not None and result.status == "ok"
    checkpoint = last_checkpoint(run_dir)
    if resume:
        if finished:
            return Start(finished=result)
        if checkpoint is not None:
            return Start(checkpoint=checkpoint)
        if in_sweep:
            return Start()
        raise ConfigError(_nothing_to_resume(run_dir, result, config))
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


def begin(run_dir: Path, start: Start) -> None:
    """Ready the folder for `start`: delete what an overwritten run left, or the checkpoints a
    kill cut short (they would count towards trainer.keep_checkpoints)."""
    run_dir = Path(run_dir)
    if start.clear:
        (run_dir / RESULT_FILE).unlink(missing_ok=True)
        for name in (CHECKPOINT_DIR, TRAINER_DIR):
            shutil.rmtree(run_dir / name, ignore_errors=True)
    if start.checkpoint is not None:
        for path in _checkpoints(run_dir):
            if checkpoint_step(path) is None:
                shutil.rmtree(path, ignore_errors=True)


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


def remove_resume_checkpoints(run_dir: Path) -> None:
    """Once result.json is written the resume checkpoints serve nothing (resume=true skips a
    finished run) and hold optimizer states several times the size of what trained."""
    shutil.rmtree(Path(run_dir) / TRAINER_DIR, ignore_errors=True)


def check_writable(folder: Path, key: str = "hydra.run.dir") -> None:
    """Refuse, before anything loads, a folder this process cannot create or write into: the
    run would otherwise fail after training, when it saves. `key` is the setting that names it."""
    folder = Path(folder)
    _check_creatable(folder, key)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise ConfigError(
            f"cannot write into the run folder {folder} ({reason}). Choose a folder you can write to with {key}=DIR, "
            "or fix its permissions."
        ) from error


class CheckRunFolder(Callback):
    """The checks of the run folder that must come before Hydra creates it and writes `.hydra/`
    into it: a folder that cannot be written, a finished or unfinished run that would be run
    over, a resume of a run that is not there. In a sweep, the sweep folder: it must be writable,
    and exist already to be resumed (each job's own folder is checked when the job starts).
    Refusals end the command as peftlab's own errors do: one paragraph, exit code 2."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        run_dir = Path(config.hydra.run.dir)
        try:
            _check_creatable(run_dir, "hydra.run.dir")
            plan_start(run_dir, config.resume, config.overwrite, config=_run_config(config))
        except PeftlabError as error:
            exit_with(error)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            _check_creatable(sweep_dir, "hydra.sweep.dir")
            if config.resume and not sweep_dir.is_dir():
                raise ConfigError(
                    f"resume=true, but the sweep folder {sweep_dir} does not exist: no sweep ran there. To resume a "
                    "sweep, name its folder: hydra.sweep.dir=FOLDER (the one holding its multirun.yaml)."
                )
        except PeftlabError as error:
            exit_with(error)


def _check_creatable(folder: Path, key: str) -> None:
    """`folder` exists as a writable folder, or its nearest existing parent is one."""
    existing = next(path for path in (folder, *folder.parents) if path.exists() or path == path.parent)
    if not existing.is_dir():
        raise ConfigError(
            f"{key}={folder} cannot be created: {existing} is a file, where a folder is expected. Choose another "
            f"folder with {key}=DIR."
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(
            f"{key}={folder} cannot be created: {existing} is not writable. Choose a folder you can write to with "
            f"{key}=DIR, or fix its permissions."
        )


def _checkpoints(run_dir: Path) -> list[Path]:
    folder = Path(run_dir) / TRAINER_DIR
    if not folder.is_dir():
        return []
    return [path for path in folder.glob(f"{CHECKPOINT_PREFIX}*") if path.is_dir()]


def _nothing_to_resume(run_dir: Path, result: Result | None, config: Any) -> str:
    if result is not None:
        return (
            f"resume=true, but the run in {run_dir} failed before its first checkpoint ({_gist(result.error)}). "
            "Run it again without resume=true."
        )
    unfinished = _unfinished_runs_like(run_dir, config) if config is not None else []
    hint = ""
    if unfinished:
        hint = f" Unfinished runs of this same config: {' or '.join(f'hydra.run.dir={path}' for path in unfinished)}."
    return (
        f"resume=true, but {run_dir} holds no run to resume: this run never started there, or stopped before its "
        f"first checkpoint (every trainer.save_every steps). To resume a run, name its folder: hydra.run.dir=FOLDER; "
        f"to start it, leave out resume=true.{hint}"
    )


def _unfinished_runs_like(run_dir: Path, config: Any) -> list[Path]:
    """Sibling run folders (the timestamped folders of outputs/runs/) with a resume checkpoint,
    no finished result and the same config but for resume and overwrite: what a user who
    forgot hydra.run.dir meant to resume. Newest first."""
    if not run_dir.parent.is_dir():
        return []
    mine = _without_start_keys(config)
    found = []
    for sibling in run_dir.parent.iterdir():
        if sibling == run_dir or not (sibling / HYDRA_CONFIG).is_file() or last_checkpoint(sibling) is None:
            continue
        result = read_result(sibling)
        if result is not None and result.status == "ok":
            continue
        if _without_start_keys(OmegaConf.to_container(OmegaConf.load(sibling / HYDRA_CONFIG))) == mine:
            found.append(sibling)
    return sorted(found, key=lambda path: path.stat().st_mtime, reverse=True)[:LISTED_RUNS]


def _run_config(config: DictConfig) -> dict[str, Any]:
    """The config as Hydra saves it into .hydra/config.yaml: without `hydra`, unresolved."""
    return {key: value for key, value in OmegaConf.to_container(config).items() if key != "hydra"}


def _without_start_keys(config: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in config.items() if key not in START_KEYS}


def _gist(text: str | None) -> str:
    """An error in one line: a peftlab message's first, a traceback's last (the exception)."""
    lines = (text or "no error recorded").strip().splitlines()
    return lines[-1] if len(lines) > 1 else lines[0]

