"""Helpers more than one test module uses, so test modules never import from each other:
`python -m peftlab` as a subprocess, result.json files as run.py writes them, and facts about the
real MiniLM. Fixtures stay in conftest.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

MINILM_BODY_PARAMETERS = 22_565_376  # all-MiniLM-L6-v2 without its pooler, which NER does not use


def peftlab(*overrides: str, cwd: Path) -> subprocess.CompletedProcess:
    """`python -m peftlab OVERRIDES` from this checkout, offline, as a user runs it."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "peftlab", *overrides], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def assert_clean_error(completed: subprocess.CompletedProcess, *fragments: str) -> None:
    """A refusal as peftlab promises it: non-zero exit, no traceback, the fragments in stderr."""
    assert completed.returncode != 0
    assert "Traceback" not in completed.stderr + completed.stdout
    for fragment in fragments:
        assert fragment in completed.stderr, completed.stderr


# --- result.json files, hand-made ----------------------------------------------------------------

HEAD = 6_921
# method -> (params.trainable, params.trainable_pct): ascending size, one method per budget
SIZES = {
    "head_only": (HEAD, 0.0307),
    "ia3": (25_353, 0.082),
    "bitfit": (32_265, 1.0),  # exactly on the 1% budget: "within" includes it
    "lora": (335_241, 1.49),
    "full": (22_568_841, 100.0),
}


def result(
    method: str, seed: int, test_f1: float | None, *, validation_f1: float | None = None,
    task: str = "conll2003", dataset: str = "data/conll2003", rss: float = 2000.0, cuda: float | None = None,
    train_seconds: float = 100.0, samples_per_second: float = 10.0, size_bytes: int = 1_000_000,
    history: list[dict] | None = None, **overrides,
) -> dict:
    """A complete ok result.json as run.py writes it; `test_f1=None` is a dataset without a test split."""
    trainable, pct = SIZES[method]
    validation = test_f1 - 0.02 if validation_f1 is None else validation_f1
    return {
        "status": "ok", "error": None, "task": task, "dataset": dataset, "method": method, "backbone": "minilm",
        "quant": "none", "seed": seed,
        "params": {"base_total": 22_561_920, "trainable": trainable, "method": trainable - HEAD, "head": HEAD,
                   "trainable_pct": pct},
        "primary_metric": "f1",
        "metrics": {
            "validation": {"f1": validation, "precision": 0.5, "recall": 0.5, "loss": 0.3},
            "test": None if test_f1 is None else {"f1": test_f1, "precision": 0.5, "recall": 0.5, "loss": 0.35},
        },
        "history": history or [],
        "timing": {"train_seconds": train_seconds, "train_samples_per_second": samples_per_second,
                   "train_tokens_per_second": 20 * samples_per_second, "eval_seconds": 5.0},
        "memory": {"peak_rss_mb": rss, "peak_cuda_mb": cuda, "model_bytes": 90_000_000},
        "checkpoint": {"path": f"{method}_s{seed}/checkpoint", "size_bytes": size_bytes},
        "config": {"method": {"name": method, "lr": 1e-3}, "trainer": {"epochs": 1}, "seed": seed},
        "versions": {"python": "3.11.7"}, "git_sha": None, "notes": [],
        **overrides,
    }


def failed(method: str, seed: int, error: str, task: str = "conll2003") -> dict:
    """A failed run's result.json: identity and error, empty sections."""
    return {
        "status": "failed", "error": error, "task": task, "dataset": "data/conll2003", "method": method,
        "backbone": "minilm", "quant": "none", "seed": seed, "params": {}, "primary_metric": None, "metrics": {},
        "history": [], "timing": {}, "memory": {}, "checkpoint": {}, "config": {}, "versions": {}, "git_sha": None,
    }


def write_runs(folder: Path, runs: list[dict]) -> Path:
    """One run folder per result, as a Hydra sweep lays them out (nested one level deeper for
    some, to check the search is recursive)."""
    for number, run in enumerate(runs):
        run_dir = folder / run["task"] / f"{number:02d}_{run['method']}_s{run['seed']}"
        run_dir.mkdir(parents=True)
        (run_dir / "result.json").write_text(json.dumps(run, indent=2))
    return folder


def read_results(folder: Path) -> list[dict]:
    """Every result.json under a run or sweep folder, in path order."""
    return [json.loads(path.read_text()) for path in sorted(folder.rglob("result.json"))]
