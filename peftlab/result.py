"""The Result record and result.json: the one file per run that the report and every
benchmark read. A failed run writes one too, so a sweep can say what went wrong where.

The measured sections are typed records (`ParamCount`, `Timing`, `Memory`, `Checkpoint`,
`Selection`): the
run fills them, the report and the benchmarks read them back through `Result.read`, and the
JSON keeps one shape for all. A failed run has none of them, written as `{}`."""

from __future__ import annotations

import json
import platform
import subprocess
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from peftlab import atomic

RESULT_FILE = "result.json"
TRACKED_PACKAGES = ("peftlab", "torch", "transformers", "peft", "datasets", "hydra-core", "seqeval")


@dataclass(frozen=True)
class ParamCount:
    """Parameters of the finished model, counted once by `peftlab.params`: the head apart from
    the base and once (peft's modules_to_save keeps a frozen copy beside the trained one), a
    packed 4-bit weight at its logical size."""

    base_total: int  # the pretrained body, without the head
    trainable: int  # method + head
    method: int
    head: int
    trainable_pct: float  # share of all parameters of the finished model (base + head) that train


@dataclass(frozen=True)
class Timing:
    train_seconds: float  # 0.0 for a method that trains nothing (evaluated as loaded)
    train_samples_per_second: float | None  # None where nothing trained
    train_tokens_per_second: float | None  # real (non-padding) tokens; None where nothing trained
    eval_seconds: float  # every evaluated split, generation included
    torch_threads: int | None = None  # timings compare only at equal threads; None in runs older than the key


@dataclass(frozen=True)
class Memory:
    peak_rss_mb: float
    peak_cuda_mb: float | None  # None without CUDA
    model_bytes: int | None = None  # the model as loaded (base + head), before the method; None in older runs


@dataclass(frozen=True)
class Checkpoint:
    path: str
    size_bytes: int


@dataclass(frozen=True)
class Selection:
    """Which weights the run scored, chosen on validation during training (trainer.select_best,
    trainer.early_stopping_patience). A run with neither scores its last step after its whole
    budget and has no Selection."""

    metric: str  # the validation score that chose: the primary metric, or "loss" (lower is better)
    best_step: int | None  # the step of the best validation score; None when no score was a number
    best_value: float | None
    selected_step: int  # the step whose weights were scored on validation and test
    last_step: int  # the last step trained
    budget_steps: int  # the steps the budget allowed (trainer.epochs or trainer.max_steps)
    early_stopped: bool  # training stopped before budget_steps, for want of a better validation score


RECORDS = {"params": ParamCount, "timing": Timing, "memory": Memory, "checkpoint": Checkpoint, "selection": Selection}


@dataclass
class Result:
    status: str  # "ok" | "failed"
    task: str
    dataset: str
    method: str
    backbone: str
    quant: str
    seed: int
    error: str | None = None
    dataset_fingerprint: str | None = None  # what `dataset` names, exactly (peftlab.data.sources.dataset_identity)
    params: ParamCount | None = None
    primary_metric: str | None = None
    metrics: dict[str, dict[str, float] | None] = field(default_factory=dict)  # "test": None without one
    data_sizes: dict[str, int] = field(default_factory=dict)  # examples per split after the subsample
    history: list[dict[str, float]] = field(default_factory=list)  # validation metrics during training
    timing: Timing | None = None
    memory: Memory | None = None
    checkpoint: Checkpoint | None = None
    selection: Selection | None = None
    config: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    git_sha: str | None = None
    notes: list[str] = field(default_factory=list)  # what a reader must know, e.g. no test split

    def write(self, run_dir: Path) -> Path:
        """Atomically: a run killed while writing leaves the previous result.json or none, never
        a truncated one that the report would have to skip."""
        return atomic.write_text(Path(run_dir) / RESULT_FILE, json.dumps(self.to_json(), indent=2, sort_keys=False) + "\n")

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        return {**data, **{section: data[section] or {} for section in RECORDS}}

    @classmethod
    def read(cls, path: Path) -> "Result":
        return cls.from_json(json.loads(Path(path).read_text()))

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Result":
        records = {section: record(**data[section]) if data.get(section) else None for section, record in RECORDS.items()}
        return cls(**{**data, **records})


def package_versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in TRACKED_PACKAGES:
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            continue
    return found


def git_sha() -> str | None:
    """The commit of the peftlab checkout that made the run, when it is one."""
    try:
        completed = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if completed.returncode != 0:
        return None
    return completed.stdout.strip() or None
