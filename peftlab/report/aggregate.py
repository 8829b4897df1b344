"""Aggregation: the successful runs grouped into tables of runs that differ only in method and
seed (peftlab/report/comparison.py decides what may share a table), one row per method with its
means over seeds, the best method per budget of trainable parameters, and the notes and checks
a reader needs beside the numbers. Pure: numbers in, numbers out; tables.py puts them in words."""

from __future__ import annotations

import json
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
    convergence,
    group_settings,
    is_bimodal,
)
from peftlab.report.read import Run, Unreadable, finite, primary_score
from peftlab.result import Forgetting

FULL = "full"
BUDGETS = (0.1, 1.0, 10.0, None)  # % of the base that trains; None: no limit
MB = 2**20  # the MB of peak_rss_mb / peak_cuda_mb in result.json (peftlab/measure.py)
MISSING = "n/a"
VALIDATION_MARK = "†"
FLAG = "⚠"
SPLITS = ("train", "validation", "test")
EVAL_SUBSAMPLE = "task.max_eval_samples"

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
    """One method in one group: means over its successful runs. Metric values are in points
    (x100); `seeds` has one entry per run, so a repeated seed shows twice."""

    method: str
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
    curves: dict[str, list[tuple[float, float]]]  # method -> (step, validation metric in points)
    data_sizes: dict[str, list[int]]  # split -> the example counts its runs recorded (one, normally)
    run_notes: list[str]  # result.json notes, numbered in order: "[1] who: what"
    checks: list[str]  # convergence and bimodality, in words
    distinguishing: Settings = ()  # settings that tell this table from another with the same heading
    held_out: list[Forgetting] = field(default_factory=list)  # the runs' forgetting records, where measured

    @property
    def key(self) -> GroupKey:
        return (self.task, self.dataset, self.backbone, self.quant, self.primary_metric, self.settings)

    @property
    def budget_warnings(self) -> list[str]:
        return [f"`{row.method}`: {', '.join(row.budget_differences)}" for row in self.rows if row.budget_differences]

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
    by_method = group_by(runs, lambda run: run.method)
    full_mean = statistics.fmean(metric_values(by_method[FULL], split)) if FULL in by_method else None
    rows = sorted(
        (method_row(method, members, split, full_mean, thresholds) for method, members in by_method.items()),
        key=_row_order,
    )
    for row in rows:
        if row.method != FULL and FULL in by_method and not trained_nothing(by_method[row.method]):
            row.budget_differences = budget_differences(by_method[row.method], by_method[FULL])
    notes = seed_notes(by_method) + pooling_notes(by_method) + untrained_notes(rows, by_method)
    if full_mean is None:
        notes.append(f"no successful `{FULL}` run in this group, so Δ vs full is {MISSING}.")
    return Group(
        *key,
        split=split,
        runs_without_test=sum(not _has_test(run) for run in runs),
        rows=rows,
        best=best_per_budget(rows),
        notes=notes,
        curves=learning_curves(by_method, key[4]),
        data_sizes=data_sizes(runs),
        run_notes=number_run_notes(rows, by_method),
        checks=check_lines(rows, thresholds),
        held_out=[run.forgetting for run in runs if run.forgetting is not None],
    )


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
    method: str, runs: list[Run], split: str, full_mean: float | None, thresholds: Thresholds = Thresholds()
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


def untrained_notes(rows: list[MethodRow], by_method: dict[str, list[Run]]) -> list[str]:
    """What a row of a method that trained nothing means, so its Δ and times are read as such."""
    return [
        f"`{row.method}` trains nothing (0 parameters; the model is evaluated as loaded): its Δ vs full is what "
        "training adds over the untrained model, its train s is 0, and no budget or convergence applies to it."
        for row in rows
        if trained_nothing(by_method[row.method])
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


def number_run_notes(rows: list[MethodRow], by_method: dict[str, list[Run]]) -> list[str]:
    """The runs' own `notes` (a validation split carved from train, no test split, ...), each
    text once, numbered in table order; each row learns the numbers its runs carry."""
    carriers: dict[str, list[tuple[str, int]]] = {}
    for row in rows:
        for run in sorted(by_method[row.method], key=lambda run: run.seed):
            for note in run.notes:
                carriers.setdefault(note, []).append((row.method, run.seed))
    every_run = sum(row.n for row in rows)
    numbered = []
    for number, (text, runs) in enumerate(carriers.items(), start=1):
        for row in rows:
            if any(method == row.method for method, _ in runs):
                row.note_marks.append(number)
        numbered.append(f"[{number}] {_carriers(runs, every_run)}: {text}")
    return numbered


def _carriers(runs: list[tuple[str, int]], every_run: int) -> str:
    """"every run", or "`lora` seeds 0, 1; `full` seed 2"."""
    if len(runs) == every_run:
        return "every run"
    seeds: dict[str, list[int]] = defaultdict(list)
    for method, seed in runs:
        seeds[method].append(seed)
    return "; ".join(f"`{method}` {_seeds(members)}" for method, members in seeds.items())


def _unknown_runs(unknown: list[tuple[str, int, int]], every_run: int) -> str:
    """"every run, 0 evaluations each", or "`lora` seeds 0, 1: 2 evaluations; `full` seed 0: 0 evaluations"."""
    counts = {count for _, _, count in unknown}
    if len(unknown) == every_run and len(counts) == 1:
        return f"every run, {_evaluations(counts.pop())} each"
    seeds: dict[tuple[str, int], list[int]] = defaultdict(list)
    for method, seed, count in unknown:
        seeds[method, count].append(seed)
    return "; ".join(
        f"`{method}` {_seeds(members)}: {_evaluations(count)}" for (method, count), members in seeds.items()
    )


def _seeds(seeds: list[int]) -> str:
    return f"seed{'s' * (len(seeds) > 1)} {', '.join(map(str, seeds))}"


def _evaluations(count: int) -> str:
    return f"{count} evaluation{'s' * (count != 1)}"


def check_lines(rows: list[MethodRow], thresholds: Thresholds) -> list[str]:
    """Convergence and bimodality in words, one line per method that has something to say, and
    one line for every run whose convergence cannot be told."""
    lines = []
    for row in rows:
        if row.bimodal:
            scores = ", ".join(f"{score:.2f}" for score in row.scores)
            lines.append(
                f"`{row.method}` is bimodal ({FLAG}): its runs score {scores}, the lowest below "
                f"{thresholds.bimodal_ratio:g} × the highest; some seeds learned and others stayed near the trivial "
                "predictor, so its mean ± std describes no run. Look at the runs in results.csv; run more seeds."
            )
        if row.not_converged:
            gains = ", ".join(f"seed {seed} +{gain:.2f}" for seed, gain in row.not_converged)
            lines.append(
                f"`{row.method}` not converged ({FLAG}) in {len(row.not_converged)} of {row.n} runs ({gains} points "
                f"over the last two evaluations, more than --converged-delta {thresholds.converged_delta:g}): "
                "it was still improving when training stopped; train longer before ranking it."
            )
    unknown = [(row.method, seed, count) for row in rows for seed, count in row.convergence_unknown]
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


def _row_order(row: MethodRow) -> tuple[bool, float, str]:
    return row.method == FULL, math.inf if row.trainable is None else row.trainable, row.method


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


def seed_notes(by_method: dict[str, list[Run]]) -> list[str]:
    """Repeated seeds (kept in the stats, but probably a sweep run twice into one folder) and
    seeds a method lacks that others have (its n is smaller: a failed or missing run)."""
    notes = []
    every_seed = {run.seed for runs in by_method.values() for run in runs}
    for method, runs in sorted(by_method.items()):
        counts = Counter(run.seed for run in runs)
        for seed, count in sorted(counts.items()):
            if count > 1:
                paths = ", ".join(f"`{run.path}`" for run in runs if run.seed == seed)
                notes.append(f"`{method}` seed {seed} has {count} runs ({paths}); all are in its stats.")
        missing = sorted(every_seed - counts.keys())
        if missing:
            notes.append(
                f"`{method}` has no successful run for seed{'s' * (len(missing) > 1)} {', '.join(map(str, missing))} "
                f"(other methods have one), so its n is {len(runs)}."
            )
    return notes


def pooling_notes(by_method: dict[str, list[Run]]) -> list[str]:
    """A row pools every run of a method: say so when they were configured differently
    (a sweep over `method.r` or `trainer.lr` gives rows that mix settings)."""
    notes = []
    for method, runs in sorted(by_method.items()):
        differing = _differing_settings(runs)
        if differing:
            notes.append(f"`{method}` pools runs whose settings differ: {', '.join(differing)}.")
    return notes


def _differing_settings(runs: list[Run]) -> list[str]:
    settings = [_flatten({name: run.config.get(name) for name in ("method", "trainer")}) for run in runs]
    keys = set().union(*settings)
    return sorted(key for key in keys if len({json.dumps(one.get(key), sort_keys=True) for one in settings}) > 1)


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def learning_curves(by_method: dict[str, list[Run]], primary: str) -> dict[str, list[tuple[float, float]]]:
    """Validation primary metric (points) by training step, the mean over the seeds logged at
    that step; methods whose runs logged no validation point are left out."""
    key = f"validation_{primary}"
    curves = {}
    for method, runs in by_method.items():
        by_step: dict[float, list[float]] = defaultdict(list)
        for run in runs:
            for point in run.history:
                step, value = finite(point.get("step")), finite(point.get(key))
                if step is not None and value is not None:
                    by_step[step].append(100 * value)
        if by_step:
            curves[method] = [(step, statistics.fmean(values)) for step, values in sorted(by_step.items())]
    return curves


def group_by(items: Iterable[Item], key: Callable[[Item], Any]) -> dict[Any, list[Item]]:
    groups: dict[Any, list[Item]] = defaultdict(list)
    for item in items:
        groups[key(item)].append(item)
    return dict(groups)
