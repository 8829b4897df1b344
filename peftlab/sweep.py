"""What a sweep (`python -m peftlab -m ...`) needs beyond one run: CPU threads shared fairly
between jobs that a launcher runs side by side, and the comparison report written when the
sweep ends."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger("peftlab")


def threads_per_job(requested: int | None, parallel_jobs: int | None, cores: int | None = None) -> int | None:
    """Torch CPU threads for one job, or None to leave torch's own choice (which honours
    OMP_NUM_THREADS, as torchrun sets it). Each job's torch would otherwise start one thread
    per core, so N parallel jobs on C cores would run N*C threads and slow each other down.

    `requested` (trainer.threads) wins; else the cores divided among the launcher's parallel
    jobs (joblib's n_jobs; -1 means one job per core)."""
    if requested is not None:
        return requested
    if parallel_jobs is None:
        return None
    cores = cores or os.cpu_count() or 1
    jobs = cores if parallel_jobs < 1 else min(parallel_jobs, cores)
    return max(1, cores // jobs)


def launcher_parallel_jobs(launcher: DictConfig) -> int | None:
    """How many jobs the launcher runs at once on this machine: joblib's `n_jobs`; None for
    launchers that run one job per machine (basic, submitit, ray)."""
    return launcher.get("n_jobs") if "joblib" in str(launcher.get("_target_", "")) else None


class ReportAtSweepEnd(Callback):
    """Writes report.md/.html, results.csv and the plots into the sweep folder when a multirun
    ends, from the result.json files alone. A failed report never fails the sweep: the runs
    are done and `python -m peftlab.report DIR` can be run again."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            from peftlab.report import write_report

            written = write_report(sweep_dir)
        except Exception as error:  # noqa: BLE001 - reported, and the command to retry given
            log.error("no report for %s (%s); retry with: python -m peftlab.report %s", sweep_dir, error, sweep_dir)
            return
        print(f"\nreport: {written['markdown']}")
