"""Sweeps as a user runs them: many runs in one command, failed runs recorded and skipped,
parallel jobs that share the cores, a learning-rate search that optimises validation only."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from peftlab.__main__ import objective
from peftlab.result import Result
from peftlab.sweep import threads_per_job
from tests.helpers import peftlab, read_results


def tiny_sweep(tiny_backbone: Path, tiny_ner_dir: Path, sweep_dir: Path, *overrides: str):
    return peftlab(
        "-m", "task=conll2003", f"task.data.path={tiny_ner_dir}", f"backbone.pretrained={tiny_backbone}",
        "trainer=smoke", "task.max_length=32", "+trainer.extra.use_cpu=true", f"hydra.sweep.dir={sweep_dir}",
        *overrides, cwd=sweep_dir.parent,
    )


@pytest.mark.parametrize(
    "requested, jobs, cores, expected",
    [(None, None, 8, None), (None, 2, 8, 4), (None, -1, 8, 1), (None, 3, 8, 2), (None, 16, 8, 1), (3, 2, 8, 3),
     (3, None, 8, 3)],
)
def test_threads_are_shared_among_parallel_jobs(requested, jobs, cores, expected):
    assert threads_per_job(requested, jobs, cores) == expected


def test_a_sweep_records_failed_runs_and_goes_on(tiny_backbone, tiny_ner_dir, tmp_path):
    sweep_dir = tmp_path / "sweep"
    completed = tiny_sweep(tiny_backbone, tiny_ner_dir, sweep_dir, "method=head_only,lora", "trainer.lr=0.01,-1")
    assert completed.returncode == 0, completed.stderr
    runs = read_results(sweep_dir)
    assert len(runs) == 4
    failed = [run for run in runs if run["status"] == "failed"]
    assert sorted(run["method"] for run in failed) == ["head_only", "lora"]
    assert all("trainer.lr" in run["error"] and run["config"]["trainer"]["lr"] == -1 for run in failed)
    ok = [run for run in runs if run["status"] == "ok"]
    assert sorted(run["method"] for run in ok) == ["head_only", "lora"]
    assert all(run["config"]["trainer"]["lr"] == 0.01 for run in ok)
    report = (sweep_dir / "report.md").read_text()  # written by the end-of-sweep callback
    assert "2 runs ok, 2 failed" in report and "trainer.lr" in report
    assert f"report: {sweep_dir / 'report.md'}" in completed.stdout


def test_joblib_runs_jobs_in_parallel_with_the_cores_shared(tiny_backbone, tiny_ner_dir, tmp_path):
    sweep_dir = tmp_path / "sweep"
    completed = tiny_sweep(
        tiny_backbone, tiny_ner_dir, sweep_dir, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
        "method=head_only,bitfit",
    )
    assert completed.returncode == 0, completed.stderr
    runs = read_results(sweep_dir)
    assert sorted(run["method"] for run in runs) == ["bitfit", "head_only"]
    assert all(run["status"] == "ok" for run in runs)
    expected_threads = max(1, (os.cpu_count() or 1) // min(2, os.cpu_count() or 1))
    assert {run["timing"]["torch_threads"] for run in runs} == {expected_threads}
    assert (sweep_dir / "results.csv").read_text().count("\n") == 1 + 2  # header + one row per run


def test_learning_rate_search_optimises_the_validation_metric(tiny_backbone, tiny_ner_dir, tmp_path):
    sweep_dir = tmp_path / "search"
    completed = tiny_sweep(
        tiny_backbone, tiny_ner_dir, sweep_dir, "hparams_search=lr", "hydra.sweeper.n_trials=3", "method=head_only",
    )
    assert completed.returncode == 0, completed.stderr
    runs = read_results(sweep_dir)
    assert len(runs) == 3 and len({run["config"]["trainer"]["lr"] for run in runs}) == 3
    assert all(1e-5 <= run["config"]["trainer"]["lr"] <= 1e-1 for run in runs)
    best = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    validation = {run["config"]["trainer"]["lr"]: run["metrics"]["validation"]["f1"] for run in runs}
    assert best["best_value"] == pytest.approx(max(validation.values()))
    assert validation[best["best_params"]["trainer.lr"]] == pytest.approx(best["best_value"])


def test_the_sweep_objective_is_the_validation_metric_never_test():
    result = Result(status="ok", task="t", dataset="d", method="m", backbone="b", quant="none", seed=0)
    result.primary_metric = "accuracy"
    result.metrics = {"validation": {"accuracy": 0.61, "loss": 0.9}, "test": {"accuracy": 0.83}}
    assert objective(result) == 0.61


@pytest.mark.slow
def test_torchrun_trains_one_run_on_two_processes_and_only_rank_zero_writes(tiny_backbone, tiny_ner_dir, tmp_path):
    """DDP on CPU (gloo): the same command a user runs with `torchrun --nproc_per_node=N` on GPUs."""
    import shutil
    import subprocess
    import sys

    run_dir = tmp_path / "run"
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    # torchrun sets OMP_NUM_THREADS=1 per process only where the caller has not set it
    inherited = {key: value for key, value in os.environ.items() if key != "OMP_NUM_THREADS"}
    completed = subprocess.run(
        [torchrun, "--nproc_per_node=2", "-m", "peftlab", "task=conll2003", f"task.data.path={tiny_ner_dir}",
         f"backbone.pretrained={tiny_backbone}", "trainer=smoke", "task.max_length=32", "+trainer.extra.use_cpu=true",
         "method=lora", f"hydra.run.dir={run_dir}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**inherited, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert completed.stdout.count("result: ") == 1
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "ok" and result["timing"]["torch_threads"] == 1  # torchrun's OMP_NUM_THREADS=1
    assert (run_dir / "checkpoint" / "adapter_model.safetensors").exists()
