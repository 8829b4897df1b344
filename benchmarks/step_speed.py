"""Seconds per training step of peftlab's own step (prepare + make_trainer + Trainer.train, as a
run does it), MiniLM on a CoNLL-2003 subset, for: full fine-tuning on random and on
length-grouped batches, every method of conf/method/ at its defaults, LoRA and DoRA with the old
dropout 0.1, LoRA at rank 16 and on q and v only, and a plain PyTorch + peft loop
(benchmarks/plain_loop.py) for full and LoRA on the same batches. In one process, the
contenders take turns (round-robin) for several rounds; each number is the median over rounds,
so a machine that slows down for a while slows all of them.

Also: padding efficiency (real tokens / processed tokens) of the batches, and the useful work
per second of full fine-tuning and LoRA (6 x non-embedding parameters x real tokens, the
training FLOPs of a dense transformer) against this machine's fp32 matmul rate, measured here.

    python benchmarks/step_speed.py --data ../shared/data/conll2003
    python benchmarks/step_speed.py --profile lora --steps 10     # torch.profiler table of one contender
    # some rows only (and full fine-tuning, which every ratio needs): minutes, not half an hour
    python benchmarks/step_speed.py --data ../shared/data/conll2003 --contender lora \
        --contender "plain loop: full" --contender "plain loop: lora" --out benchmarks/results/step_speed_overhead

Writes benchmarks/results/step_speed.md and step_speed.csv (or --out DIR) and prints the ratios.
"""

from __future__ import annotations

import argparse
import csv
import gc
import platform
import shlex
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import OmegaConf
from torch.utils.flop_counter import FlopCounterMode
from transformers import TrainerCallback

from peftlab.__main__ import config_dir
from peftlab.methods import serves
from peftlab.tasks.token_classification import TokenClassification
from peftlab.result import git_sha, package_versions
from peftlab.run import evaluation_order, loss_weighting, make_trainer, prepare
from plain_loop import (  # beside this script
    add_data_arguments,
    benchmark_config,
    check_steps,
    peftlab_batches,
    plain_model,
    quiet_libraries,
    train,
)

RESULTS = Path(__file__).resolve().parent / "results"
GOALS = {"lora": 0.75}  # step time as a share of full fine-tuning's; other PEFT methods: OTHER_GOAL
OTHER_GOAL = 0.85
PLAIN_GOAL = 1.05  # peftlab's step over the plain loop's, same method and batches
QUICK = dict(train_samples=64, batch_size=4, steps=4, rounds=2, matmul_size=256)


@dataclass(frozen=True)
class Contender:
    name: str
    loop: str  # "peftlab": Trainer via peftlab.run; "plain": benchmarks/plain_loop.py
    overrides: tuple[str, ...]


@dataclass
class Measured:
    contender: Contender
    seconds_per_step: list[float] = field(default_factory=list)  # one per round
    real_tokens: int = 0  # in the timed steps (all but the first)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds_per_step)


class StepClock(TrainerCallback):
    """The clock and the real tokens seen (Trainer's own count) at the end of every step."""

    def __init__(self) -> None:
        self.step_ends: list[float] = []
        self.tokens_seen: list[int] = []

    def on_step_end(self, args, state, control, **kwargs):
        self.step_ends.append(time.perf_counter())
        self.tokens_seen.append(state.num_input_tokens_seen)


def method_names() -> list[str]:
    """Every conf/method/*.yaml that trains on token classification (in-context prompting does
    not, and has no step), full fine-tuning first."""
    paths = sorted((Path(config_dir()) / "method").glob("*.yaml"))
    names = [path.stem for path in paths if serves(OmegaConf.load(path), TokenClassification)]
    return ["full"] + [name for name in names if name != "full"]


def contenders() -> list[Contender]:
    rows = [Contender("full, random batches", "peftlab", ("method=full", "trainer.group_by_length=false"))]
    rows += [Contender(name, "peftlab", (f"method={name}",)) for name in method_names()]
    rows.append(Contender("lora, dropout 0.1", "peftlab", ("method=lora", "method.dropout=0.1")))
    rows.append(Contender("dora, dropout 0.1", "peftlab", ("method=dora", "method.dropout=0.1")))
    # Where LoRA's own cost comes from: its rank-8 products (MKL is slow on an 8-wide result)
    # and the number of adapted layers (the LoRA paper adapted q and v only).
    rows.append(Contender("lora, r 16", "peftlab", ("method=lora", "method.r=16")))
    rows.append(Contender("lora, q and v only", "peftlab", ("method=lora", "method.targets=[attn_q,attn_v]")))
    rows += [Contender(f"plain loop: {name}", "plain", (f"method={name}",)) for name in ("full", "lora")]
    return rows


# Every ratio is against full fine-tuning, and the padding rows compare its two samplers.
ALWAYS_MEASURED = ("full, random batches", "full")


def chosen_contenders(names: list[str] | None) -> list[Contender]:
    """Every contender, or the ones named (plus ALWAYS_MEASURED), in the table's order."""
    every = contenders()
    if names is None:
        return every
    unknown = sorted(set(names) - {contender.name for contender in every})
    if unknown:
        raise SystemExit(f"--contender: no contender {unknown}; choose among {[c.name for c in every]}")
    return [contender for contender in every if contender.name in {*names, *ALWAYS_MEASURED}]


class Runner:
    """One contender, prepared once (data, model, method); each `measure` trains `steps` steps
    with a fresh optimizer on the same batches, continuing from the weights the last one left."""

    def __init__(self, contender: Contender, args: argparse.Namespace, scratch: Path) -> None:
        self.contender = contender
        self.cfg = benchmark_config(args, *contender.overrides)
        self.prepared = prepare(self.cfg)
        self.scratch = scratch
        self.plain = plain_model(self.cfg, len(self.prepared.task.labels)) if contender.loop == "plain" else None

    def measure(self) -> tuple[float, int]:
        """(seconds per step over steps 2..N, real tokens in those steps)."""
        if self.plain is not None:
            batches = peftlab_batches(self.cfg, self.prepared, self.cfg.trainer.max_steps)
            weighting = loss_weighting(self.cfg.trainer, self.prepared.encoded["train"])
            run = train(self.plain, batches, self.cfg, self.cfg.trainer.max_steps, weighting)
            return run.seconds_per_step(), run.tokens_after_first_step()
        clock = StepClock()
        trainer = make_trainer(self.cfg, self.prepared, self.scratch)
        trainer.add_callback(clock)
        trainer.train()
        steps = len(clock.step_ends) - 1
        return (clock.step_ends[-1] - clock.step_ends[0]) / steps, clock.tokens_seen[-1] - clock.tokens_seen[0]

    def model(self) -> torch.nn.Module:
        return self.plain if self.plain is not None else self.prepared.model


def padding(batches) -> tuple[int, int]:
    """(real tokens, processed tokens): every batch is padded to its longest sequence."""
    real = processed = 0
    for batch in batches:
        real += int(batch["attention_mask"].sum())
        processed += batch["attention_mask"].numel()
    return real, processed


def padding_rows(runners: dict[str, Runner], args: argparse.Namespace, scratch: Path) -> list[dict]:
    """Padding efficiency of what a run processes, without training: the benchmark's batches,
    a whole epoch of the subset and of the full training set, and validation/test in stored
    and in length order (evaluation batches)."""
    rows = []

    def add(what: str, batches) -> None:
        real, processed = padding(batches)
        rows.append({"name": what, "loop": "padding only", "real_tokens": real, "processed_tokens": processed,
                     "padding_efficiency": real / processed})

    subset = runners["full"].prepared
    whole = prepare(benchmark_config(args, "method=head_only", "task.max_train_samples=null"))
    for label, runner in (("random", runners["full, random batches"]), ("grouped", runners["full"])):
        cfg = runner.cfg
        add(f"train, {label}, the {args.steps} benchmark steps", peftlab_batches(cfg, subset, args.steps))
        add(f"train, {label}, an epoch of the {len(subset.encoded['train'])}-sentence subset",
            make_trainer(cfg, subset, scratch).get_train_dataloader())
        add(f"train, {label}, an epoch of the whole training set ({len(whole.encoded['train'])} sentences)",
            make_trainer(cfg, whole, scratch).get_train_dataloader())
        trainer = make_trainer(cfg, subset, scratch)
        order = "length order" if cfg.trainer.group_by_length else "stored order"
        for split in ("validation", "test"):
            dataset = evaluation_order(cfg.trainer, subset.encoded[split])
            add(f"{split}, {order}, batch {cfg.trainer.eval_batch_size}", trainer.get_eval_dataloader(dataset))
    return rows


def matmul_flops_per_second(size: int) -> float:
    """This machine's fp32 matmul rate at the current thread count: the median time of the
    product of two size x size matrices (2 size^3 FLOPs)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    return 2 * size**3 / median_seconds(lambda: a @ b, repeats=5)


def lora_backward_products(tokens: int, hidden: int, ffn: int, ranks: tuple[int, ...] = (8, 16)) -> list[dict]:
    """Seconds of the two products autograd computes for LoRA's B (out x r) in the backward
    pass, as torch computes them and transposed (the same numbers, the other way round):
    grad B = g^T h (out x r) and grad h = g B (tokens x r), g being the output's gradient
    (tokens x out) and h = A x (tokens x r). MKL is slow on a product whose result has few
    columns, so these cost far more than their FLOPs say."""
    rows = []
    for out in (hidden, ffn):
        for rank in ranks:
            g, h, b = torch.randn(tokens, out), torch.randn(tokens, rank), torch.randn(out, rank)
            rows.append({
                "tokens": tokens,
                "out": out,
                "rank": rank,
                "grad_B": median_seconds(lambda: g.t() @ h),
                "grad_B_transposed": median_seconds(lambda: (h.t() @ g).t()),
                "grad_h": median_seconds(lambda: g @ b),
                "grad_h_transposed": median_seconds(lambda: (b.t() @ g.t()).t()),
            })
    return rows


def median_seconds(product, repeats: int = 11) -> float:
    """Median wall time of `product()` over `repeats` calls, after one to warm up."""
    product()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        product()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def executed_flops_per_step(runner: Runner) -> float:
    """FLOPs torch executes for forward + backward over the timed steps' batches (padding
    included, optimizer not), counted by torch's FlopCounterMode, per step."""
    cfg = runner.cfg
    model = runner.model()
    model.train()
    batches = list(peftlab_batches(cfg, runner.prepared, cfg.trainer.max_steps))[1:]
    counter = FlopCounterMode(display=False)
    with counter:
        for batch in batches:
            model(**batch).loss.backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / len(batches)


def profile(name: str, args: argparse.Namespace, scratch: Path) -> None:
    """Where one contender's step goes: torch.profiler's operator table (CPU time and memory)."""
    chosen = {contender.name: contender for contender in contenders()}
    if name not in chosen:
        raise SystemExit(f"--profile {name!r}: choose one of {sorted(chosen)}")
    runner = Runner(chosen[name], args, scratch)
    runner.measure()  # warm up: optimizer state, allocator
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as profiler:
        seconds, _ = runner.measure()
    print(f"{name}: {seconds:.4f} s/step (under the profiler)")
    print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=30))


@dataclass
class Report:
    """Everything one benchmark run measured, for the table, the CSV and the printed ratios."""

    args: argparse.Namespace
    command: str
    train_sentences: int
    measured: dict[str, Measured]
    pads: list[dict]
    matmul_rate: float  # FLOP/s
    non_embedding_params: int
    executed: dict[str, float]  # FLOPs per step, by contender name
    products: list[dict]  # lora_backward_products

    @property
    def useful_per_token(self) -> int:
        return 6 * self.non_embedding_params

    def seconds(self, name: str) -> float:
        """Time of the timed steps (all but the first), at the median step."""
        return self.measured[name].median * (self.args.steps - 1)

    def useful_rate(self, name: str) -> float:
        return self.useful_per_token * self.measured[name].real_tokens / self.seconds(name)

    def ratio(self, name: str, reference: str = "full") -> float:
        return self.measured[name].median / self.measured[reference].median

    def padding(self, label: str) -> float:
        name = f"train, {label}, the {self.args.steps} benchmark steps"
        return next(row["padding_efficiency"] for row in self.pads if row["name"] == name)


def verdict(ratio: float, goal: float) -> str:
    return f"{ratio:.2f} (goal ≤ {goal}: {'met' if ratio <= goal else 'NOT met'})"


def ratio_lines(report: Report) -> list[str]:
    grouping = report.ratio("full", "full, random batches")
    lines = [
        f"- full fine-tuning, grouped / random batches: {grouping:.2f}× the step time; "
        f"padding efficiency {report.padding('random'):.2f} → {report.padding('grouped'):.2f}",
    ]
    measured = report.measured  # every contender, or those --contender chose
    for name in method_names()[1:]:
        if name in measured:
            lines.append(f"- {name} / full: {verdict(report.ratio(name), GOALS.get(name, OTHER_GOAL))}")
    for name in ("lora, dropout 0.1", "lora, r 16", "lora, q and v only", "dora"):
        if {name, "lora"} <= measured.keys():
            lines.append(f"- {name} / lora at its defaults: {report.ratio(name, 'lora'):.2f}")
    if {"dora, dropout 0.1", "lora, dropout 0.1"} <= measured.keys():
        old_dropout = report.ratio("dora, dropout 0.1", "lora, dropout 0.1")
        lines.append(f"- dora, dropout 0.1 / lora, dropout 0.1: {old_dropout:.2f}")
    for name in ("full", "lora"):
        if {name, f"plain loop: {name}"} <= measured.keys():
            ratio = report.ratio(name, f"plain loop: {name}")
            lines.append(f"- peftlab / plain loop, {name}: {verdict(ratio, PLAIN_GOAL)}")
    for name in [name for name in ("full", "lora") if name in measured]:
        share = report.useful_rate(name) / report.matmul_rate
        lines.append(f"- {name}: useful work {report.useful_rate(name):.4g} FLOP/s = {share:.2f} of this machine's "
                     "fp32 matmul rate")
    return lines


def csv_rows(report: Report) -> list[dict]:
    """One row per contender, padding measurement and LoRA product; columns a row lacks stay empty."""
    rows = []
    for name, m in report.measured.items():
        rows.append({
            "name": name,
            "loop": m.contender.loop,
            "overrides": " ".join(m.contender.overrides),
            "s_per_step_median": f"{m.median:.4f}",
            "s_per_step_rounds": " ".join(f"{seconds:.4f}" for seconds in m.seconds_per_step),
            "ratio_vs_full": f"{report.ratio(name):.3f}",
            "real_tokens": m.real_tokens,
            "real_tokens_per_s": f"{m.real_tokens / report.seconds(name):.0f}",
            "useful_flop_per_s": f"{report.useful_rate(name):.4g}",
            "executed_flop_per_step": f"{report.executed[name]:.4g}" if name in report.executed else "",
        })
    rows += [{**row, "padding_efficiency": f"{row['padding_efficiency']:.3f}"} for row in report.pads]
    for product in report.products:
        for name in ("grad_B", "grad_h"):
            rows.append({
                "name": f"lora backward {name}, out {product['out']}, r {product['rank']}, {product['tokens']} tokens",
                "loop": "matmul only",
                "seconds": f"{product[name]:.3g}",
                "seconds_transposed": f"{product[name + '_transposed']:.3g}",
            })
    return rows


def markdown(report: Report, rows: list[dict]) -> str:
    sections = [header(report), step_table(rows), ["## Ratios", "", *ratio_lines(report)], padding_table(report),
                work_table(report), products_table(report)]
    return "\n\n".join("\n".join(lines) for lines in sections) + "\n"


def header(report: Report) -> list[str]:
    args, versions = report.args, package_versions()
    return [
        "# Training step speed: peftlab's step, method by method, and a plain loop",
        "",
        f"Command: `{report.command}`  ",
        f"git {git_sha() or 'unknown'}; torch {versions.get('torch')}, transformers {versions.get('transformers')}, "
        f"peft {versions.get('peft')}; {torch.get_num_threads()} torch threads on "
        f"{platform.processor() or platform.machine()}, {time.strftime('%Y-%m-%d')}.  ",
        f"Data: CoNLL-2003 train ({args.data}), {report.train_sentences} training sentences (a random subset, "
        f"task.data_seed 0), MiniLM token classification, batch {args.batch_size}, {args.steps} steps per "
        f"measurement (the first is not timed), {args.rounds} rounds: the contenders take turns, and each number is "
        "the median over rounds. Every peftlab row is `prepare()` + `make_trainer()` + `Trainer.train()` with the "
        "overrides shown, evaluation off, on length-grouped batches unless it says random. Raw numbers: "
        "step_speed.csv.",
    ]


def step_table(rows: list[dict]) -> list[str]:
    lines = ["| contender | overrides | s/step | × full | real tokens/s | s/step per round |",
             "|---|---|---:|---:|---:|---|"]
    for row in rows:
        if row["loop"] in ("peftlab", "plain"):
            lines.append(f"| {row['name']} | `{row['overrides']}` | {row['s_per_step_median']} | "
                         f"{row['ratio_vs_full']} | {row['real_tokens_per_s']} | {row['s_per_step_rounds']} |")
    return lines


def padding_table(report: Report) -> list[str]:
    lines = ["## Padding efficiency (real tokens / processed tokens)", "",
             "| batches | real tokens | processed | efficiency |", "|---|---:|---:|---:|"]
    for row in report.pads:
        lines.append(f"| {row['name']} | {row['real_tokens']:,} | {row['processed_tokens']:,} | "
                     f"{row['padding_efficiency']:.3f} |")
    return lines


def work_table(report: Report) -> list[str]:
    lines = [
        "## Work per second",
        "",
        f"Useful work: 6 × {report.non_embedding_params:,} non-embedding parameters = {report.useful_per_token:.4g} "
        "FLOPs per real token (forward and backward of a dense transformer; LoRA computes no weight gradients for "
        "the frozen base, so it executes less than that). Executed: torch's FlopCounterMode over forward + backward "
        "of the same batches, padding included, optimizer not.",
        "",
        "| contender | useful FLOP/s | share of the fp32 matmul rate | executed FLOPs per step |",
        "|---|---:|---:|---:|",
    ]
    for name in report.executed:
        share = report.useful_rate(name) / report.matmul_rate
        lines.append(f"| {name} | {report.useful_rate(name):.4g} | {share:.2f} | {report.executed[name]:.4g} |")
    size = report.args.matmul_size
    lines += ["", f"fp32 matmul rate of this machine: {report.matmul_rate:.4g} FLOP/s (median of 5 products of two "
              f"{size}×{size} matrices, same threads)."]
    return lines


def products_table(report: Report) -> list[str]:
    lines = [
        "## LoRA's backward products",
        "",
        f"The two products autograd computes for each LoRA B matrix, at {report.products[0]['tokens']} tokens (the "
        "benchmark's mean processed tokens per step), as torch computes them and transposed (the same numbers). "
        "Median seconds of 11.",
        "",
        "| layer output | rank | grad B = gᵀh | transposed | grad h = gB | transposed |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for p in report.products:
        lines.append(f"| {p['out']} | {p['rank']} | {p['grad_B']:.3g} | {p['grad_B_transposed']:.3g} | "
                     f"{p['grad_h']:.3g} | {p['grad_h_transposed']:.3g} |")
    return lines


def write(report: Report, out: Path) -> None:
    rows = csv_rows(report)
    out.mkdir(parents=True, exist_ok=True)
    with (out / "step_speed.csv").open("w", newline="") as file:
        writer = csv.DictWriter(
            file, fieldnames=list(rows[0]) + ["processed_tokens", "padding_efficiency", "seconds", "seconds_transposed"]
        )
        writer.writeheader()
        writer.writerows(rows)
    (out / "step_speed.md").write_text(markdown(report, rows))


def measure_rounds(runners: list[Runner], rounds: int) -> dict[str, Measured]:
    """Round-robin: every contender once per round, in the same order, `rounds` times."""
    measured = {runner.contender.name: Measured(runner.contender) for runner in runners}
    for round_number in range(rounds):
        for runner in runners:
            seconds, tokens = runner.measure()
            entry = measured[runner.contender.name]
            entry.seconds_per_step.append(seconds)
            entry.real_tokens = tokens
        print(f"round {round_number + 1}/{rounds}: "
              + ", ".join(f"{name} {m.seconds_per_step[-1]:.3f}" for name, m in measured.items()), flush=True)
    check_same_batches(measured)
    return measured


def check_same_batches(measured: dict[str, Measured]) -> None:
    """Every length-grouped contender must have trained on the same tokens: the comparison is
    meaningless otherwise (a sampler that drew a different order, say)."""
    grouped = {name: m.real_tokens for name, m in measured.items() if "random" not in name}
    if len(set(grouped.values())) != 1:
        raise SystemExit(f"the contenders did not train on the same batches (real tokens per contender: {grouped})")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_data_arguments(parser)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--matmul-size", type=int, default=2048, help="square matrices for the machine's fp32 rate")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for step_speed.md and step_speed.csv")
    parser.add_argument("--quick", action="store_true", help=f"tiny numbers for a smoke test: {QUICK}")
    parser.add_argument("--contender", action="append", dest="contenders", metavar="NAME",
                        help="measure this contender (repeat the flag for more) and full fine-tuning only "
                             "(full and 'full, random batches' always run); default: every contender")
    parser.add_argument("--profile", metavar="CONTENDER",
                        help="print torch.profiler's table for one contender's steps; writes nothing")
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    torch.set_num_threads(args.threads)
    quiet_libraries()
    with tempfile.TemporaryDirectory() as scratch_dir:
        scratch = Path(scratch_dir)
        if args.profile:
            profile(args.profile, args, scratch)
            return
        first, *others = chosen_contenders(args.contenders)
        runners = {first.name: Runner(first, args, scratch)}
        check_steps(args, len(runners[first.name].prepared.encoded["train"]))
        runners.update({contender.name: Runner(contender, args, scratch) for contender in others})
        # Everything built so far lives to the end: keep the garbage collector from walking it
        # again in every collection (Trainer.train starts with one), which slows the steps too.
        gc.freeze()
        measured = measure_rounds(list(runners.values()), args.rounds)
        gc.unfreeze()
        full = runners["full"].prepared
        pads = padding_rows(runners, args, scratch)
        grouped = f"train, grouped, the {args.steps} benchmark steps"
        benchmark_steps = next(row for row in pads if row["name"] == grouped)
        report = Report(
            args=args,
            command=shlex.join(["python", "benchmarks/step_speed.py", *argv]),
            train_sentences=len(full.encoded["train"]),
            measured=measured,
            pads=pads,
            matmul_rate=matmul_flops_per_second(args.matmul_size),
            non_embedding_params=full.model.num_parameters(exclude_embeddings=True),
            executed={name: executed_flops_per_step(runners[name]) for name in ("full", "lora") if name in runners},
            products=lora_backward_products(
                benchmark_steps["processed_tokens"] // args.steps,
                full.model.config.hidden_size,
                full.model.config.intermediate_size,
            ),
        )
    write(report, args.out)
    for line in ratio_lines(report):
        print(line)
    print(f"wrote {args.out / 'step_speed.md'} and {args.out / 'step_speed.csv'}")


if __name__ == "__main__":
    main()
