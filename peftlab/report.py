"""`python -m peftlab.report DIR [--out OUTDIR]`: the comparison a sweep was run for, read from
its result.json files only (never a model), so it can be regenerated wherever the files are copied.

One table per set of runs that differ only in method and seed (peftlab/comparison.py: task,
dataset and its fingerprint, model source, subsample, data seed, max length, quantization; numbers
from different ones are never pooled), one row per method: trainable parameters, the primary
metric as mean ± sample std over seeds, the gap to full fine-tuning, memory, time and checkpoint
size. Beside the numbers, what a reader must know before acting on them: a Δ against full
fine-tuning trained on another budget, a run still improving when it stopped, seeds that split
into learned and not, the runs' own notes and the examples actually used. Writes report.md, a
self-contained report.html, results.csv (one row per run) and, with matplotlib (the `report`
extra), pareto.png and curves.png.

Reading and aggregation (`read_runs`, `build_report`) are pure and apart from rendering, so the
tests check numbers, not text. matplotlib is imported only when a plot is drawn: a Hydra callback
can import this module at the end of a sweep for free."""

from __future__ import annotations

import argparse
import base64
import csv
import html
import json
import math
import re
import shlex
import statistics
import sys
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from peftlab.comparison import (
    BUDGET_SETTINGS,
    DEFAULT_BIMODAL_RATIO,
    DEFAULT_CONVERGED_DELTA,
    FINGERPRINT,
    GROUP_SETTINGS,
    MIN_EVALUATIONS,
    UNKNOWN,
    budget_differences,
    convergence,
    group_settings,
    is_bimodal,
    quant_keys,
    raw_setting,
)
from peftlab.errors import PeftlabError
from peftlab.result import RESULT_FILE

FULL = "full"
IDENTITY = ("task", "dataset", "method", "backbone", "quant", "seed")
GROUP_FIELDS = ("task", "dataset", "backbone", "quant", "primary_metric")
BUDGETS = (0.1, 1.0, 10.0, None)  # % of the base that trains; None: no limit
MB = 2**20  # the MB of peak_rss_mb / peak_cuda_mb in result.json (peftlab/measure.py)
PARAM_KEYS = ("base_total", "trainable", "method", "head", "trainable_pct")
TIMING_KEYS = ("train_seconds", "train_samples_per_second", "train_tokens_per_second", "eval_seconds")
MEMORY_KEYS = ("peak_rss_mb", "peak_cuda_mb", "model_bytes")
MARKDOWN_FILE, HTML_FILE, CSV_FILE = "report.md", "report.html", "results.csv"
PARETO_FILE, CURVES_FILE = "pareto.png", "curves.png"
MISSING = "n/a"
VALIDATION_MARK = "†"
BUDGET_MARK = "*"
FLAG = "⚠"
SPLITS = ("train", "validation", "test")
CONVERGENCE_WORDS = {True: "converged", False: "not converged", None: "unknown"}
EVAL_SUBSAMPLE = "task.max_eval_samples"

Settings = tuple[tuple[str, str], ...]
GroupKey = tuple[str, str, str, str, str, Settings]


@dataclass(frozen=True)
class Thresholds:
    """The report's judgement calls, each a command-line option (peftlab/comparison.py has the
    rules): points a run may still gain over its last two evaluations and count as converged
    (`--converged-delta`), and the lowest seed's share of the highest below which a method's
    seeds are flagged bimodal (`--bimodal-ratio`)."""

    converged_delta: float = DEFAULT_CONVERGED_DELTA
    bimodal_ratio: float = DEFAULT_BIMODAL_RATIO


class NoResultsError(PeftlabError):
    """The folder is missing or holds no result.json: there is nothing to report."""


# --- reading -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Unreadable:
    path: str  # relative to the report's folder
    why: str


def read_runs(directory: Path) -> tuple[list[dict[str, Any]], list[Unreadable]]:
    """Every result.json under `directory`, as its dict plus `path` (relative to `directory`).
    A file that cannot be used is set aside with the reason instead of stopping the report: one
    run killed mid-write must not hide the other ninety-nine."""
    if not directory.is_dir():
        raise NoResultsError(f"{directory} is not a folder; give the folder of a run or of a sweep.")
    paths = sorted(path for path in directory.rglob(RESULT_FILE) if path.is_file())
    if not paths:
        raise NoResultsError(f"no {RESULT_FILE} under {directory}; give the folder of a run or of a sweep.")
    runs, unreadable = [], []
    for path in paths:
        relative = path.relative_to(directory).as_posix()
        try:
            runs.append({**_load(path), "path": relative})
        except ValueError as problem:
            unreadable.append(Unreadable(relative, str(problem)))
    return runs, unreadable


def _load(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ValueError(f"cannot read it ({error.strerror})") from error
    except json.JSONDecodeError as error:
        raise ValueError(f"not valid JSON ({error.msg} at line {error.lineno}, column {error.colno})") from error
    except UnicodeDecodeError as error:
        raise ValueError("not UTF-8 text") from error
    problem = _schema_problem(data)
    if problem:
        raise ValueError(problem)
    return data


def _schema_problem(data: Any) -> str | None:
    """What makes a parsed file unusable; everything else optional is tolerated (older files lack
    `notes` and `memory.model_bytes`, failed runs have empty sections)."""
    if not isinstance(data, dict):
        return "not a JSON object"
    missing = [key for key in ("status", *IDENTITY) if data.get(key) is None]
    if missing:
        return f"missing {', '.join(missing)}"
    if data["status"] not in ("ok", "failed"):
        return f"unknown status {data['status']!r} (expected ok or failed)"
    if isinstance(data["seed"], bool) or not isinstance(data["seed"], int):
        return f"seed {data['seed']!r} is not an integer"
    primary = data.get("primary_metric")
    if data["status"] == "ok" and not isinstance(primary, str):
        return "status ok but no primary_metric"
    if data["status"] == "ok" and _number(data, "metrics", "validation", primary) is None:
        return f"status ok but no number at metrics.validation.{primary} (its primary metric)"
    return None


def _number(data: Any, *keys: str) -> float | None:
    """The number at data[key1][key2]..., or None where a key is missing or null, or the value is
    not a finite number."""
    for key in keys:
        data = data.get(key) if isinstance(data, dict) else None
    if isinstance(data, bool) or not isinstance(data, (int, float)) or not math.isfinite(data):
        return None
    return float(data)


def _section(data: Any, key: str) -> dict[str, Any]:
    value = data.get(key) if isinstance(data, dict) else None
    return value if isinstance(value, dict) else {}


# --- aggregation ---------------------------------------------------------------------------------


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

    @property
    def key(self) -> GroupKey:
        return (self.task, self.dataset, self.backbone, self.quant, self.primary_metric, self.settings)

    @property
    def budget_warnings(self) -> list[str]:
        return [f"`{row.method}`: {', '.join(row.budget_differences)}" for row in self.rows if row.budget_differences]

    def metric_label(self) -> str:
        """Where the metric column's numbers come from: the split, and its size where
        `task.max_eval_samples` cut it."""
        mark = VALIDATION_MARK if self.split == "validation" else ""
        cap = dict(self.settings).get(EVAL_SUBSAMPLE, UNKNOWN)
        if cap in (UNKNOWN, "null"):
            return self.split + mark
        sizes = self.data_sizes.get(self.split)
        if not sizes:  # a file from before data_sizes: only the cap is known
            return f"{self.split}{mark}, at most {int(cap):,} ({EVAL_SUBSAMPLE})"
        if sizes == [int(cap)]:
            return f"{self.split}{mark}, subsampled: {int(cap):,}"
        return self.split + mark


@dataclass
class Report:
    directory: Path
    runs: list[dict[str, Any]]  # ok and failed, in path order
    unreadable: list[Unreadable]
    groups: list[Group]
    thresholds: Thresholds = Thresholds()

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [run for run in self.runs if run["status"] == "failed"]


def build_report(
    directory: Path, runs: list[dict[str, Any]], unreadable: list[Unreadable], thresholds: Thresholds = Thresholds()
) -> Report:
    successful = _group_by([run for run in runs if run["status"] == "ok"], group_key)
    groups = [build_group(key, members, thresholds) for key, members in sorted(successful.items())]
    mark_distinguishing(groups)
    return Report(directory, runs, unreadable, groups, thresholds)


def group_key(run: dict[str, Any]) -> GroupKey:
    task, dataset, backbone, quant, primary = (str(run.get(field)) for field in GROUP_FIELDS)
    return task, dataset, backbone, quant, primary, group_settings(run)


def build_group(key: GroupKey, runs: list[dict[str, Any]], thresholds: Thresholds = Thresholds()) -> Group:
    split = metric_split(runs)
    by_method = _group_by(runs, lambda run: str(run["method"]))
    full_mean = statistics.fmean(metric_values(by_method[FULL], split)) if FULL in by_method else None
    rows = sorted(
        (method_row(method, members, split, full_mean, thresholds) for method, members in by_method.items()),
        key=_row_order,
    )
    for row in rows:
        if row.method != FULL and FULL in by_method:
            row.budget_differences = budget_differences(by_method[row.method], by_method[FULL])
    notes = seed_notes(by_method) + pooling_notes(by_method)
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
    )


def mark_distinguishing(groups: list[Group]) -> None:
    """Groups that would get the same heading (same task, dataset, backbone, quant) differ in
    some setting: name it in each of their headings, so two tables never look alike."""
    by_heading = _group_by(groups, lambda group: group.key[:5])
    for alike in by_heading.values():
        if len(alike) < 2:
            continue
        keys = {key for group in alike for key, _ in group.settings}
        differing = {key for key in keys if len({dict(group.settings).get(key, UNKNOWN) for group in alike}) > 1}
        for group in alike:
            group.distinguishing = tuple((key, value) for key, value in group.settings if key in differing)


def metric_split(runs: list[dict[str, Any]]) -> str:
    """test when every run has it, else validation for all: rows of one table are compared, so
    they must be scored on the same split."""
    return "test" if all(_has_test(run) for run in runs) else "validation"


def _has_test(run: dict[str, Any]) -> bool:
    return _number(run, "metrics", "test", run["primary_metric"]) is not None


def metric_values(runs: list[dict[str, Any]], split: str) -> list[float]:
    """The primary metric of each run on `split`, in points (x100)."""
    return [100 * _number(run, "metrics", split, run["primary_metric"]) for run in runs]


def method_row(
    method: str, runs: list[dict[str, Any]], split: str, full_mean: float | None, thresholds: Thresholds = Thresholds()
) -> MethodRow:
    by_seed = sorted(runs, key=lambda run: run["seed"])
    values = metric_values(by_seed, split)
    mean = statistics.fmean(values)
    curves = [(run["seed"], convergence(run)) for run in by_seed]
    return MethodRow(
        method=method,
        seeds=[run["seed"] for run in by_seed],
        scores=values,
        trainable=_mean_of(runs, "params", "trainable"),
        trainable_pct=_mean_of(runs, "params", "trainable_pct"),
        metric_mean=mean,
        metric_std=statistics.stdev(values) if len(values) > 1 else None,
        delta_vs_full=None if method == FULL or full_mean is None else mean - full_mean,
        peak_rss_mb=_mean_of(runs, "memory", "peak_rss_mb"),
        peak_cuda_mb=_mean_of(runs, "memory", "peak_cuda_mb"),
        train_seconds=_mean_of(runs, "timing", "train_seconds"),
        samples_per_second=_mean_of(runs, "timing", "train_samples_per_second"),
        checkpoint_mb=_mean_of(runs, "checkpoint", "size_bytes", scale=1 / MB),
        not_converged=[
            (seed, curve.gain) for seed, curve in curves if curve.converged(thresholds.converged_delta) is False
        ],
        convergence_unknown=[(seed, curve.evaluations) for seed, curve in curves if curve.gain is None],
        bimodal=is_bimodal(values, thresholds.bimodal_ratio),
    )


def data_sizes(runs: list[dict[str, Any]]) -> dict[str, list[int]]:
    """split -> the distinct example counts the runs recorded (`data_sizes` in result.json);
    runs from before that field add nothing."""
    sizes: dict[str, set[int]] = defaultdict(set)
    for run in runs:
        for split in SPLITS:
            count = _number(run, "data_sizes", split)
            if count is not None:
                sizes[split].add(int(count))
    return {split: sorted(sizes[split]) for split in SPLITS if sizes[split]}


def number_run_notes(rows: list[MethodRow], by_method: dict[str, list[dict[str, Any]]]) -> list[str]:
    """The runs' own `notes` (a validation split carved from train, no test split, ...), each
    text once, numbered in table order; each row learns the numbers its runs carry."""
    carriers: dict[str, list[tuple[str, int]]] = {}
    for row in rows:
        for run in sorted(by_method[row.method], key=lambda run: run["seed"]):
            notes = run.get("notes")
            for note in notes if isinstance(notes, list) else []:
                carriers.setdefault(str(note), []).append((row.method, run["seed"]))
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


def _mean_of(runs: list[dict[str, Any]], *keys: str, scale: float = 1.0) -> float | None:
    """Mean over the runs that have the number (a GPU-less run has no peak_cuda_mb); None if none has."""
    values = [value for value in (_number(run, *keys) for run in runs) if value is not None]
    return scale * statistics.fmean(values) if values else None


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


def seed_notes(by_method: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Repeated seeds (kept in the stats, but probably a sweep run twice into one folder) and
    seeds a method lacks that others have (its n is smaller: a failed or missing run)."""
    notes = []
    every_seed = {run["seed"] for runs in by_method.values() for run in runs}
    for method, runs in sorted(by_method.items()):
        counts = Counter(run["seed"] for run in runs)
        for seed, count in sorted(counts.items()):
            if count > 1:
                paths = ", ".join(f"`{run['path']}`" for run in runs if run["seed"] == seed)
                notes.append(f"`{method}` seed {seed} has {count} runs ({paths}); all are in its stats.")
        missing = sorted(every_seed - counts.keys())
        if missing:
            notes.append(
                f"`{method}` has no successful run for seed{'s' * (len(missing) > 1)} {', '.join(map(str, missing))} "
                f"(other methods have one), so its n is {len(runs)}."
            )
    return notes


def pooling_notes(by_method: dict[str, list[dict[str, Any]]]) -> list[str]:
    """A row pools every run of a method: say so when they were configured differently
    (a sweep over `method.r` or `trainer.lr` gives rows that mix settings)."""
    notes = []
    for method, runs in sorted(by_method.items()):
        differing = _differing_settings(runs)
        if differing:
            notes.append(f"`{method}` pools runs whose settings differ: {', '.join(differing)}.")
    return notes


def _differing_settings(runs: list[dict[str, Any]]) -> list[str]:
    settings = [
        _flatten({section: _section(run, "config").get(section) for section in ("method", "trainer")})
        for run in runs
    ]
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


def learning_curves(by_method: dict[str, list[dict[str, Any]]], primary: str) -> dict[str, list[tuple[float, float]]]:
    """Validation primary metric (points) by training step, the mean over the seeds logged at
    that step; methods whose runs logged no validation point are left out."""
    key = f"validation_{primary}"
    curves = {}
    for method, runs in by_method.items():
        by_step: dict[float, list[float]] = defaultdict(list)
        for run in runs:
            history = run.get("history")
            for point in history if isinstance(history, list) else []:
                step, value = _number(point, "step"), _number(point, key)
                if step is not None and value is not None:
                    by_step[step].append(100 * value)
        if by_step:
            curves[method] = [(step, statistics.fmean(values)) for step, values in sorted(by_step.items())]
    return curves


def _group_by(items: Iterable[dict[str, Any]], key: Callable[[dict[str, Any]], Any]) -> dict[Any, list[dict[str, Any]]]:
    groups: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for item in items:
        groups[key(item)].append(item)
    return dict(groups)


def error_summary(error: Any) -> str:
    """The line that says what went wrong: the first one, or for a Python traceback (what run.py
    stores for an unexpected error) the last, which names the exception."""
    lines = [line.strip() for line in str(error or "").splitlines() if line.strip()]
    if not lines:
        return "(no error message)"
    return lines[-1] if lines[0].startswith("Traceback") else lines[0]


# --- results.csv ---------------------------------------------------------------------------------


def results_rows(report: Report) -> list[dict[str, Any]]:
    """One flat row per run, ok and failed. `metric` is the primary metric as result.json has it
    (a fraction), on `metric_split`, the split the run's table used. Beside the numbers: the
    settings that define its table, its budget, its convergence, the examples it used, its notes
    and the commit that made it."""
    splits = {group.key: group.split for group in report.groups}
    return [
        _flat_run(run, splits[group_key(run)] if run["status"] == "ok" else None, report.thresholds)
        for run in report.runs
    ]


def _flat_run(run: dict[str, Any], split: str | None, thresholds: Thresholds) -> dict[str, Any]:
    metrics = _section(run, "metrics")
    row = {key: run.get(key) for key in ("status", "error", *IDENTITY, FINGERPRINT, "git_sha")}
    row.update({key: raw_setting(run, key) for key in (*GROUP_SETTINGS, *quant_keys(run), *BUDGET_SETTINGS)})
    row.update(_prefixed("params", _section(run, "params")))
    row["primary_metric"] = run.get("primary_metric")
    row["metric_split"] = split
    row["metric"] = _number(metrics, split, run["primary_metric"]) if split else None
    if split:
        curve = convergence(run)
        row["convergence"] = CONVERGENCE_WORDS[curve.converged(thresholds.converged_delta)]
        row["evaluations"] = curve.evaluations
        row["convergence_gain"] = curve.gain
    row.update(_prefixed("data_sizes", _section(run, "data_sizes")))
    for name in ("validation", "test"):
        row.update(_prefixed(name, _section(metrics, name)))
    for name in ("timing", "memory"):
        row.update(_prefixed(name, _section(run, name)))
    row["notes"] = run.get("notes") or None
    row["checkpoint_size_bytes"] = _section(run, "checkpoint").get("size_bytes")
    row["path"] = run["path"]
    return row


def _prefixed(prefix: str, section: dict[str, Any]) -> dict[str, Any]:
    return {f"{prefix}_{key}": value for key, value in section.items()}


def csv_columns(rows: list[dict[str, Any]]) -> list[str]:
    """Fixed columns, then every key some run has, section by section, known keys first, so the
    columns do not depend on which run was read first."""
    present = set().union(*rows)

    def section(prefix: str, known: tuple[str, ...] = (), separator: str = "_") -> list[str]:
        found = {column for column in present if column.startswith(f"{prefix}{separator}")}
        ordered = [f"{prefix}{separator}{key}" for key in known if f"{prefix}{separator}{key}" in found]
        return ordered + sorted(found - set(ordered))

    return [
        "status", "error", *IDENTITY, FINGERPRINT, "git_sha", *GROUP_SETTINGS, *section("quant", separator="."),
        *BUDGET_SETTINGS, *section("params", PARAM_KEYS), "primary_metric", "metric_split", "metric",
        "convergence", "evaluations", "convergence_gain", *section("data_sizes", SPLITS),
        *section("validation"), *section("test"), *section("timing", TIMING_KEYS), *section("memory", MEMORY_KEYS),
        "notes", "checkpoint_size_bytes", "path",
    ]


def write_results_csv(rows: list[dict[str, Any]], path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=csv_columns(rows), restval="")
        writer.writeheader()
        writer.writerows({key: _csv_value(value) for key, value in row.items()} for row in rows)


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    return json.dumps(value) if isinstance(value, (dict, list)) else value


# --- plots ---------------------------------------------------------------------------------------


def write_plots(groups: list[Group], out: Path) -> tuple[dict[str, Path], list[str]]:
    """pareto.png and curves.png where they can be drawn, and a sentence for each one that could
    not. Plots of an earlier report in `out` are removed first: the folder never shows a figure
    that this report did not draw."""
    for name in (PARETO_FILE, CURVES_FILE):
        (out / name).unlink(missing_ok=True)
    try:
        import matplotlib  # noqa: F401  (only to know whether the plots can be drawn)
    except ImportError:
        return {}, ["No plots: they need matplotlib (`pip install 'peftlab[report]'`)."]
    if not groups:
        return {}, ["No plots: no run succeeded."]
    written = {"pareto": plot_pareto(groups, out / PARETO_FILE)}
    with_curves = [group for group in groups if group.curves]
    if with_curves:
        written["curves"] = plot_curves(with_curves, out / CURVES_FILE)
    notes = [
        f"No learning curve for {_title(group)}: no run logged validation {group.primary_metric} during "
        "training (`trainer.eval_strategy=epoch` or `steps` logs it; `trainer=smoke` turns it off)."
        for group in groups if not group.curves
    ]
    return written, notes


def plot_pareto(groups: list[Group], path: Path) -> Path:
    """Metric against trainable % of the base (log x), one point per method with its std over
    seeds; full fine-tuning as a reference line with its std band."""
    figure, axes = _figure(len(groups))
    colors = method_colors(groups)
    for axis, group in zip(axes, groups):
        for row in group.rows:
            if row.method == FULL:
                _full_reference(axis, row)
            elif row.trainable_pct:  # a log axis has no place for 0 or an unknown share
                axis.errorbar(
                    row.trainable_pct, row.metric_mean, yerr=row.metric_std or 0, fmt="o", capsize=4,
                    color=colors[row.method],
                )
                axis.annotate(
                    f"{row.method} (n={row.n})", (row.trainable_pct, row.metric_mean),
                    textcoords="offset points", xytext=(6, 4), fontsize=9,
                )
        axis.set_xscale("log")
        axis.margins(x=0.15)  # room for the names beside the outermost points
        axis.set_xlabel("trainable parameters, % of the base model (log scale)")
        axis.set_ylabel(f"{group.primary_metric} ×100 ({group.split}), mean ± std over seeds")
        axis.set_title(_title(group), fontsize=10)
        axis.grid(True, which="both", alpha=0.3)
    figure.savefig(path, dpi=110)
    return path


def _full_reference(axis: Any, row: MethodRow) -> None:
    label = f"{FULL} (n={row.n}): {row.metric_mean:.2f}"
    axis.axhline(row.metric_mean, color="0.25", linestyle="--", label=label)
    if row.metric_std:
        axis.axhspan(row.metric_mean - row.metric_std, row.metric_mean + row.metric_std, color="0.25", alpha=0.12)
    axis.legend(loc="lower right", fontsize=9)


def plot_curves(groups: list[Group], path: Path) -> Path:
    """Validation metric over training steps, one line per method (mean over seeds)."""
    figure, axes = _figure(len(groups))
    colors = method_colors(groups)
    for axis, group in zip(axes, groups):
        for row in group.rows:
            points = group.curves.get(row.method)
            if points:
                steps, values = zip(*points)
                axis.plot(steps, values, marker="o", markersize=3, label=row.method, color=colors[row.method])
        axis.set_xlabel("training step")
        axis.set_ylabel(f"validation {group.primary_metric} ×100, mean over seeds")
        axis.set_title(_title(group), fontsize=10)
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize=8)
    figure.savefig(path, dpi=110)
    return path


def method_colors(groups: list[Group]) -> dict[str, str]:
    """One color per method in every panel of both figures, so a method is found at a glance."""
    methods = dict.fromkeys(row.method for group in groups for row in group.rows)
    return {method: f"C{number % 10}" for number, method in enumerate(methods)}


def _figure(panels: int) -> tuple[Any, list[Any]]:
    """A figure drawn by the Agg canvas with one panel per group, two per line. No pyplot: nothing
    global is touched in a process (a Hydra sweep) that may have its own backend."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    columns = min(panels, 2)
    lines = math.ceil(panels / columns)
    figure = Figure(figsize=(7.5 * columns, 5 * lines), layout="constrained")
    FigureCanvasAgg(figure)
    axes = list(figure.subplots(lines, columns, squeeze=False).ravel())
    for unused in axes[panels:]:
        unused.set_visible(False)
    return figure, axes[:panels]


def _title(group: Group) -> str:
    dataset = Path(group.dataset).name or group.dataset  # a data folder's path is too long for a title
    return f"{group.task} ({dataset}) · {group.backbone} · quant {group.quant}{_distinguishing(group)}"


def _distinguishing(group: Group) -> str:
    return "".join(f" · {key}={value}" for key, value in group.distinguishing)


# --- the document: blocks rendered as Markdown and as HTML ---------------------------------------


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Paragraph:
    text: str


@dataclass
class Bullets:
    items: list[str]


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]
    numeric: bool = False  # right-align every column but the first


@dataclass
class Image:
    alt: str
    path: Path


class Bold(str):
    """A table cell shown in bold: the best method within a budget."""


HOW_TO_READ = (
    "Each table holds the successful runs that differ only in method and seed: one task, dataset (and "
    "its fingerprint), backbone and model source, quantization and its settings, subsample sizes, data "
    "seed and max length; a heading names the setting that tells two otherwise alike tables apart. "
    "Metric: mean ± sample standard deviation (ddof=1) over runs, ×100, n = runs, on the split the "
    "header names (with its size where `task.max_eval_samples` cut it). "
    "Trainable params = the method's + the task head's; % of base is `params.trainable_pct`. "
    f"Δ vs full: the method's mean minus full fine-tuning's, in points; {BUDGET_MARK} marks a method trained "
    "on another budget than full (epochs or steps, batch size, accumulation). "
    f"{FLAG} flags a method whose seeds are bimodal or whose runs had not converged (see Checks). "
    "[n]: the runs of that row carry run note n (from `result.json` notes). "
    "Memory, time, samples/s and checkpoint size are means over the same runs; MB = 2^20 bytes. "
    "**Bold**: the best method within a budget of trainable parameters (≤0.1%, ≤1%, ≤10%, any); "
    "a tie goes to the method with fewer parameters."
)


def report_blocks(report: Report, command: str, plots: dict[str, Path], plot_notes: list[str]) -> list[Any]:
    ok, failed = len(report.runs) - len(report.failed), len(report.failed)
    read = len(report.runs) + len(report.unreadable)
    blocks: list[Any] = [
        Heading("peftlab report", 1),
        Paragraph(
            f"Read {read} `{RESULT_FILE}` files under `{report.directory}`: {ok} runs ok, {failed} failed, "
            f"{len(report.unreadable)} unreadable."
        ),
        Paragraph(f"Regenerate: `{command}`"),
        Paragraph(HOW_TO_READ),
    ]
    for group in report.groups:
        blocks += group_blocks(group)
    blocks += plot_blocks(plots, plot_notes)
    if report.failed:
        blocks += [Heading("Failed runs"), failed_table(report.failed)]
    if report.unreadable:
        rows = [[f"`{file.path}`", file.why] for file in report.unreadable]
        blocks += [Heading("Unreadable files"), Table(["file", "why it was skipped"], rows)]
    return blocks


def group_blocks(group: Group) -> list[Any]:
    blocks: list[Any] = [
        Heading(
            f"`{group.task}` on `{group.dataset}`: backbone `{group.backbone}`, quant `{group.quant}`"
            f"{_distinguishing(group)}"
        ),
    ]
    shared = [f"{key}=`{value}`" for key, value in group.settings if value != UNKNOWN]
    if shared:
        blocks.append(Paragraph(f"Every run here has {', '.join(shared)}."))
    if group.data_sizes:
        sizes = " · ".join(
            f"{split} {' / '.join(f'{count:,}' for count in counts)}" for split, counts in group.data_sizes.items()
        )
        blocks.append(Paragraph(f"Examples used: {sizes}."))
    if group.split == "validation":
        blocks.append(Paragraph(
            f"{VALIDATION_MARK} Validation split: {group.runs_without_test} of {sum(r.n for r in group.rows)} "
            "runs have no test split, so every row is scored on validation."
        ))
    if group.budget_warnings:
        blocks.append(Paragraph(
            f"{FLAG} Not trained on full fine-tuning's budget, so their Δ vs full (marked {BUDGET_MARK}) compares "
            f"method and budget at once: {'; '.join(group.budget_warnings)}."
        ))
    blocks += [group_table(group), Bullets([best_line(budget, row) for budget, row in group.best])]
    if group.notes:
        blocks += [Paragraph("Notes:"), Bullets(group.notes)]
    if group.checks:
        blocks += [Paragraph("Checks:"), Bullets(group.checks)]
    if group.run_notes:
        blocks += [Paragraph("Run notes (`result.json` notes):"), Bullets(group.run_notes)]
    return blocks


def group_table(group: Group) -> Table:
    with_cuda = any(row.peak_cuda_mb is not None for row in group.rows)
    with_notes = any(row.note_marks for row in group.rows)
    headers = [
        "method", "trainable params", "% of base", f"{group.primary_metric} ×100 ({group.metric_label()})",
        "Δ vs full", "peak RSS MB", *(["peak CUDA MB"] if with_cuda else []), "train s", "samples/s",
        "checkpoint MB", *(["notes"] if with_notes else []),
    ]
    best = [row for _, row in group.best if row is not None]
    rows = []
    for row in group.rows:
        emphasis = Bold if any(row is winner for winner in best) else str
        rows.append([
            emphasis(row.method), _count(row.trainable), _percent(row.trainable_pct), emphasis(metric_cell(row)),
            delta_cell(row), _fixed(row.peak_rss_mb, 0),
            *([_fixed(row.peak_cuda_mb, 0)] if with_cuda else []),
            _fixed(row.train_seconds, 1), _fixed(row.samples_per_second, 1), _fixed(row.checkpoint_mb, 2),
            *([" ".join(f"[{mark}]" for mark in row.note_marks)] if with_notes else []),
        ])
    return Table(headers, rows, numeric=True)


def metric_cell(row: MethodRow) -> str:
    spread = "" if row.metric_std is None else f" ± {row.metric_std:.2f}"
    flags = (["bimodal"] if row.bimodal else []) + (
        [f"not converged {len(row.not_converged)}/{row.n}"] if row.not_converged else []
    )
    flagged = f" {FLAG} {', '.join(flags)}" if flags else ""
    return f"{row.metric_mean:.2f}{spread} (n={row.n}){flagged}"


def delta_cell(row: MethodRow) -> str:
    if row.method == FULL:
        return "—"
    if row.delta_vs_full is None:
        return MISSING
    return f"{row.delta_vs_full:+.2f}" + (BUDGET_MARK if row.budget_differences else "")


def best_line(budget: float | None, row: MethodRow | None) -> str:
    scope = "best overall" if budget is None else f"best within ≤{budget:g}% trainable"
    return f"{scope}: {row.method} ({row.metric_mean:.1f})" if row else f"{scope}: no method"


def plot_blocks(plots: dict[str, Path], notes: list[str]) -> list[Any]:
    blocks: list[Any] = [Heading("Plots")]
    if "pareto" in plots:
        blocks += [
            Paragraph("Metric against trainable share of the base (log scale); the dashed line and band: "
                      "full fine-tuning's mean ± std."),
            Image("metric vs trainable parameters", plots["pareto"]),
        ]
    if "curves" in plots:
        blocks += [
            Paragraph("Validation metric during training, mean over seeds per step."),
            Image("validation metric over training steps", plots["curves"]),
        ]
    return blocks + [Paragraph(note) for note in notes]


def failed_table(failed: list[dict[str, Any]]) -> Table:
    rows = [
        [str(run["task"]), str(run["backbone"]), str(run["method"]), str(run["seed"]),
         error_summary(run.get("error")), f"`{run['path']}`"]
        for run in failed
    ]
    return Table(["task", "backbone", "method", "seed", "error", "file"], rows)


def _count(value: float | None) -> str:
    return MISSING if value is None else f"{round(value):,}"


def _percent(value: float | None) -> str:
    """Three significant digits: 100, 1.49, 0.0341 (fixed decimals would show 0.00 for small methods)."""
    return MISSING if value is None else f"{value:.3g}"


def _fixed(value: float | None, decimals: int) -> str:
    return MISSING if value is None else f"{value:,.{decimals}f}"


def to_markdown(blocks: list[Any]) -> str:
    return "\n\n".join(_markdown(block) for block in blocks) + "\n"


def _markdown(block: Any) -> str:
    match block:
        case Heading(text, level):
            return "#" * level + " " + text
        case Paragraph(text):
            return text
        case Bullets(items):
            return "\n".join(f"- {item}" for item in items)
        case Table(headers, rows):
            lines = [headers, *rows]
            rule = "|" + "".join("---:|" if block.numeric and i else "---|" for i in range(len(headers)))
            rendered = ["| " + " | ".join(_markdown_cell(cell) for cell in line) + " |" for line in lines]
            return "\n".join([rendered[0], rule, *rendered[1:]])
        case Image(alt, path):
            return f"![{alt}]({path.name})"
    raise TypeError(f"no Markdown for {block!r}")


def _markdown_cell(cell: str) -> str:
    text = cell.replace("|", "\\|")
    return f"**{text}**" if isinstance(cell, Bold) else text


STYLE = """
body { font-family: system-ui, sans-serif; max-width: 78rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
table { border-collapse: collapse; margin: 1rem 0; font-size: 0.92rem; }
th, td { border: 1px solid #ccc; padding: 0.3rem 0.6rem; text-align: left; }
th { background: #f3f3f3; }
table.numeric td:not(:first-child) { text-align: right; font-variant-numeric: tabular-nums; }
code { background: #f3f3f3; padding: 0 0.2rem; }
img { max-width: 100%; }
"""


def to_html(blocks: list[Any]) -> str:
    """One file with everything inside (CSS inline, PNGs as data URIs): it can be mailed or
    attached to a ticket and still shows the plots."""
    body = "\n".join(_html(block) for block in blocks)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>peftlab report</title>\n"
        f"<style>{STYLE}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )


def _html(block: Any) -> str:
    match block:
        case Heading(text, level):
            return f"<h{level}>{_inline(text)}</h{level}>"
        case Paragraph(text):
            return f"<p>{_inline(text)}</p>"
        case Bullets(items):
            return "<ul>\n" + "\n".join(f"<li>{_inline(item)}</li>" for item in items) + "\n</ul>"
        case Table(headers, rows):
            head = "<tr>" + "".join(f"<th>{_inline(header)}</th>" for header in headers) + "</tr>"
            body = "\n".join("<tr>" + "".join(f"<td>{_html_cell(cell)}</td>" for cell in row) + "</tr>" for row in rows)
            css = ' class="numeric"' if block.numeric else ""
            return f"<table{css}>\n<thead>{head}</thead>\n<tbody>\n{body}\n</tbody>\n</table>"
        case Image(alt, path):
            data = base64.b64encode(path.read_bytes()).decode("ascii")
            return f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"></figure>'
    raise TypeError(f"no HTML for {block!r}")


def _html_cell(cell: str) -> str:
    return f"<strong>{_inline(cell)}</strong>" if isinstance(cell, Bold) else _inline(cell)


def _inline(text: str) -> str:
    """Escaped text; `code` and **bold** spans (the only Markdown the blocks use) as HTML."""
    escaped = html.escape(text)
    escaped = re.sub(r"`([^`]*)`", r"<code>\1</code>", escaped)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", escaped)


# --- entry points --------------------------------------------------------------------------------


def write_report(directory: Path, out: Path | None = None, thresholds: Thresholds = Thresholds()) -> dict[str, Path]:
    """Read every result.json under `directory` and write the report into `out` (default:
    `directory`). Returns what was written by name (markdown, html, csv, and pareto and curves
    when drawn). Raises NoResultsError when the folder is missing or holds no result.json."""
    directory = Path(directory)
    out = directory if out is None else Path(out)
    runs, unreadable = read_runs(directory)
    report = build_report(directory, runs, unreadable, thresholds)
    out.mkdir(parents=True, exist_ok=True)
    plots, plot_notes = write_plots(report.groups, out)
    blocks = report_blocks(report, regenerate_command(directory, out, thresholds), plots, plot_notes)
    written = {"markdown": out / MARKDOWN_FILE, "html": out / HTML_FILE, "csv": out / CSV_FILE}
    written["markdown"].write_text(to_markdown(blocks), encoding="utf-8")
    written["html"].write_text(to_html(blocks), encoding="utf-8")
    write_results_csv(results_rows(report), written["csv"])
    return {**written, **plots}


def regenerate_command(directory: Path, out: Path, thresholds: Thresholds = Thresholds()) -> str:
    command = ["python", "-m", "peftlab.report", str(directory)]
    if out.resolve() != directory.resolve():
        command += ["--out", str(out)]
    if thresholds.converged_delta != DEFAULT_CONVERGED_DELTA:
        command += ["--converged-delta", f"{thresholds.converged_delta:g}"]
    if thresholds.bimodal_ratio != DEFAULT_BIMODAL_RATIO:
        command += ["--bimodal-ratio", f"{thresholds.bimodal_ratio:g}"]
    return shlex.join(command)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m peftlab.report",
        description="Compare methods from the result.json files under a folder (a run or a sweep).",
    )
    parser.add_argument("directory", type=Path, help="folder searched recursively for result.json")
    parser.add_argument("--out", type=Path, default=None, help="where to write the report (default: DIRECTORY)")
    parser.add_argument(
        "--converged-delta", type=float, default=DEFAULT_CONVERGED_DELTA, metavar="POINTS",
        help="flag a run 'not converged' when its last validation score beats the best before its last two "
             f"evaluations by more than this, in metric points x100 (default {DEFAULT_CONVERGED_DELTA:g})",
    )
    parser.add_argument(
        "--bimodal-ratio", type=float, default=DEFAULT_BIMODAL_RATIO, metavar="RATIO",
        help="flag a method 'bimodal' when its lowest run scores below RATIO x its highest "
             f"(default {DEFAULT_BIMODAL_RATIO:g})",
    )
    arguments = parser.parse_args(argv)
    if arguments.converged_delta < 0 or not 0 < arguments.bimodal_ratio <= 1:
        parser.error("--converged-delta must be >= 0 and --bimodal-ratio in (0, 1]")
    thresholds = Thresholds(arguments.converged_delta, arguments.bimodal_ratio)
    try:
        written = write_report(arguments.directory, arguments.out, thresholds)
    except NoResultsError as error:
        print(f"peftlab.report: error: {error}", file=sys.stderr)
        return 2
    for path in written.values():
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
