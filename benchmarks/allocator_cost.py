"""What glibc's `MALLOC_MMAP_THRESHOLD_=65536` costs in step time and saves in resident memory,
full fine-tuning against LoRA, on SmolLM2-135M (Banking77 as generation) by default.

    python benchmarks/allocator_cost.py            # SmolLM2, full and lora, 3 rounds: ~10 min on 2 quiet cores
    python benchmarks/allocator_cost.py --quick    # tiny random models: checks the script

Why: on the CPU, LoRA's resident set peaks at 0.70x full fine-tuning's on SmolLM2 although its
tensors peak lower, because glibc's malloc keeps the heap that peft's per-layer temporaries
fragment (benchmarks/README.md, "Memory by component"). With the threshold at 64 KiB every block
that large gets a mapping of its own, returned when freed, so the resident set follows the
tensors; the price is a mapping and its page faults for every large block. This script measures
both sides of that trade in one run, so the setting can be recommended (or not) with its cost.

Each measurement is a process of its own, because glibc reads the setting when a process starts:
the "glibc default" processes run with every `MALLOC_*` variable removed from their environment,
the others with `MALLOC_MMAP_THRESHOLD_=65536` added. In it, scale.py's `sweep` builds the model as
peftlab's `prepare` does (train_step.py), runs `--warmup` untimed training steps on one fixed
synthetic batch (the first allocates AdamW's state), then `--steps` timed ones: step time is their
median, and the peak is the resident set's high-water mark over them, in MiB above the process's
resident set before the model loaded (libraries imported). The contenders take turns: within a
round every method runs under both settings, and the order of the settings flips from one round
to the next; each number in the table is the median over rounds. Writes allocator_cost.md and
.csv to --out (benchmarks/results; --quick: outputs/benchmarks/quick) and prints the ratios.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
from pathlib import Path

from scale import sweep
from train_step import (
    ROOT, add_cell_arguments, check_cells, child_overrides, comma_names, resident_mib, run_child, write_csv,
    write_tiny_backbones,
)
from peftlab.result import git_sha

DEFAULT_SETTING = "glibc default"
THRESHOLD_SETTING = "MALLOC_MMAP_THRESHOLD_=65536"
SETTINGS = {DEFAULT_SETTING: {}, THRESHOLD_SETTING: {"MALLOC_MMAP_THRESHOLD_": "65536"}}
QUICK_NOTE = ", tiny random models: the numbers mean nothing"


# --- inside a measurement's own process ----------------------------------------------------------


def measure(overrides: list[str], batch_size: int, length: int, warmup: int, steps: int) -> dict:
    baseline = resident_mib()
    measured = sweep(overrides, [(batch_size, length)], warmup, steps, max_seconds=float("inf"))
    point = measured["points"][0]
    return {"step_seconds": point["step_seconds"], "peak_mib": point["peak_rss_mib"] - baseline,
            "peak_rss_mib": point["peak_rss_mib"], "torch_threads": measured["torch_threads"],
            "mmap_threshold": os.environ.get("MALLOC_MMAP_THRESHOLD_", "default")}


# --- the parent: the settings take turns, one process per measurement ----------------------------


def environment(setting: str) -> dict[str, str]:
    """This process's environment without any glibc malloc setting, plus the setting's own."""
    inherited = {name: value for name, value in os.environ.items() if not name.startswith("MALLOC_")}
    return {**inherited, **SETTINGS[setting]}


def turns(rounds: int, methods: list[str]) -> list[tuple[int, str, str]]:
    """(round, method, setting) in the order they run: each method under both settings within a
    round, the settings' order flipped every other round so neither always runs first."""
    order = list(SETTINGS)
    return [(index, method, setting)
            for index in range(rounds)
            for method in methods
            for setting in (order if index % 2 == 0 else order[::-1])]


def main() -> None:
    args = parse_arguments()
    if args.cell:
        overrides = child_overrides(args)
        measured = measure(overrides, args.batch_size, args.seq_len, args.warmup, args.steps)
        args.cell_result.write_text(json.dumps(measured))
        return
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        data = write_tiny_backbones(scratch) if args.quick else args.data
        for index, (round_index, method, setting) in enumerate(turns(args.rounds, args.methods)):
            print(f"round {round_index + 1}: {args.backbone} {method}, {setting} ...", file=sys.stderr, flush=True)
            cell = [f"--cell={args.backbone}:{method}", f"--data={data}", f"--batch-size={args.batch_size}",
                    f"--seq-len={args.seq_len}", f"--warmup={args.warmup}", f"--steps={args.steps}",
                    *["--quick"] * args.quick]
            measured = run_child(Path(__file__), cell, scratch / f"{index}.json", environment(setting))
            rows.append({"round": round_index + 1, "backbone": args.backbone, "method": method, "setting": setting,
                         "batch_size": args.batch_size, "seq_len": args.seq_len, **measured})
    failures = [row for row in rows if "error" in row]
    if failures:
        raise SystemExit(f"{len(failures)} measurement(s) failed, first: {failures[0]['method']} "
                         f"({failures[0]['setting']}): {failures[0]['error']}")
    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(args.out / "allocator_cost.csv", rows)
    (args.out / "allocator_cost.md").write_text(render(rows, args))
    for line in ratio_lines(medians(by_cell(rows))):
        print(line)
    print(f"wrote {args.out / 'allocator_cost.md'} and .csv")


def by_cell(rows: list[dict]) -> dict[tuple[str, str], list[dict]]:
    """The rows of each (method, setting), one a round, in the order they ran."""
    cells: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        cells.setdefault((row["method"], row["setting"]), []).append(row)
    return cells


def medians(cells: dict[tuple[str, str], list[dict]]) -> dict[tuple[str, str], dict[str, float]]:
    """Per (method, setting): the median over rounds of the step time and of the peak."""
    return {cell: {"step_seconds": statistics.median(row["step_seconds"] for row in measured),
                   "peak_mib": statistics.median(row["peak_mib"] for row in measured)}
            for cell, measured in cells.items()}


def ratio_lines(cells: dict[tuple[str, str], dict[str, float]]) -> list[str]:
    """The setting's cost in time per method, and LoRA's peak against full fine-tuning's per setting."""
    methods = list(dict.fromkeys(method for method, _ in cells))
    lines = []
    for method in methods:
        default, threshold = cells[(method, DEFAULT_SETTING)], cells[(method, THRESHOLD_SETTING)]
        lines.append(
            f"{method}: step time with the threshold / glibc default = "
            f"{threshold['step_seconds'] / default['step_seconds']:.2f}; peak {default['peak_mib']:.0f} -> "
            f"{threshold['peak_mib']:.0f} MiB above the baseline"
        )
    if {"full", "lora"} <= set(methods):
        for setting in SETTINGS:
            lora, full = cells[("lora", setting)], cells[("full", setting)]
            lines.append(f"{setting}: lora/full peak = {lora['peak_mib'] / full['peak_mib']:.2f}, "
                         f"lora/full step time = {lora['step_seconds'] / full['step_seconds']:.2f}")
    return lines


def render(rows: list[dict], args: argparse.Namespace) -> str:
    measured_cells = by_cell(rows)
    cells = medians(measured_cells)
    lines = [
        "# The allocator's trade: glibc's default against MALLOC_MMAP_THRESHOLD_=65536",
        "",
        f"`{args.command}` (git {git_sha() or 'unknown'}{QUICK_NOTE if args.quick else ''})",
        "",
        f"CPU, {', '.join(sorted({str(row['torch_threads']) for row in rows}))} torch threads; backbone "
        f"{args.backbone}; one fixed batch of {args.batch_size} sequences x {args.seq_len} synthetic tokens. "
        f"Each measurement is a process of its own: {args.warmup} untimed training steps, then {args.steps} timed "
        "(forward, backward, clipping, AdamW step); step s is their median, peak the resident set's high-water "
        "mark over them in MiB above the process's resident set before the model loaded. "
        f"{args.rounds} rounds; the settings take turns within a round and swap order every round; the table's "
        "numbers are medians over rounds. Raw numbers: allocator_cost.csv.",
        "",
        "| method | setting | step s | peak MiB above baseline | step s per round | peak per round |",
        "|---|---|---:|---:|---|---|",
    ]
    for (method, setting), measured in measured_cells.items():
        median = cells[(method, setting)]
        seconds = " ".join(f"{row['step_seconds']:.3f}" for row in measured)
        peaks = " ".join(f"{row['peak_mib']:.0f}" for row in measured)
        lines.append(
            f"| {method} | {setting} | {median['step_seconds']:.3f} | {median['peak_mib']:,.0f} | {seconds} | {peaks} |"
        )
    lines += ["", "## Ratios", "", *[f"- {line}" for line in ratio_lines(cells)]]
    return "\n".join(lines) + "\n"


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", choices=["minilm", "smollm2"], default="smollm2")
    parser.add_argument("--methods", type=comma_names, default=["full", "lora"], help="comma-separated: full,lora,qlora")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=64, help="tokens in every sequence of the batch")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps before the timed ones")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per measurement; the median is reported")
    parser.add_argument("--rounds", type=int, default=3, help="times every (method, setting) is measured")
    add_cell_arguments(parser)
    args = parser.parse_args()
    check_cells([args.backbone], args.methods)
    if min(args.batch_size, args.seq_len, args.steps, args.rounds) < 1 or args.warmup < 1:
        parser.error("--batch-size, --seq-len, --steps, --rounds and --warmup must be >= 1 (the first step "
                     "allocates AdamW's state, so at least one step goes untimed)")
    args.out = args.out or ROOT / ("outputs/benchmarks/quick" if args.quick else "benchmarks/results")
    args.command = " ".join(["python benchmarks/allocator_cost.py", *sys.argv[1:]])
    return args


if __name__ == "__main__":
    logging.disable(logging.WARNING)
    main()
