"""Quantized bases side by side. The method tables keep every quantization apart (a 4-bit base
answers another question than a float one); this is where they meet: runs that differ only in
`quant` (its name and settings) and seed, one table per method, one row per quantization, with
the float base (`quant=none`) as the reference for the metric's Δ, the model's bytes and the
training time. `method=lora quant=nf4` is QLoRA. A folder whose runs all share one
quantization gets no such table."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from peftlab.report.aggregate import (
    MB,
    Settings,
    data_sizes,
    group_by,
    mark_distinguishing,
    mean_of,
    metric_label,
    metric_split,
    metric_values,
    row_label,
    variant_labels,
)
from peftlab.report.comparison import BUDGET_SETTINGS, QUANT_SECTION, UNKNOWN, budget_differences, group_settings
from peftlab.report.read import Run

REFERENCE = "none"
BITS_ORDER = ("none", "int8", "nf4")  # most bits first; other quant files after them, by name
QuantKey = tuple[str, Settings]  # the quant name and its settings (config.quant)


@dataclass
class QuantRow:
    """One quantization of one method: means over its successful runs. Metric values are in
    points (x100); ratios are over the `none` row's means, None where there is no such row."""

    label: str  # the quant name, with the setting that tells it apart where two rows share a name
    seeds: list[int]
    metric_mean: float
    metric_std: float | None  # sample std (ddof=1); None for a single run
    delta_vs_none: float | None
    model_mb: float | None  # memory.model_bytes: the model as loaded, quantization scales included
    model_vs_none: float | None
    peak_rss_mb: float | None
    peak_cuda_mb: float | None
    train_seconds: float | None
    time_vs_none: float | None
    samples_per_second: float | None
    budget_differences: list[str] = field(default_factory=list)  # vs none's budget: its Δ is marked

    @property
    def n(self) -> int:
        return len(self.seeds)


@dataclass
class QuantGroup:
    """The successful runs of one method (at one variant, as in the method tables) that differ
    only in quantization and seed."""

    task: str
    dataset: str
    backbone: str
    method: str
    primary_metric: str
    settings: Settings  # every group setting but the quant.* keys, shared by every run here
    split: str  # "test", or "validation" when some run of the group has no test split
    rows: list[QuantRow]
    data_sizes: dict[str, list[int]]
    variant: str = ""  # the training settings that tell it from the method's other tables
    distinguishing: Settings = ()  # settings that tell this table from another with the same heading

    @property
    def label(self) -> str:
        return row_label(self.method, self.variant)

    @property
    def key(self) -> tuple[str, str, str, str, str, Settings]:
        return (self.task, self.dataset, self.backbone, self.label, self.primary_metric, self.settings)

    @property
    def on_gpu(self) -> bool:
        return any(row.peak_cuda_mb is not None for row in self.rows)

    @property
    def budget_warnings(self) -> list[str]:
        return [f"`{row.label}`: {', '.join(row.budget_differences)}" for row in self.rows if row.budget_differences]

    def metric_label(self) -> str:
        return metric_label(self.split, self.settings, self.data_sizes)


def quantization_groups(runs: list[Run]) -> list[QuantGroup]:
    """A table for every method whose successful runs, otherwise alike, used more than one
    quantization."""
    successful = [run for run in runs if run.status == "ok"]
    groups = [
        _build_group(key, variant, members)
        for key, alike in sorted(group_by(successful, _group_key).items())
        for variant, members in sorted(group_by_variant(alike).items())
        if len(group_by(members, _quant_key)) > 1
    ]
    mark_distinguishing(groups)
    return groups


def _group_key(run: Run) -> tuple[str, str, str, str, str, Settings]:
    return (
        run.task, run.dataset, run.backbone, run.method, str(run.primary_metric), _without_quant(group_settings(run))
    )


def _quant_key(run: Run) -> QuantKey:
    quant = tuple((key, value) for key, value in group_settings(run) if key.startswith(f"{QUANT_SECTION}."))
    return run.quant, quant


def _without_quant(settings: Settings) -> Settings:
    return tuple((key, value) for key, value in settings if not key.startswith(f"{QUANT_SECTION}."))


def group_by_variant(runs: list[Run]) -> dict[str, list[Run]]:
    """One method's runs by the training settings they differ in (aggregate.variant_labels):
    a 4-bit run at r=16 is no quantized twin of a float run at r=8. A budget that differs is no
    variant here: the table marks its Δ, as the method table does against full."""
    variants = dict(zip((run.path for run in runs), variant_labels(runs, ignored=BUDGET_SETTINGS)))
    return group_by(runs, lambda run: variants[run.path])


def _build_group(key: tuple[str, str, str, str, str, Settings], variant: str, runs: list[Run]) -> QuantGroup:
    split = metric_split(runs)
    by_quant = group_by(runs, _quant_key)
    # the reference is the float base when there is one; two differently configured ones leave it open
    float_bases = [members for (name, _), members in by_quant.items() if name == REFERENCE]
    float_runs = float_bases[0] if len(float_bases) == 1 else []
    reference = _means(float_runs, split) if float_runs else None
    labels = _labels(list(by_quant))
    rows = []
    for quant in sorted(by_quant, key=_bits_order):
        row = _row(labels[quant], by_quant[quant], split, reference)
        if float_runs and quant[0] != REFERENCE:
            row.budget_differences = budget_differences(by_quant[quant], float_runs, REFERENCE)
        rows.append(row)
    return QuantGroup(*key, split=split, rows=rows, data_sizes=data_sizes(runs), variant=variant)


def _bits_order(quant: QuantKey) -> tuple[int, str, Settings]:
    name, settings = quant
    return (BITS_ORDER.index(name) if name in BITS_ORDER else len(BITS_ORDER)), name, settings


def _labels(quants: list[QuantKey]) -> dict[QuantKey, str]:
    """The quant name; where several rows share it (nf4 with and without double_quant), the
    settings in which they differ beside it (n/a where a file does not record one)."""
    labels = {}
    for name, same_name in group_by(quants, lambda quant: quant[0]).items():
        keys = list(dict.fromkeys(key for _, settings in same_name for key, _ in settings))
        values = [dict(settings) for _, settings in same_name]
        differing = [key for key in keys if len({value.get(key, UNKNOWN) for value in values}) > 1]
        for quant, value in zip(same_name, values):
            shown = ", ".join(f"{key}={value.get(key, UNKNOWN)}" for key in differing)
            labels[quant] = f"{name} ({shown})" if shown else name
    return labels


@dataclass(frozen=True)
class _Means:
    metric: float
    model_mb: float | None
    train_seconds: float | None


def _means(runs: list[Run], split: str) -> _Means:
    return _Means(
        statistics.fmean(metric_values(runs, split)),
        mean_of((run.memory.model_bytes for run in runs if run.memory), scale=1 / MB),
        mean_of(run.timing.train_seconds for run in runs if run.timing),
    )


def _row(label: str, runs: list[Run], split: str, reference: _Means | None) -> QuantRow:
    by_seed = sorted(runs, key=lambda run: run.seed)
    values = metric_values(by_seed, split)
    mine = _means(by_seed, split)
    return QuantRow(
        label=label,
        seeds=[run.seed for run in by_seed],
        metric_mean=mine.metric,
        metric_std=statistics.stdev(values) if len(values) > 1 else None,
        delta_vs_none=None if reference is None else mine.metric - reference.metric,
        model_mb=mine.model_mb,
        model_vs_none=_ratio(mine.model_mb, reference and reference.model_mb),
        peak_rss_mb=mean_of(run.memory.peak_rss_mb for run in runs if run.memory),
        peak_cuda_mb=mean_of(run.memory.peak_cuda_mb for run in runs if run.memory),
        train_seconds=mine.train_seconds,
        time_vs_none=_ratio(mine.train_seconds, reference and reference.train_seconds),
        samples_per_second=mean_of(run.timing.train_samples_per_second for run in runs if run.timing),
    )


def _ratio(value: float | None, reference: float | None) -> float | None:
    return None if value is None or not reference else value / reference
