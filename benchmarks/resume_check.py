"""Does a run killed with SIGKILL and started again with `resume=true` end where the same run
never interrupted ends? On real data: CoNLL-2003, MiniLM + LoRA, through the command line.

    python benchmarks/resume_check.py                  # 120 steps, checkpoints every 40: ~6 min on 2 cores
    python benchmarks/resume_check.py --quick          # a few steps on a few sentences: checks the script

Run A trains `--steps` optimizer steps uninterrupted; run B is the same command, killed with
SIGKILL as soon as its first resume checkpoint (`--save-every`) is complete, then run again with
`resume=true` in its folder. Both score validation and test at the end. Compared: the validation
and test metrics and the training loss of every logged step (result.json, read through
peftlab.result), and the trained weights (checkpoint/*.safetensors), tensor by tensor. On CPU
with the same thread count (`trainer.threads`, pinned here) both must be bit-identical: Trainer
restores the optimizer, scheduler, RNG states and data position, and peftlab seeds each epoch's
batches (tests/test_resume.py checks the same on a tiny model).

Writes resume_check.md and .csv to --out (default benchmarks/results; --quick:
outputs/benchmarks/quick), the run folders under its resume_check/ folder; exit code 1 when
anything differs. Needs the real data in --data (default ../shared/data/conll2003). The
training set is cut to --train-samples sentences (task.max_train_samples, default 800: 50 steps
an epoch at batch 16) so that the budget spans epochs and the checkpoints at steps 40 and 80 fall
mid-epoch, where resuming must also restore the data position; validation and test are scored
whole.

The trap: the kill comes when the checkpoint is seen, a few steps after it was written, so B
redoes the steps between the checkpoint and the kill; the report says from which step it
resumed, and how many steps B had logged when it was killed.
"""

from __future__ import annotations

import argparse
import csv
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

from peftlab.result import RESULT_FILE, Result
from peftlab.run_folder import CHECKPOINT_DIR, checkpoint_step, last_checkpoint

ROOT = Path(__file__).resolve().parents[1]
UNINTERRUPTED, RESUMED = "uninterrupted", "resumed"


@dataclass(frozen=True)
class Comparison:
    """One quantity of both runs: `same` is exact equality (bits for weights, the floats as written)."""

    quantity: str
    uninterrupted: str
    resumed: str
    same: bool


def run_command(args: argparse.Namespace, run_dir: Path) -> list[str]:
    """`python -m peftlab` with the check's settings: evaluation at the end only (validation
    and test), the training loss logged every `--save-every / 2` steps."""
    return [
        sys.executable, "-m", "peftlab", "task=conll2003", f"task.data.path={portable(args.data)}", f"backbone={args.backbone}",
        "method=lora", "seed=0", "trainer.batch_size=16", f"trainer.max_steps={args.steps}", f"trainer.save_every={args.save_every}",
        f"trainer.logging_steps={logging_steps(args)}", "trainer.eval_strategy=no", "trainer.progress_bar=false",
        f"trainer.threads={args.threads}", f"task.max_train_samples={args.train_samples}",
        *args.overrides, f"hydra.run.dir={run_dir}",
    ]


def portable(path: Path) -> str:
    """A path as the runs (started in the checkout's root) and the committed report should show
    it: relative to the root where it can be, so no machine's absolute path is written down."""
    return os.path.relpath(os.path.abspath(path), ROOT)


def run_uninterrupted(args: argparse.Namespace, run_dir: Path) -> None:
    subprocess.run(run_command(args, run_dir), cwd=ROOT, env=peftlab_env(), check=True)


def run_killed_then_resumed(args: argparse.Namespace, run_dir: Path) -> tuple[int, int]:
    """Run B: SIGKILL once its first checkpoint is complete, then `resume=true`. Returns (the
    step of the checkpoint it resumed from, the last step it had logged when killed)."""
    log = run_dir.parent / f"{run_dir.name}_killed.log"
    unbuffered = {**peftlab_env(), "PYTHONUNBUFFERED": "1"}  # a killed process flushes nothing
    with log.open("w") as output:
        process = subprocess.Popen(run_command(args, run_dir), cwd=ROOT, env=unbuffered, stdout=output, stderr=output)
        while last_checkpoint(run_dir) is None and process.poll() is None:
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait()
    if (run_dir / RESULT_FILE).exists():
        raise SystemExit(f"run B finished before its first checkpoint was seen ({log}): nothing was killed")
    resumed_from = checkpoint_step(last_checkpoint(run_dir))
    logged = logged_steps(log.read_text()) * logging_steps(args)
    subprocess.run([*run_command(args, run_dir), "resume=true"], cwd=ROOT, env=peftlab_env(), check=True)
    return resumed_from, logged


def logged_steps(log: str) -> int:
    """How many times a run logged its training loss: Trainer prints one dict each time."""
    return sum(line.lstrip().startswith("{'loss'") for line in log.splitlines())


def logging_steps(args: argparse.Namespace) -> int:
    return max(1, args.save_every // 2)


def peftlab_env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONPATH": str(ROOT)}


def compare_results(whole: Result, resumed: Result) -> list[Comparison]:
    """The primary metric and loss on each split, then the training loss at every logged step."""
    rows = []
    for split in ("validation", "test"):
        for key in (whole.primary_metric, "loss"):
            mine, theirs = (result.metrics[split][key] for result in (whole, resumed))
            rows.append(Comparison(f"{split} {key}", f"{mine!r}", f"{theirs!r}", mine == theirs))
    losses = [{point["step"]: point.get("train_loss") for point in result.history} for result in (whole, resumed)]
    for step in sorted(losses[0].keys() | losses[1].keys()):
        mine, theirs = (loss.get(step) for loss in losses)
        rows.append(Comparison(f"train loss at step {step:g}", f"{mine!r}", f"{theirs!r}", mine == theirs))
    return rows


def compare_weights(whole: dict[str, torch.Tensor], resumed: dict[str, torch.Tensor]) -> Comparison:
    """Every trained tensor equal bit for bit; otherwise the largest absolute difference."""
    if whole.keys() != resumed.keys():
        return Comparison("trained tensors", f"{len(whole)} tensors", f"{len(resumed)} tensors, other names", False)
    differing = [name for name in whole if not torch.equal(whole[name], resumed[name])]
    largest = max((float((whole[name].float() - resumed[name].float()).abs().max()) for name in differing), default=0.0)
    elements = sum(tensor.numel() for tensor in whole.values())
    shown = f"{len(whole)} tensors, {elements:,} values"
    detail = "bit-identical" if not differing else f"{len(differing)} differ, max |Δ| {largest:.3g}"
    return Comparison("trained weights (checkpoint/*.safetensors)", shown, f"{shown}: {detail}", not differing)


def trained_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return {
        f"{path.name}:{name}": tensor
        for path in sorted((run_dir / CHECKPOINT_DIR).glob("*.safetensors"))
        for name, tensor in load_file(path).items()
    }


def write_markdown(
    path: Path, args: argparse.Namespace, rows: list[Comparison], resumed_from: int, logged: int, sha: str | None
) -> None:
    """`sha`: the commit the runs recorded, i.e. the code that trained them, which is not always
    the peftlab this script imports (another checkout installed in the environment)."""
    agree = all(row.same for row in rows)
    threads = f"trainer.threads={args.threads}"
    lines = [
        "# Resume after SIGKILL on real data",
        "",
        f"`{args.command}` (git {sha or 'unknown'}{', --quick' if args.quick else ''})",
        "",
        f"CoNLL-2003 (`{portable(args.data)}`), backbone `{args.backbone}`, LoRA, seed 0, batch 16, {args.steps} optimizer steps, a "
        f"resume checkpoint every {args.save_every}; the training set cut to {args.train_samples} sentences "
        "(`task.max_train_samples`) so that the budget spans epochs and checkpoints fall mid-epoch; validation and test scored whole, once, "
        f"at the end; CPU, {threads} in both runs. Run B was killed with SIGKILL when its first checkpoint was "
        f"complete: it had logged the training loss up to step {logged}, and "
        f"`resume=true` continued it from step {resumed_from}.",
        "",
        "Run command (A as is; B the same, killed, then again with `resume=true`):",
        "",
        f"`{shlex.join(['python', *run_command(args, Path('RUN_DIR'))[1:]])}`",
        "",
        "| quantity | A: uninterrupted | B: killed, resumed | same |",
        "|---|---|---|---|",
        *(f"| {row.quantity} | {row.uninterrupted} | {row.resumed} | {'yes' if row.same else '**no**'} |" for row in rows),
        "",
        ("Every number and every trained weight is identical: the resumed run is the uninterrupted one."
         if agree else "**Something differs** (rows marked no): resume does not reproduce the uninterrupted run."),
        "",
    ]
    path.write_text("\n".join(lines), encoding="utf-8")


def write_csv(path: Path, rows: list[Comparison]) -> None:
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["quantity", UNINTERRUPTED, RESUMED, "same"])
        writer.writerows([row.quantity, row.uninterrupted, row.resumed, row.same] for row in rows)


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "conll2003",
                        help="folder of CoNLL-2003's train/valid/test files")
    parser.add_argument("--out", type=Path, help="folder for the .md and .csv (default benchmarks/results; "
                        "--quick: outputs/benchmarks/quick)")
    parser.add_argument("--backbone", default="minilm")
    parser.add_argument("--steps", type=int, default=120, help="trainer.max_steps")
    parser.add_argument("--save-every", type=int, default=40, help="trainer.save_every")
    parser.add_argument("--train-samples", type=int, default=800, help="task.max_train_samples")
    parser.add_argument("--threads", type=int, default=2, help="trainer.threads, the same in both runs")
    parser.add_argument("--quick", action="store_true", help="12 steps on 40 sentences, validation and test cut to 32")
    parser.add_argument("overrides", nargs="*", help="more Hydra overrides for both runs")
    args = parser.parse_args(argv)
    args.command = " ".join(["python benchmarks/resume_check.py", shlex.join(sys.argv[1:] if argv is None else argv)])
    if args.quick:
        args.steps, args.save_every, args.train_samples = 12, 4, 40
        args.overrides = [*args.overrides, "task.max_eval_samples=32"]
    args.out = args.out or ROOT / ("outputs/benchmarks/quick" if args.quick else "benchmarks/results")
    if not args.save_every < args.steps:
        parser.error("--save-every must be below --steps: the kill waits for the first checkpoint")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    work = args.out / "resume_check"
    for name in (UNINTERRUPTED, RESUMED):
        shutil.rmtree(work / name, ignore_errors=True)
    run_uninterrupted(args, work / UNINTERRUPTED)
    resumed_from, logged = run_killed_then_resumed(args, work / RESUMED)
    results = [Result.read(work / name / RESULT_FILE) for name in (UNINTERRUPTED, RESUMED)]
    rows = [*compare_results(*results), compare_weights(*(trained_weights(work / name) for name in (UNINTERRUPTED, RESUMED)))]
    write_markdown(args.out / "resume_check.md", args, rows, resumed_from, logged, results[0].git_sha)
    write_csv(args.out / "resume_check.csv", rows)
    print((args.out / "resume_check.md").read_text())
    return 0 if all(row.same for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
