"""The Result record and result.json: the one file per run that the report and every
benchmark read. A failed run writes one too, so a sweep can say what went wrong where."""

from __future__ import annotations

import json
import platform
import subprocess
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

RESULT_FILE = "result.json"
TRACKED_PACKAGES = ("peftlab", "torch", "transformers", "peft", "datasets", "hydra-core", "seqeval")


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
    params: dict[str, Any] = field(default_factory=dict)
    primary_metric: str | None = None
    metrics: dict[str, dict[str, float] | None] = field(default_factory=dict)  # "test": None without one
    data_sizes: dict[str, int] = field(default_factory=dict)  # examples per split after the subsample
    history: list[dict[str, float]] = field(default_factory=list)  # validation metrics during training
    timing: dict[str, float] = field(default_factory=dict)
    memory: dict[str, float | None] = field(default_factory=dict)
    checkpoint: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    git_sha: str | None = None
    notes: list[str] = field(default_factory=list)  # what a reader must know, e.g. no test split

    def write(self, run_dir: Path) -> Path:
        path = Path(run_dir) / RESULT_FILE
        path.write_text(json.dumps(asdict(self), indent=2, sort_keys=False) + "\n")
        return path

    @classmethod
    def read(cls, path: Path) -> "Result":
        return cls(**json.loads(Path(path).read_text()))


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
