"""Markdown table from the result.json files under a folder: one row per run.

    python benchmarks/summarize.py benchmarks/results/conll2003_minilm > benchmarks/results/conll2003_minilm.md
"""

from __future__ import annotations

import sys
from pathlib import Path

from peftlab.result import RESULT_FILE, Result

COLUMNS = ("method", "seed", "test", "validation", "trainable", "% of model", "train s", "samples/s", "peak RSS MB", "checkpoint MB")


def row(result: Result) -> list[str]:
    if result.status != "ok":
        return [result.method, str(result.seed), "failed: " + (result.error or "").splitlines()[0]] + [""] * 7
    primary = result.primary_metric
    return [
        result.method,
        str(result.seed),
        f"{100 * result.metrics['test'][primary]:.2f}",
        f"{100 * result.metrics['validation'][primary]:.2f}",
        f"{result.params['trainable']:,}",
        f"{result.params['trainable_pct']:.2f}",
        f"{result.timing['train_seconds']:.0f}",
        f"{result.timing['train_samples_per_second']:.1f}",
        f"{result.memory['peak_rss_mb']:.0f}",
        f"{result.checkpoint['size_bytes'] / 2**20:.2f}",
    ]


def table(folder: Path) -> str:
    results = sorted((Result.read(path) for path in folder.rglob(RESULT_FILE)), key=lambda r: (r.method, r.seed))
    if not results:
        raise SystemExit(f"no {RESULT_FILE} under {folder}")
    first = results[0]
    lines = [
        f"task `{first.task}` ({first.dataset}), backbone `{first.backbone}`, quant `{first.quant}`; "
        f"metric: {first.primary_metric} x 100",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    lines += ["| " + " | ".join(row(result)) + " |" for result in results]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(table(Path(sys.argv[1])), end="")
