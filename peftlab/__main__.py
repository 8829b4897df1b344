"""`python -m peftlab [overrides]`: the Hydra entry point. Glue only; the run is in run.py."""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from peftlab.config import config_dir  # importing it registers the schemas the config files name
from peftlab.errors import PeftlabError, exit_with
from peftlab.result import Result

log = logging.getLogger("peftlab")


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="config")
def main(cfg: DictConfig) -> float | None:
    """One run. Returns the validation primary metric, the objective a sweeper (Optuna) tunes:
    never the test metric; a finished run met with resume=true returns its recorded one. In a
    sweep, a failed run leaves its failed result.json and the sweep goes on; alone, a user error
    ends with one paragraph and exit code 2. A config that does not fit its schema
    (peftlab/config.py) never gets here: Hydra refuses it while it composes, with the key, and
    exit code 1; nor does a run folder that would lose a result (run_folder.CheckRunFolder)."""
    from peftlab.console import FILE_ONLY, held_back_note, route_library_messages

    route_library_messages()
    import torch

    from peftlab.run import execute, is_main_process  # heavy imports after Hydra parsed the command line
    from peftlab.sweep import launcher_parallel_jobs, threads_per_job

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    threads = threads_per_job(cfg.trainer.threads, launcher_parallel_jobs(hydra_cfg.launcher))
    if threads is not None:
        torch.set_num_threads(threads)
    in_sweep = hydra_cfg.mode == RunMode.MULTIRUN
    try:
        result = execute(cfg, run_dir, in_sweep)
    except PeftlabError as error:
        if in_sweep:
            log.error("%s", error)
            return None
        log.error("%s", error, extra=FILE_ONLY)
        exit_with(error)
    except Exception:
        if not in_sweep:
            raise  # a bug in peftlab or below: keep the traceback
        log.exception("run %s failed; its result.json says why, and the sweep goes on", run_dir)
        return None
    if is_main_process() and not in_sweep:
        print(f"\nresult: {run_dir / 'result.json'}\n{held_back_note(run_dir / f'{hydra_cfg.job.name}.log')}")
    return objective(result)


def objective(result: Result) -> float:
    """What a sweeper maximises: the validation primary metric. Tuning on test would leak it."""
    return result.metrics["validation"][result.primary_metric]


if __name__ == "__main__":
    main()
