"""What a generation evaluation costs: seconds and peak resident memory of
`task.evaluate(trainer, split)` (teacher-forced loss, then greedy generation) on validation and
test, with the decoded predictions saved so that two versions of peftlab can be checked for
identical output.

The run is built the way peftlab builds one (`peftlab.run.prepare` and `make_trainer`), by
default the SmolLM2 setup of benchmarks/quantization.sh: backbone=smollm2 task=banking77_gen
method=lora, 240 training queries in batches of 8. `train` runs N optimizer steps once and saves
the adapter; `measure --adapter` loads it into a fresh process, so the peak memory is the
evaluation's, not what training left behind. 30 steps (one epoch, as in quantization.sh) teach
the format: most answers are an intent name and EOS, a few repeat until task.max_new_tokens.
Without an adapter LoRA is the pretrained model, which seldom stops: every prompt generates
task.max_new_tokens tokens, the worst case for generation.

The peftlab measured is the one in the current directory, so the same script measures any
checkout; it uses only `prepare`, `make_trainer`, `save_trained`/`load_trained`,
`Task.evaluate` and `Generation.score`, which every version has. Every measurement runs in its
own process.

    # the before/after comparison, full size (240 prompts: 120 of validation, carved from
    # Banking77's train file, and 120 of test); the adapter is trained once, by the old checkout
    git worktree add /tmp/geneval_before 9a60f8a
    python benchmarks/generation_eval.py compare /tmp/geneval_before . /tmp/generation_eval \
        --repeats 3 task.data.path=$PWD/../shared/data/banking77
    git worktree remove /tmp/geneval_before

It alternates the checkouts (before, after, after, before, ...), checks that all their
predictions are identical, writes OUT_DIR/generation_eval.csv (one row a measurement) and
prints the medians and before/after ratios. `--quick` (16 prompts, 5 training steps, one
repeat) checks the whole comparison in a few minutes; its times say little. The pieces, one at
a time:

    python benchmarks/generation_eval.py train /tmp/adapter task.data.path=...
    python benchmarks/generation_eval.py measure OUT.json --adapter /tmp/adapter --prompts 240 task.data.path=...

Give `compare` an absolute data path: each checkout runs in its own directory.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.getcwd())  # the checkout under test, not the one installed in the environment

from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from peftlab.tasks.generation import Generation  # noqa: E402

DEFAULT_OVERRIDES = ["backbone=smollm2", "task=banking77_gen", "method=lora", "task.max_train_samples=240", "trainer.batch_size=8"]
SPLITS = ("validation", "test")
MEASURED_LABELS = {"eval_seconds": "evaluation, wall s", "eval_cpu_seconds": "evaluation, CPU s (all threads)",
                   "peak_rss_mb": "peak RSS, MB"}
MEASURED = tuple(MEASURED_LABELS)
QUICK_PROMPTS, QUICK_TRAIN_STEPS = 16, 5
QUICK_HELP = f"{QUICK_PROMPTS} prompts, {QUICK_TRAIN_STEPS} training steps, 1 repeat"


class RecordingGeneration(Generation):
    """The generation task, keeping what it scored: the decoded predictions of each split."""

    def __init__(self, task: DictConfig) -> None:
        super().__init__(task)
        self.scored: list[list[str]] = []

    def score(self, predictions: list[str], references: list[str]) -> dict[str, float]:
        self.scored.append(list(predictions))
        return super().score(predictions, references)


def composed(overrides: list[str]) -> DictConfig:
    from peftlab.__main__ import config_dir

    fixed = ["trainer.eval_strategy=no", "trainer.progress_bar=false", f"task.kind={__name__}.RecordingGeneration"]
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose(config_name="config", overrides=[*DEFAULT_OVERRIDES, *fixed, *overrides])


def train(adapter: Path, steps: int, overrides: list[str]) -> None:
    from peftlab.checkpoint import save_trained
    from peftlab.run import make_trainer, prepare

    cfg = composed([f"trainer.max_steps={steps}", *overrides])
    prepared = prepare(cfg)
    with tempfile.TemporaryDirectory() as trainer_dir:
        make_trainer(cfg, prepared, Path(trainer_dir)).train()
    save_trained(prepared.model, adapter)


def measure(out: Path, adapter: Path | None, prompts: int, overrides: list[str]) -> dict:
    """Time evaluate on validation and test, from a fresh process's peak-memory mark."""
    import torch

    import peftlab
    from peftlab.checkpoint import load_trained
    from peftlab.measure import peak_memory, reset_peak_memory
    from peftlab.result import git_sha
    from peftlab.run import make_trainer, prepare

    overrides = [f"task.max_eval_samples={prompts // 2}", *overrides]
    cfg = composed(overrides)
    prepared = prepare(cfg)
    if adapter is not None:
        prepared.model = load_trained(prepared.model, adapter)
    seconds, metrics = {}, {}
    with tempfile.TemporaryDirectory() as trainer_dir:
        trainer = make_trainer(cfg, prepared, Path(trainer_dir))
        reset_peak_memory()
        resident_before = peak_memory()["peak_rss_mb"]  # the high-water mark restarts at the current RSS
        cpu_started = time.process_time()
        for split in SPLITS:
            started = time.perf_counter()
            metrics[split] = prepared.task.evaluate(trainer, prepared.encoded[split], split)
            seconds[split] = time.perf_counter() - started
        cpu_seconds = time.process_time() - cpu_started
    record = {
        "peftlab": str(Path(peftlab.__file__).parent),
        "git_sha": git_sha(),
        "overrides": [*DEFAULT_OVERRIDES, *overrides],
        "adapter": str(adapter) if adapter else None,
        "prompts": sum(len(prepared.encoded[split]) for split in SPLITS),
        "torch_threads": torch.get_num_threads(),
        "eval_seconds": sum(seconds.values()),
        "split_seconds": seconds,
        "eval_cpu_seconds": cpu_seconds,  # all threads together; on a busy machine steadier than the wall clock
        "peak_rss_mb": peak_memory()["peak_rss_mb"],
        "rss_before_eval_mb": resident_before,
        "metrics": metrics,
        "predictions": dict(zip(SPLITS, prepared.task.scored, strict=True)),
    }
    out.write_text(json.dumps(record, indent=1))
    return record


def compare(before: Path, after: Path, out_dir: Path, repeats: int, train_steps: int, prompts: int, overrides: list[str]) -> None:
    """Train once (in the old checkout) if asked, then alternate the checkouts, each measurement
    a fresh process; check identical predictions, write the CSV, print medians and ratios."""
    out_dir.mkdir(parents=True, exist_ok=True)
    script = str(Path(__file__).resolve())
    measure_args = ["--prompts", str(prompts), *overrides]
    if train_steps:
        adapter = out_dir / "adapter"
        subprocess.run([sys.executable, script, "train", str(adapter), "--train-steps", str(train_steps), *overrides],
                       cwd=before, check=True)
        measure_args += ["--adapter", str(adapter)]
    rows = []
    for repeat in range(repeats):
        order = [("before", before), ("after", after)]
        for label, checkout in order if repeat % 2 == 0 else order[::-1]:
            path = out_dir / f"{label}_{repeat}.json"
            subprocess.run([sys.executable, script, "measure", str(path), *measure_args], cwd=checkout, check=True)
            record = json.loads(path.read_text())
            rows.append({"version": label, "repeat": repeat, "git_sha": record["git_sha"], "prompts": record["prompts"],
                         "train_steps": train_steps, **{key: record[key] for key in MEASURED},
                         "predictions": record["predictions"]})
    identical = all(row["predictions"] == rows[0]["predictions"] for row in rows)
    with (out_dir / "generation_eval.csv").open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=[key for key in rows[0] if key != "predictions"])
        writer.writeheader()
        writer.writerows({key: value for key, value in row.items() if key != "predictions"} for row in rows)
    summary = f"{rows[0]['prompts']} prompts, {train_steps} training steps, {repeats} repeats; predictions identical: {identical}"
    medians = {key: [statistics.median(r[key] for r in rows if r["version"] == v) for v in ("before", "after")]
               for key in MEASURED}
    print(f"\n{summary}")
    for key, (before_median, after_median) in medians.items():
        print(f"{key}: before {before_median:.1f}  after {after_median:.1f}  before/after {before_median / after_median:.2f}")
    (out_dir / "generation_eval.md").write_text(render(rows, medians, summary))
    if not identical:
        sys.exit(f"predictions differ between the runs: see the JSON files in {out_dir}")


def render(rows: list[dict], medians: dict[str, list[float]], summary: str) -> str:
    """The comparison as Markdown: the command that made it, medians per version, the ratios
    against the goals of issue 12 (3x faster, peak RSS at most 2 GB)."""
    shas = {row["version"]: row["git_sha"] or "unknown" for row in rows}
    lines = [
        "# Generation evaluation: before and after",
        "",
        f"`python benchmarks/generation_eval.py {' '.join(sys.argv[1:])}`",
        "",
        f"before: git {shas['before']}; after: git {shas['after']}. {summary}. Each measurement is a fresh process "
        "that loads the adapter and evaluates validation then test (teacher-forced loss, then greedy generation); "
        "the checkouts alternate, and each cell is the median over repeats. Raw numbers: generation_eval.csv.",
        "",
        "| | before | after | before / after |",
        "|---|---:|---:|---:|",
    ]
    for key, (before_median, after_median) in medians.items():
        lines.append(f"| {MEASURED_LABELS[key]} | {before_median:,.1f} | {after_median:,.1f} | {before_median / after_median:.2f} |")
    speedup, peak = medians["eval_seconds"][0] / medians["eval_seconds"][1], medians["peak_rss_mb"][1]
    lines += [
        "",
        f"- speed-up (wall): {speedup:.2f}x (goal >= 3: {'met' if speedup >= 3 else 'NOT met'})",
        f"- peak RSS after: {peak:,.0f} MB (goal <= 2,000: {'met' if peak <= 2000 else 'NOT met'})",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    learn = commands.add_parser("train", help="train N steps and save the adapter")
    learn.add_argument("adapter", type=Path)
    one = commands.add_parser("measure", help="one checkout, in this process")
    one.add_argument("out", type=Path)
    one.add_argument("--adapter", type=Path, help="trained weights saved by `train`; none: the untrained method")
    both = commands.add_parser("compare", help="two checkouts, alternated, each measurement its own process")
    both.add_argument("before", type=Path)
    both.add_argument("after", type=Path)
    both.add_argument("out_dir", type=Path)
    both.add_argument("--repeats", type=int, default=3)
    for sub in (learn, both):
        sub.add_argument("--train-steps", type=int, default=30, help="optimizer steps before evaluating (0: untrained)")
    for sub in (one, both):
        sub.add_argument("--prompts", type=int, default=240, help="half from validation, half from test")
    both.add_argument("--quick", action="store_true", help="a smoke run, in place of the sizes given: " + QUICK_HELP)
    args, overrides = parser.parse_known_args()  # the rest are Hydra overrides, e.g. task.data.path=DIR
    unknown = [arg for arg in overrides if arg.startswith("-")]
    if unknown:
        parser.error(f"unrecognized options {unknown}")
    logging.disable(logging.WARNING)
    if args.command == "train":
        train(args.adapter, args.train_steps, overrides)
    elif args.command == "measure":
        record = measure(args.out, args.adapter, args.prompts, overrides)
        print(f"{record['prompts']} prompts: eval {record['eval_seconds']:.1f} s ({record['eval_cpu_seconds']:.1f} s CPU), "
              f"peak RSS {record['peak_rss_mb']:.0f} MB ({record['rss_before_eval_mb']:.0f} MB before) -> {args.out}")
    else:
        if args.quick:
            args.prompts, args.train_steps, args.repeats = QUICK_PROMPTS, QUICK_TRAIN_STEPS, 1
        compare(args.before.resolve(), args.after.resolve(), args.out_dir.resolve(), args.repeats, args.train_steps,
                args.prompts, overrides)


if __name__ == "__main__":
    main()
