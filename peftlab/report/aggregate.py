"""Aggregation: the successful runs grouped into tables of runs that differ only in method and
seed (peftlab/report/comparison.py decides what may share a table), one row per method and
variant (its runs' differing training settings, never pooled) with its means over seeds, the
best row per budget of trainable parameters, and the notes and checks a reader needs beside
the numbers. Pure: numbers in, numbers out; tables.py puts them in words."""

from __future__ import annotations

import math
import statistics
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from peftlab.report.comparison import (
    DEFAULT_BIMODAL_RATIO,
    DEFAULT_CONVERGED_DELTA,
    MIN_EVALUATIONS,
    UNKNOWN,
    budget_differences,
    config_value,
    convergence,
    group_settings,
    is_bimodal,
    shown,
)
from peftlab.report.read import Run, Unreadable
from peftlab.result import Forgetting, finite, primary_score

FULL = "full"
BUDGETS = (0.1, 1.0, 10.0, None)  # % of the base that trains; None: no limit
MB = 2**20  # the MB of peak_rss_mb / peak_cuda_mb in result.json (peftlab/measure.py)
MISSING = "n/a"
VALIDATION_MARK = "†"
FLAG = "⚠"
SPLITS = ("train", "validation", "test")
EVAL_SUBSAMPLE = "task.max_eval_samples"
TRAINING_SECTIONS = ("method", "trainer")
# trainer keys that change how a run is watched, saved or placed on the machine, never the
# weights it trains or its scores (conf/trainer/default.yaml, peftlab/config.py TrainerConfig):
# progress_bar and logging_steps print, save_every and keep_checkpoints write resume checkpoints
# (no random number is drawn for them), eval_batch_size batches the masked, padded evaluation,
# threads moves train s the way a busier or quieter machine does. Every other method.* and
# trainer.* key splits a row: the learning rate, the budget, the batches (group_by_length), the
# evaluations that select_best and early stopping choose from, and gradient_checkpointing, which
# keeps the numbers but is set to change the peak memory the table compares.
BOOKKEEPING = frozenset(
    f"trainer.{key}"
    for key in ("progress_bar", "logging_steps", "save_every", "keep_checkpoints", "eval_batch_size", "threads")
)
DERIVED_PREFIX = "method.peft."  # the peft config, filled from the method's own knobs by interpolation

Settings = tuple[tuple[str, str], ...]
GroupKey = tuple[str, str, str, str, str, Settings]
Item = TypeVar("Item")


@dataclass(frozen=True)
class Thresholds:
    """The report's judgement calls, each a command-line option (peftlab/report/comparison.py has
    the rules): points a run may still gain over its last two evaluations and count as converged
    (`--converged-delta`), and the lowest seed's share of the highest below which a method's
    seeds are flagged bimodal (`--bimodal-ratio`)."""

    converged_delta: float = DEFAULT_CONVERGED_DELTA
    bimodal_ratio: float = DEFAULT_BIMODAL_RATIO


@dataclass
class MethodRow:
    """One method in one group, at one variant: means over its successful runs. Metric values
    are in points (x100); `seeds` has one entry per run, so a repeated seed shows twice."""

    method: str
    variant: str  # "dropout=0.1": the training settings that tell it from the method's other rows; "" if none
    seeds: list[int]
    scores: list[float]  # the primary metric of each run, in seed order
    trainable: float | None
    trainable_pct: float | None
    metric_mean: float
    metric_std: float | None  # sample std (ddof=1); None for a single run
    delta_vs_full: float | None  # None for full itself and where the group has no successful full run
    peak_rss_mb: float | None
    peak_cuda_mb: float | None
    train_seconds: float | None
    samples_per_second: float | None
    checkpoint_mb: float | None
    lm_loss_change: float | None  # held-out LM loss after - before (result.json forgetting); None: not measured
    lm_loss_change_std: float | None  # sample std; None for a single run
    budget_differences: list[str] = field(default_factory=list)  # vs full's budget: its Δ is marked
    not_converged: list[tuple[int, float]] = field(default_factory=list)  # (seed, points gained at the end)
    convergence_unknown: list[tuple[int, int]] = field(default_factory=list)  # (seed, evaluations)
    bimodal: bool = False
    note_marks: list[int] = field(default_factory=list)  # numbers of the group's run notes its runs carry

    @property
    def n(self) -> int:
        return len(self.seeds)

    @property
    def label(self) -> str:
        """The row's name in tables, notes and legends: `lora`, or `lora (dropout=0.1)`."""
        return row_label(self.method, self.variant)


@dataclass
class Group:
    """The successful runs that differ only in method and seed (same task, dataset contents,
    backbone and model source, quantization, subsample, data seed, max length and primary
    metric): the only runs whose numbers may be compared with each other."""

    task: str
    dataset: str
    backbone: str
    quant: str
    primary_metric: str
    settings: Settings  # (config key, value) that every run here shares, comparison.group_settings
    split: str  # "test", or "validation" when some run of the group has no test split
    runs_without_test: int
    rows: list[MethodRow]
    best: list[tuple[float | None, MethodRow | None]]  # (budget in % trainable, best row) per budget
    notes: list[str]
    curves: dict[str, list[tuple[float, float]]]  # row label -> (step, validation metric in points)
    data_sizes: dict[str, list[int]]  # split -> the example counts its runs recorded (one, normally)
    run_notes: list[str]  # result.json notes, numbered in order: "[1] who: what"
    checks: list[str]  # convergence and bimodality, in words
    variants: dict[str, str]  # run path -> its row's variant
    distinguishing: Settings = ()  # settings that tell this table from another with the same heading
    held_out: list[Forgetting] = field(default_factory=list)  # the runs' forgetting records, where measured

    @property
    def key(self) -> GroupKey:
        return (self.task, self.dataset, self.backbone, self.quant, self.primary_metric, self.settings)

    @property
    def budget_warnings(self) -> list[str]:
        return [f"`{row.label}`: {', '.join(row.budget_differences)}" for row in self.rows if row.budget_differences]

    def metric_label(self) -> str:
        return metric_label(self.split, self.settings, self.data_sizes)


@dataclass
class Report:
    directory: Path
    runs: list[Run]  # ok and failed, in path order
    unreadable: list[Unreadable]
    groups: list[Group]
    thresholds: Thresholds = Thresholds()

    @property
    def failed(self) -> list[Run]:
        return [run for run in self.runs if run.status == "failed"]


def build_report(
    directory: Path, runs: list[Run], unreadable: list[Unreadable], thresholds: Thresholds = Thresholds()
) -> Report:
    successful = group_by([run for run in runs if run.status == "ok"], group_key)
    groups = [build_group(key, members, thresholds) for key, members in sorted(successful.items())]
    mark_distinguishing(groups)
    return Report(directory, runs, unreadable, groups, thresholds)


def group_key(run: Run) -> GroupKey:
    return run.task, run.dataset, run.backbone, run.quant, str(run.primary_metric), group_settings(run)


def build_group(key: GroupKey, runs: list[Run], thresholds: Thresholds = Thresholds()) -> Group:
    split = metric_split(runs)
    variants = {
        run.path: variant
        for members in group_by(runs, lambda run: run.method).values()
        for run, variant in zip(members, variant_labels(members))
    }
    by_row = group_by(runs, lambda run: row_label(run.method, variants[run.path]))
    full_runs = [members for members in by_row.values() if members[0].method == FULL]
    reference = full_runs[0] if len(full_runs) == 1 else None
    full_mean = statistics.fmean(metric_values(reference, split)) if reference else None
    rows = sorted(
        (
            method_row(members[0].method, variants[members[0].path], members, split, full_mean, thresholds)
            for members in by_row.values()
        ),
        key=_row_order,
    )
    for row in rows:
        if row.method != FULL and reference and not trained_nothing(by_row[row.label]):
            row.budget_differences = budget_differences(by_row[row.label], reference)
    notes = seed_notes(by_row) + untrained_notes(rows, by_row) + reference_notes(rows)
    return Group(
        *key,
        split=split,
        runs_without_test=sum(not _has_test(run) for run in runs),
        rows=rows,
        best=best_per_budget(rows),
        notes=notes,
        curves=learning_curves(by_row, key[4]),
        data_sizes=data_sizes(runs),
        run_notes=number_run_notes(rows, by_row),
        checks=check_lines(rows, thresholds),
        variants=variants,
        held_out=[run.forgetting for run in runs if run.forgetting is not None],
    )


def reference_notes(rows: list[MethodRow]) -> list[str]:
    """Why Δ vs full is n/a: no full run, or full runs configured differently, none of which is
    more the reference than another (a sweep over full's learning rate: pick one, then compare)."""
    full_rows = [row.label for row in rows if row.method == FULL]
    if not full_rows:
        return [f"no successful `{FULL}` run in this group, so Δ vs full is {MISSING}."]
    if len(full_rows) > 1:
        return [
            f"`{FULL}` has {len(full_rows)} variants here ({', '.join(f'`{label}`' for label in full_rows)}), none of "
            f"them the reference, so Δ vs full is {MISSING}: report one of them in a folder of its own for Δ."
        ]
    return []


def row_label(method: str, variant: str) -> str:
    return f"{method} ({variant})" if variant else method


def training_settings(run: Run, ignored: Iterable[str] = ()) -> dict[str, str]:
    """The run's method.* and trainer.* settings that can change what it trains (all but
    BOOKKEEPING and `ignored`), flattened to dotted keys, each value as comparison.shown writes it."""
    flat = _flatten({name: run.config.get(name) or {} for name in TRAINING_SECTIONS})
    left_out = BOOKKEEPING.union(ignored)
    return {key: shown(config_value(run, key)) for key in flat if key not in left_out}


def variant_labels(runs: list[Run], ignored: Iterable[str] = ()) -> list[str]:
    """Each of one method's runs in one table, named by the training settings on which that
    method's runs differ ("dropout=0.1, r=16"; "" where they all agree), so runs configured
    differently are never pooled into a mean ± std that reads like seed variance. A key that is a
    copy of another (the same value on every run: method.peft.lora_dropout is method.dropout,
    trainer.lr is method.lr by interpolation) is named once, by the key a user sets."""
    settings = [training_settings(run, ignored) for run in runs]
    keys = sorted(set().union(*settings))
    columns = {key: tuple(one.get(key, UNKNOWN) for one in settings) for key in keys}
    differing = [key for key in keys if len(set(columns[key])) > 1]
    kept: dict[tuple[str, ...], str] = {}
    for key in sorted(differing, key=_user_facing_first):
        kept.setdefault(columns[key], key)
    names = short_names(sorted(kept.values()))
    return [", ".join(f"{names[key]}={one.get(key, UNKNOWN)}" for key in sorted(kept.values())) for one in settings]


def _user_facing_first(key: str) -> tuple[bool, int, str]:
    return key.startswith(DERIVED_PREFIX), key.count("."), key


def short_names(keys: list[str]) -> dict[str, str]:
    """Each dotted key by its shortest ending that no other key shares: `dropout`, but
    `peft.r` and `method.r` where both are shown."""
    names = {}
    for key in keys:
        parts = key.split(".")
        for length in range(1, len(parts) + 1):
            ending = ".".join(parts[-length:])
            if not any(other != key and (other == ending or other.endswith("." + ending)) for other in keys):
                break
        names[key] = ending
    return names


def mark_distinguishing(groups: list[Any]) -> None:
    """Groups that would get the same heading (the first five parts of their key: task, dataset,
    backbone, quant or method, metric) differ in some setting: name it in each of their headings,
    so two tables never look alike."""
    by_heading = group_by(groups, lambda group: group.key[:5])
    for alike in by_heading.values():
        if len(alike) < 2:
            continue
        keys = {key for group in alike for key, _ in group.settings}
        differing = {key for key in keys if len({dict(group.settings).get(key, UNKNOWN) for group in alike}) > 1}
        for group in alike:
            group.distinguishing = tuple((key, value) for key, value in group.settings if key in differing)


def metric_split(runs: list[Run]) -> str:
    """test when every run has it, else validation for all: rows of one table are compared, so
    they must be scored on the same split."""
    return "test" if all(_has_test(run) for run in runs) else "validation"


def _has_test(run: Run) -> bool:
    return primary_score(run, "test") is not None


def metric_label(split: str, settings: Settings, sizes: dict[str, list[int]]) -> str:
    """Where a metric column's numbers come from: the split, and its size where
    `task.max_eval_samples` cut it."""
    mark = VALIDATION_MARK if split == "validation" else ""
    cap = dict(settings).get(EVAL_SUBSAMPLE, UNKNOWN)
    if cap in (UNKNOWN, "null"):
        return split + mark
    counts = sizes.get(split)
    if not counts:  # a file from before data_sizes: only the cap is known
        return f"{split}{mark}, at most {int(cap):,} ({EVAL_SUBSAMPLE})"
    if counts == [int(cap)]:
        return f"{split}{mark}, subsampled: {int(cap):,}"
    return split + mark


def metric_values(runs: list[Run], split: str) -> list[float]:
    """The primary metric of each run on `split`, in points (x100)."""
    return [100 * primary_score(run, split) for run in runs]


def method_row(
    method: str, variant: str, runs: list[Run], split: str, full_mean: float | None,
    thresholds: Thresholds = Thresholds(),
) -> MethodRow:
    by_seed = sorted(runs, key=lambda run: run.seed)
    values = metric_values(by_seed, split)
    mean = statistics.fmean(values)
    curves = [(run.seed, convergence(run)) for run in by_seed]
    params = [run.params for run in runs if run.params]
    memory = [run.memory for run in runs if run.memory]
    timing = [run.timing for run in runs if run.timing]
    changes = [finite(run.forgetting.lm_loss_change) for run in by_seed if run.forgetting]
    changes = [change for change in changes if change is not None]
    return MethodRow(
        method=method,
        variant=variant,
        seeds=[run.seed for run in by_seed],
        scores=values,
        trainable=mean_of(count.trainable for count in params),
        trainable_pct=mean_of(count.trainable_pct for count in params),
        metric_mean=mean,
        metric_std=statistics.stdev(values) if len(values) > 1 else None,
        delta_vs_full=None if method == FULL or full_mean is None else mean - full_mean,
        peak_rss_mb=mean_of(peak.peak_rss_mb for peak in memory),
        peak_cuda_mb=mean_of(peak.peak_cuda_mb for peak in memory),
        train_seconds=mean_of(times.train_seconds for times in timing),
        samples_per_second=mean_of(times.train_samples_per_second for times in timing),
        checkpoint_mb=mean_of((run.checkpoint.size_bytes for run in runs if run.checkpoint), scale=1 / MB),
        lm_loss_change=statistics.fmean(changes) if changes else None,
        lm_loss_change_std=statistics.stdev(changes) if len(changes) > 1 else None,
        not_converged=[
            (seed, curve.gain) for seed, curve in curves if curve.converged(thresholds.converged_delta) is False
        ],
        convergence_unknown=[] if trained_nothing(runs) else [
            (seed, curve.evaluations) for seed, curve in curves if curve.gain is None
        ],
        bimodal=is_bimodal(values, thresholds.bimodal_ratio),
    )


def trained_nothing(runs: list[Run]) -> bool:
    """A method that trains no parameter (in-context prompting): its runs evaluate the model as
    loaded, so no training budget, curve or convergence applies to them."""
    return all(run.params is not None and run.params.trainable == 0 for run in runs)


def untrained_notes(rows: list[MethodRow], by_row: dict[str, list[Run]]) -> list[str]:
    """What a row of a method that trained nothing means, so its Δ and times are read as such."""
    return [
        f"`{row.label}` trains nothing (0 parameters; the model is evaluated as loaded): its Δ vs full is what "
        "training adds over the untrained model, its train s is 0, and no budget or convergence applies to it."
        for row in rows
        if trained_nothing(by_row[row.label])
    ]


def data_sizes(runs: list[Run]) -> dict[str, list[int]]:
    """split -> the distinct example counts the runs recorded (`data_sizes` in result.json);
    runs from before that field add nothing."""
    sizes: dict[str, set[int]] = defaultdict(set)
    for run in runs:
        for split in SPLITS:
            if split in run.data_sizes:
                sizes[split].add(run.data_sizes[split])
    return {split: sorted(sizes[split]) for split in SPLITS if sizes[split]}


def number_run_notes(rows: list[MethodRow], by_row: dict[str, list[Run]]) -> list[str]:
    """The runs' own `notes` (a validation split carved from train, no test split, ...), each
    text once, numbered in table order; each row learns the numbers its runs carry."""
    carriers: dict[str, list[tuple[str, int]]] = {}
    for row in rows:
        for run in sorted(by_row[row.label], key=lambda run: run.seed):
            for note in run.notes:
                carriers.setdefault(note, []).append((row.label, run.seed))
    every_run = sum(row.n for row in rows)
    numbered = []
    for number, (text, runs) in enumerate(carriers.items(), start=1):
        for row in rows:
            if any(label == row.label for label, _ in runs):
                row.note_marks.append(number)
        numbered.append(f"[{number}] {_carriers(runs, every_run)}: {text}")
    return numbered


def _carriers(runs: list[tuple[str, int]], every_run: int) -> str:
    """"every run", or "`lora` seeds 0, 1; `full` seed 2"."""
    if len(runs) == every_run:
        return "every run"
    seeds: dict[str, list[int]] = defaultdict(list)
    for label, seed in runs:
        seeds[label].append(seed)
    return "; ".join(f"`{label}` {_seeds(members)}" for label, members in seeds.items())


def _unknown_runs(unknown: list[tuple[str, int, int]], every_run: int) -> str:
    """"every run, 0 evaluations each", or "`lora` seeds 0, 1: 2 evaluations; `full` seed 0: 0 evaluations"."""
    counts = {count for _, _, count in unknown}
    if len(unknown) == every_run and len(counts) == 1:
        return f"every run, {_evaluations(counts.pop())} each"
    seeds: dict[tuple[str, int], list[int]] = defaultdict(list)
    for label, seed, count in unknown:
        seeds[label, count].append(seed)
    return "; ".join(
        f"`{label}` {_seeds(members)}: {_evaluations(count)}" for (label, count), members in seeds.items()
    )


def _seeds(seeds: list[int]) -> str:
    return f"seed{'s' * (len(seeds) > 1)} {', '.join(map(str, seeds))}"


def _evaluations(count: int) -> str:
    return f"{count} evaluation{'s' * (count != 1)}"


def check_lines(rows: list[MethodRow], thresholds: Thresholds) -> list[str]:
    """Convergence and bimodality in words, one line per row that has something to say, and
    one line for every run whose convergence cannot be told."""
    lines = []
    for row in rows:
        if row.bimodal:
            scores = ", ".join(f"{score:.2f}" for score in row.scores)
            lines.append(
                f"`{row.label}` is bimodal ({FLAG}): its runs score {scores}, the lowest below "
                f"{thresholds.bimodal_ratio:g} × the highest; some seeds learned and others stayed near the trivial "
                "predictor, so its mean ± std describes no run. Look at the runs in results.csv; run more seeds."
            )
        if row.not_converged:
            gains = ", ".join(f"seed {seed} +{gain:.2f}" for seed, gain in row.not_converged)
            lines.append(
                f"`{row.label}` not converged ({FLAG}) in {len(row.not_converged)} of {row.n} runs ({gains} points "
                f"over the last two evaluations, more than --converged-delta {thresholds.converged_delta:g}): "
                "it was still improving when training stopped; train longer before ranking it."
            )
    unknown = [(row.label, seed, count) for row in rows for seed, count in row.convergence_unknown]
    if unknown:
        lines.append(
            f"convergence unknown (fewer than {MIN_EVALUATIONS} validation evaluations during training; "
            "`trainer.eval_strategy=steps` or `epoch` logs them): "
            f"{_unknown_runs(unknown, sum(row.n for row in rows))}."
        )
    return lines


def mean_of(values: Iterable[float | None], scale: float = 1.0) -> float | None:
    """Mean of the finite numbers among `values` (a GPU-less run has no peak_cuda_mb, an older
    one no model_bytes); None if there is none."""
    numbers = [number for number in map(finite, values) if number is not None]
    return scale * statistics.fmean(numbers) if numbers else None


def _row_order(row: MethodRow) -> tuple[bool, float, str, str]:
    return row.method == FULL, math.inf if row.trainable is None else row.trainable, row.method, row.variant


def best_per_budget(rows: list[MethodRow]) -> list[tuple[float | None, MethodRow | None]]:
    """The best mean metric among the methods that train at most `budget` % of the base. `rows`
    are sorted by size and max() keeps the first of equals, so a tie goes to the smaller method."""
    best = []
    for budget in BUDGETS:
        within = [
            row for row in rows
            if budget is None or (row.trainable_pct is not None and row.trainable_pct <= budget)
        ]
        best.append((budget, max(within, key=lambda row: row.metric_mean, default=None)))
    return best


def seed_notes(by_row: dict[str, list[Run]]) -> list[str]:
    """Repeated seeds within a row (kept in the stats, but probably a sweep run twice into one
    folder) and seeds a row lacks that others have (its n is smaller: a failed or missing run)."""
    notes = []
    every_seed = {run.seed for runs in by_row.values() for run in runs}
    for label, runs in sorted(by_row.items()):
        counts = Counter(run.seed for run in runs)
        for seed, count in sorted(counts.items()):
            if count > 1:
                paths = ", ".join(f"`{run.path}`" for run in runs if run.seed == seed)
                notes.append(f"`{label}` seed {seed} has {count} runs ({paths}); all are in its stats.")
        missing = sorted(every_seed - counts.keys())
        if missing:
            notes.append(
                f"`{label}` has no successful run for seed{'s' * (len(missing) > 1)} {', '.join(map(str, missing))} "
                f"(other rows have one), so its n is {len(runs)}."
            )
    return notes


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def learning_curves(by_row: dict[str, list[Run]], primary: str) -> dict[str, list[tuple[float, float]]]:
    """Validation primary metric (points) by training step, the mean over the seeds logged at
    that step, per row label; rows whose runs logged no validation point are left out."""
    key = f"validation_{primary}"
    curves = {}
    for label, runs in by_row.items():
        by_step: dict[float, list[float]] = defaultdict(list)
        for run in runs:
            for point in run.history:
                step, value = finite(point.get("step")), finite(point.get(key))
                if step is not None and value is not None:
                    by_step[step].append(100 * value)
        if by_step:
            curves[label] = [(step, statistics.fmean(values)) for step, values in sorted(by_step.items())]
    return curves


def group_by(items: Iterable[Item], key: Callable[[Item], Any]) -> dict[Any, list[Item]]:
    groups: dict[Any, list[Item]] = defaultdict(list)
    for item in items:
        groups[key(item)].append(item)
    return dict(groups)
