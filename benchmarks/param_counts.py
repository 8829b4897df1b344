"""Markdown table of what every method in conf/method/ trains on one backbone and task,
computed by peftlab's own counting (no training). The README's method table comes from it:

    python benchmarks/param_counts.py backbone=minilm task=ner > benchmarks/results/param_counts_minilm_ner.md
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir

from peftlab.__main__ import config_dir
from peftlab.run import prepare


def counts(overrides: list[str]) -> str:
    methods = sorted(path.stem for path in (Path(config_dir()) / "method").glob("*.yaml"))
    lines = ["| method | method params | head params | trainable | % of model |", "|---|---|---|---|---|"]
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        for method in methods:
            params = prepare(compose(config_name="config", overrides=[*overrides, f"method={method}"])).params
            lines.append(
                f"| `{method}` | {params.method:,} | {params.head:,} | {params.trainable:,} | {params.trainable_pct:.3f} |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    logging.disable(logging.WARNING)
    print(f"overrides: {' '.join(sys.argv[1:]) or '(defaults)'}\n")
    print(counts(sys.argv[1:]), end="")
