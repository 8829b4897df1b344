"""Step time and peak memory against sequence length and batch size: MiniLM (22M parameters) and
SmolLM2-135M, full fine-tuning and LoRA, on the CPU. A training step is forward, backward,
gradient clipping and the AdamW step, as Trainer runs it, on a model peftlab's `prepare` built
(see train_step.py), fed synthetic token ids of exactly the asked length (no padding).

    python benchmarks/scale.py                  # the grid below; about 10 minutes on 2 quiet cores
    python benchmarks/scale.py --backbones minilm --lengths 32,64,128 --batches 1,8
    python benchmarks/scale.py --quick          # tiny random models, a small grid: checks the script

Writes scale.md, scale.csv and scale.png to --out (benchmarks/results; --quick:
outputs/benchmarks/quick). SmolLM2 needs Banking77 in --data (default ../shared/data; its task
builds the model) and its GGUF conversion cached (the first SmolLM2 load converts it, ~60 s).

Two sweeps per backbone and method: sequence length 32 to 512 at batch 4, and batch size 1 to 32
at 64 tokens (GRID). SmolLM2 costs about 10x MiniLM a token, so its batch sweep stops at 16
(SMOLLM2_GRID): full fine-tuning at 32 x 64 would add minutes to the run. `--lengths`,
`--length-batch`, `--batches` and `--batch-length` replace the grid of every backbone. Each sweep
grows from small to large and stops once a step takes longer than `--max-seconds-per-cell` (the
rest are listed as skipped, with why), so a slow machine ends early instead of running for an hour.

Each (backbone, method, sweep) runs in a process of its own, so that its peak resident set is its
own. A point's step time is the median of `--steps` timed steps after `--warmup` untimed ones
(the first allocates the AdamW state); its peak is the resident set's high-water mark over those
steps, absolute MiB (the ~0.5 GiB of imported libraries and the weights included: see
memory_components.py for the parts). Timings are of the machine that ran them: compare within one
table, not across machines, and use a quiet one.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
import dataclasses
from pathlib import Path

import torch

from train_step import (
    BACKBONE_TASKS, ROOT, add_cell_arguments, build_cell, check_cells, child_overrides, comma_names, compose_config, forward_backward,
    optimizer_step, page_in, peak_mib, resident_mib, run_child, start_phase, synthetic_batch, write_csv,
    write_tiny_backbones,
)
from peftlab.result import git_sha

METHODS = ("full", "lora")
SWEEPS = ("length", "batch")


@dataclasses.dataclass(frozen=True)
class Grid:
    """A length sweep at `length_batch` sequences a batch, and a batch sweep at `batch_length` tokens."""

    lengths: tuple[int, ...]
    length_batch: int
    batches: tuple[int, ...]
    batch_length: int

    def points(self, sweep: str) -> list[tuple[int, int]]:
        """(batch size, length) pairs of one sweep, smallest first."""
        if sweep == "length":
            return [(self.length_batch, length) for length in sorted(self.lengths)]
        return [(batch, self.batch_length) for batch in sorted(self.batches)]


GRID = Grid(lengths=(32, 64, 128, 256, 512), length_batch=4, batches=(1, 4, 16, 32), batch_length=64)
SMOLLM2_GRID = dataclasses.replace(GRID, batches=(1, 4, 16))
BACKBONE_GRIDS = {"minilm": GRID, "smollm2": SMOLLM2_GRID}
QUICK_NOTE = ", tiny random models: the numbers mean nothing"
QUICK_GRID = Grid(lengths=(16, 32, 64), length_batch=2, batches=(1, 2, 4), batch_length=32)


# --- inside a cell's own process ---------------------------------------------------------------


def sweep(overrides: list[str], points: list[tuple[int, int]], warmup: int, steps: int, max_seconds: float) -> dict:
    """Time and peak of every point, smallest first, until a step exceeds `max_seconds`."""
    with tempfile.TemporaryDirectory() as workdir:
        cell = build_cell(compose_config(overrides), Path(workdir))
    page_in(cell.model)
    loaded = resident_mib()
    measured = []
    for batch_size, length in points:
        batch = synthetic_batch(cell, batch_size, length)
        start_phase()
        seconds = []
        for _ in range(warmup + steps):
            started = time.perf_counter()
            forward_backward(cell, batch)
            optimizer_step(cell)
            seconds.append(time.perf_counter() - started)
        step_seconds = statistics.median(seconds[warmup:])
        measured.append({"batch_size": batch_size, "seq_len": length, "step_seconds": step_seconds,
                         "peak_rss_mib": peak_mib()})
        if step_seconds > max_seconds:
            break
    return {"loaded_rss_mib": loaded, "points": measured, "torch_threads": torch.get_num_threads()}


# --- the parent: one child per (backbone, method, sweep), then the table and the plot ----------


def main() -> None:
    args = parse_arguments()
    if args.cell:
        overrides = child_overrides(args)
        points = [tuple(int(size) for size in point.split("x")) for point in args.points.split(",")]
        measured = sweep(overrides, points, args.warmup, args.steps, args.max_seconds_per_cell)
        args.cell_result.write_text(json.dumps(measured))
        return
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        data = write_tiny_backbones(scratch) if args.quick else args.data
        for backbone in args.backbones:
            for method in args.methods:
                for kind in SWEEPS:
                    print(f"sweeping {kind} for {backbone} {method} ...", file=sys.stderr, flush=True)
                    points = grid_of(backbone, args).points(kind)
                    cell = [
                        f"--cell={backbone}:{method}", f"--points={','.join(f'{b}x{n}' for b, n in points)}",
                        f"--data={data}", f"--warmup={args.warmup}", f"--steps={args.steps}",
                        f"--max-seconds-per-cell={args.max_seconds_per_cell}", *["--quick"] * args.quick,
                    ]
                    result = run_child(Path(__file__), cell, scratch / f"{backbone}_{method}_{kind}.json")
                    rows += sweep_rows(backbone, method, kind, points, result, args.max_seconds_per_cell)
    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(args.out / "scale.csv", rows)
    (args.out / "scale.md").write_text(render(rows, args))
    plot(rows, args.out / "scale.png")
    print(f"wrote {args.out / 'scale.md'}, .csv and .png")


def sweep_rows(
    backbone: str, method: str, kind: str, points: list[tuple[int, int]], result: dict, max_seconds: float
) -> list[dict]:
    """One row per grid point: measured, skipped after a slow step, or failed with the cell."""
    base = {"backbone": backbone, "method": method, "sweep": kind}
    measured = {(point["batch_size"], point["seq_len"]): point for point in result.get("points", [])}
    rows = []
    for batch_size, length in points:
        row = {**base, "batch_size": batch_size, "seq_len": length}
        point = measured.get((batch_size, length))
        if point is not None:
            rows.append({
                **row, "status": "ok", "step_seconds": round(point["step_seconds"], 4),
                "tokens_per_second": round(batch_size * length / point["step_seconds"], 1),
                "peak_rss_mib": round(point["peak_rss_mib"], 1),
                "loaded_rss_mib": round(result["loaded_rss_mib"], 1),
                "torch_threads": result["torch_threads"], "note": "",
            })
        elif "error" in result:
            rows.append({**row, "status": "failed", "note": result["error"]})
        else:
            slow = result["points"][-1]
            rows.append({
                **row, "status": "skipped",
                "note": f"a step at {slow['batch_size']}x{slow['seq_len']} took {slow['step_seconds']:.1f} s "
                        f"> --max-seconds-per-cell {max_seconds:g}",
            })
    return rows


def grid_of(backbone: str, args: argparse.Namespace) -> Grid:
    """The backbone's grid, as replaced by the command line's."""
    return _replaced(QUICK_GRID if args.quick else BACKBONE_GRIDS[backbone], args)


def _replaced(grid: Grid, args: argparse.Namespace) -> Grid:
    return Grid(
        lengths=grid.lengths if args.lengths is None else args.lengths,
        length_batch=grid.length_batch if args.length_batch is None else args.length_batch,
        batches=grid.batches if args.batches is None else args.batches,
        batch_length=grid.batch_length if args.batch_length is None else args.batch_length,
    )


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbones", type=comma_names, default=list(BACKBONE_TASKS), help="comma-separated: minilm,smollm2")
    parser.add_argument("--methods", type=comma_names, default=list(METHODS), help="comma-separated: full,lora,qlora")
    parser.add_argument("--lengths", type=_sizes, help="sequence lengths of the length sweep, e.g. 32,64,128,256,512")
    parser.add_argument("--length-batch", type=int, help="batch size of the length sweep")
    parser.add_argument("--batches", type=_sizes, help="batch sizes of the batch sweep, e.g. 1,4,16,32")
    parser.add_argument("--batch-length", type=int, help="sequence length of the batch sweep")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps before each point's timed ones")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per point; the median is reported")
    parser.add_argument("--max-seconds-per-cell", type=float, default=30.0,
                        help="stop growing a sweep once a step takes longer than this")
    add_cell_arguments(parser, outputs="scale.md, .csv and .png", quick_help="tiny random models and a small grid")
    parser.add_argument("--points", help=argparse.SUPPRESS)  # BATCHxLENGTH,... of the child's sweep
    args = parser.parse_args()
    check_cells(args.backbones, args.methods)
    if args.steps < 1 or args.warmup < 0:
        parser.error("--steps must be >= 1 and --warmup >= 0")
    sizes = [*(args.lengths or ()), *(args.batches or ()), args.length_batch, args.batch_length]
    if any(size is not None and size < 1 for size in sizes) or args.lengths == () or args.batches == ():
        parser.error("--lengths, --batches, --length-batch and --batch-length take sizes >= 1")
    args.out = args.out or ROOT / ("outputs/benchmarks/quick" if args.quick else "benchmarks/results")
    args.command = " ".join(["python benchmarks/scale.py", *sys.argv[1:]])
    return args


def _sizes(text: str) -> tuple[int, ...]:
    return tuple(int(size) for size in comma_names(text))


def render(rows: list[dict], args: argparse.Namespace) -> str:
    lines = [
        "# Step time and peak memory against sequence length and batch size",
        "",
        f"`{args.command}` (git {git_sha() or 'unknown'}{QUICK_NOTE if args.quick else ''})",
        "",
        f"CPU, {_threads(rows)} torch threads. A step: forward, backward, clipping, AdamW step, on synthetic tokens "
        f"of exactly the length shown (no padding); step time is the median of {args.steps} timed steps after "
        f"{args.warmup} warm-up; peak RSS is the process's high-water mark over them (libraries and weights "
        "included). Each backbone x method x sweep ran in its own process, and a sweep stopped growing once a "
        f"step took over {args.max_seconds_per_cell:g} s (--max-seconds-per-cell).",
        "",
        "Grids:",
        "",
    ]
    for backbone in args.backbones:
        grid = grid_of(backbone, args)
        common = _replaced(QUICK_GRID if args.quick else GRID, args)
        trimmed = " (trimmed from the common grid to fit the time budget)" if grid != common else ""
        lines.append(
            f"- {backbone}: lengths {_listed(grid.lengths)} at batch {grid.length_batch}; "
            f"batches {_listed(grid.batches)} at length {grid.batch_length}{trimmed}"
        )
    for kind, heading in (("length", "Against sequence length"), ("batch", "Against batch size")):
        lines += ["", f"## {heading}", "",
                  "| backbone | method | batch | length | step s | tokens/s | peak RSS MiB | note |",
                  "|---|---|---:|---:|---:|---:|---:|---|"]
        for row in (row for row in rows if row["sweep"] == kind):
            if row["status"] == "ok":
                lines.append(
                    f"| {row['backbone']} | {row['method']} | {row['batch_size']} | {row['seq_len']} | "
                    f"{row['step_seconds']:.3f} | {row['tokens_per_second']:,.0f} | {row['peak_rss_mib']:,.0f} | |"
                )
            else:
                lines.append(
                    f"| {row['backbone']} | {row['method']} | {row['batch_size']} | {row['seq_len']} | | | | "
                    f"{row['status']}: {row['note']} |"
                )
    lines += ["", "![step time and peak memory](scale.png)"]
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    """Step time and peak RSS against length and against batch size, log-log, one line per
    backbone x method (its fixed batch or length in the legend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(2, 2, figsize=(11, 8), squeeze=False)
    panels = {("length", "step_seconds"): axes[0][0], ("batch", "step_seconds"): axes[0][1],
              ("length", "peak_rss_mib"): axes[1][0], ("batch", "peak_rss_mib"): axes[1][1]}
    for (kind, value), axis in panels.items():
        measured = [row for row in rows if row["sweep"] == kind and row["status"] == "ok"]
        for backbone, method in dict.fromkeys((row["backbone"], row["method"]) for row in measured):
            line = [row for row in measured if (row["backbone"], row["method"]) == (backbone, method)]
            x = "seq_len" if kind == "length" else "batch_size"
            fixed = f"batch {line[0]['batch_size']}" if kind == "length" else f"length {line[0]['seq_len']}"
            label = f"{backbone} {method} ({fixed})"
            axis.plot([row[x] for row in line], [row[value] for row in line], marker="o", label=label)
        axis.set_xscale("log", base=2)
        axis.set_yscale("log")
        axis.set_xlabel("sequence length (tokens)" if kind == "length" else "batch size (sequences)")
        axis.set_ylabel("step time (s)" if value == "step_seconds" else "peak RSS (MiB)")
        axis.grid(True, which="both", alpha=0.3)
        if measured:
            axis.legend(fontsize=8)
    figure.suptitle("Training step on the CPU: full fine-tuning vs LoRA")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _threads(rows: list[dict]) -> str:
    return ", ".join(sorted({str(row["torch_threads"]) for row in rows if row["status"] == "ok"})) or "?"


def _listed(sizes: tuple[int, ...]) -> str:
    return ", ".join(str(size) for size in sorted(sizes))


if __name__ == "__main__":
    logging.disable(logging.WARNING)
    main()
