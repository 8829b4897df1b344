"""`python -m peftlab [overrides]`: the Hydra entry point. Glue only; the run is in run.py."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from peftlab.errors import PeftlabError

log = logging.getLogger("peftlab")


def config_dir() -> str:
    """conf/ beside the package in a checkout; inside the package in an installed wheel."""
    packaged = Path(__file__).parent / "conf"
    return str(packaged if packaged.is_dir() else Path(__file__).parent.parent / "conf")


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="config")
def main(cfg: DictConfig) -> None:
    from peftlab.run import execute  # heavy imports after Hydra has parsed the command line

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    try:
        execute(cfg, run_dir)
    except PeftlabError as error:
        log.error("%s", error)
        if hydra_cfg.mode == RunMode.MULTIRUN:
            return  # the failed result.json is written; the sweep goes on
        print(f"\npeftlab: error: {error}", file=sys.stderr)
        sys.exit(2)
    print(f"\nresult: {run_dir / 'result.json'}")


if __name__ == "__main__":
    main()
