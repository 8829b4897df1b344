"""Markdown table of what every method in conf/method/ trains on one backbone and task,
computed by peftlab's own counting (no training). The README's method table ("### Methods", its
`method params` column) is this script's output for MiniLM on the demo task, and
tests/test_readme_counts.py fails when the two disagree:

    python benchmarks/param_counts.py backbone=minilm task=ner
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.utils import get_class

from peftlab.__main__ import config_dir
from peftlab.methods import serves
from peftlab.result import ParamCount
from peftlab.run import prepare

README_OVERRIDES = ("backbone=minilm", "task=ner")  # what the README's method table counts


def method_counts(overrides: list[str]) -> dict[str, ParamCount]:
    """method -> what `prepare()` counts for it, for every file of conf/method/ whose method
    serves the task (in-context prompting runs on generation tasks only)."""
    methods = sorted(path.stem for path in (Path(config_dir()) / "method").glob("*.yaml"))
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        configs = [compose(config_name="config", overrides=[*overrides, f"method={method}"]) for method in methods]
        return {cfg.method.name: prepare(cfg).params for cfg in configs if serves(cfg.method, get_class(cfg.task.kind))}


def counts_table(counts: dict[str, ParamCount]) -> str:
    lines = ["| method | method params | head params | trainable | % of model |", "|---|---|---|---|---|"]
    lines += [
        f"| `{method}` | {params.method:,} | {params.head:,} | {params.trainable:,} | {params.trainable_pct:.3f} |"
        for method, params in counts.items()
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    logging.disable(logging.WARNING)
    print(f"overrides: {' '.join(sys.argv[1:]) or '(defaults)'}\n")
    print(counts_table(method_counts(sys.argv[1:])), end="")
