"""Markdown table comparing quantized bases from the result.json files under a folder: one row
per run, for the same method and task at different `quant` settings.

    python benchmarks/summarize_quant.py benchmarks/results/wnut17_minilm_quantization > benchmarks/results/wnut17_minilm_quantization.md

`s/step` is the effective batch (batch size x gradient accumulation) over the samples per second
that transformers reports, so a short last batch of an epoch counts as a full one.
"""

from __future__ import annotations

import sys
from pathlib import Path

from peftlab.result import RESULT_FILE, Result

COLUMNS = (
    "quant", "method", "seed", "test", "validation", "model MB", "× none", "peak RSS MB", "peak CUDA MB", "s/step", "train s",
)
ORDER = {"none": 0, "int8": 1, "nf4": 2}  # most bits first; other quant files after, by name


def row(result: Result, float_bytes: int | None) -> list[str]:
    """One run; `float_bytes` is the model size of the same method and seed at quant=none."""
    if result.status != "ok":
        return [result.quant, result.method, str(result.seed), "failed: " + (result.error or "").splitlines()[0]] + [""] * 8
    primary = result.primary_metric
    trainer = result.config["trainer"]
    test = result.metrics["test"] or {}
    cuda = result.memory.peak_cuda_mb
    return [
        result.quant,
        result.method,
        str(result.seed),
        f"{100 * test[primary]:.2f}" if test else "",
        f"{100 * result.metrics['validation'][primary]:.2f}",
        f"{result.memory.model_bytes / 2**20:.1f}",
        f"{result.memory.model_bytes / float_bytes:.2f}" if float_bytes else "",
        f"{result.memory.peak_rss_mb:.0f}",
        f"{cuda:.0f}" if cuda is not None else "",
        f"{trainer['batch_size'] * trainer['grad_accum'] / result.timing.train_samples_per_second:.3f}",
        f"{result.timing.train_seconds:.0f}",
    ]


def table(folder: Path) -> str:
    results = sorted(
        (Result.read(path) for path in folder.rglob(RESULT_FILE)),
        key=lambda r: (r.method, ORDER.get(r.quant, len(ORDER)), r.quant, r.seed),
    )
    if not results:
        raise SystemExit(f"no {RESULT_FILE} under {folder}")
    first = results[0]
    lines = [
        f"task `{first.task}` ({first.dataset}), backbone `{first.backbone}`; metric: {first.primary_metric} x 100; "
        f"device: {'GPU' if first.memory and first.memory.peak_cuda_mb is not None else 'CPU'}",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    float_bytes = {
        (r.method, r.seed): r.memory.model_bytes for r in results if r.status == "ok" and r.quant == "none"
    }
    lines += ["| " + " | ".join(row(result, float_bytes.get((result.method, result.seed)))) + " |" for result in results]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(table(Path(sys.argv[1])), end="")
