"""Data efficiency: the metric against the number of training examples, one line per method.

The method tables never pool runs whose training sets differ (`task.shots_per_class`,
`task.max_train_samples` and `task.data_seed` split them, comparison.py); this view lays those
tables side by side. Runs that differ only in their training-set size, their data seed and their
training seed form one view; in it, the runs of one method at one size are one cell, mean ±
sample std over them. The data seed draws which examples a K-shot or subsampled run trains on,
so across it the runs are repeated draws of one experiment: here it is a seed-like axis, pooled
like the training seed (the tables above keep every data seed apart).

The x value of a size is the mean of `data_sizes.train` over its runs: the examples actually
used (a NER K-shot set has more sentences in one draw than in another). A method that trains
no parameter (0 trainable, such as prompting with in-context examples) is no curve of training
examples: it is drawn as a horizontal reference per size it ran at. Full fine-tuning is drawn
as the reference line of the methods that train. A view is made where its runs have at least two
training-set sizes. Here too the blocks of the report (a table per view, rows method, columns
size), efficiency.png (matplotlib) and efficiency.csv."""

from __future__ import annotations

import csv
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peftlab.report.aggregate import (
    FULL, MISSING, Settings, data_sizes, group_by, mark_distinguishing, metric_label, metric_split, metric_values,
    row_label, variant_labels,
)
from peftlab.report.comparison import (
    BUDGET_SETTINGS, EPOCHS, MAX_STEPS, UNKNOWN, config_value, group_settings, raw_setting, shown,
)
from peftlab.report.read import Run
from peftlab.report.renderers import Block, Bullets, Heading, Image, Paragraph, Table
from peftlab.report.tables import _metric, distinguishing, title

SHOTS, MAX_TRAIN, DATA_SEED = "task.shots_per_class", "task.max_train_samples", "task.data_seed"
SIZE_SETTINGS = (SHOTS, MAX_TRAIN)
POOLED_SETTINGS = (*SIZE_SETTINGS, DATA_SEED)  # what a view spans, beside method and seed
EFFICIENCY_PNG, EFFICIENCY_CSV = "efficiency.png", "efficiency.csv"
Size = tuple[str, str]  # (task.shots_per_class, task.max_train_samples) as shown


@dataclass
class Cell:
    """One method (at one variant) at one training-set size: its runs pooled over data seeds and
    training seeds."""

    method: str
    variant: str  # as in the method tables, but budget settings never make one (the view notes them)
    size: Size
    scores: list[float]  # the primary metric of each run, in points
    data_seeds: list[str]
    seeds: list[int]
    train_examples: float | None  # mean data_sizes.train; None where no run recorded it
    trains_nothing: bool  # every run has params.trainable == 0

    @property
    def n(self) -> int:
        return len(self.scores)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.scores)

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.scores) if self.n > 1 else None


@dataclass
class EfficiencyView:
    """The runs that differ only in training-set size, data seed, method and seed."""

    task: str
    dataset: str
    backbone: str
    quant: str
    primary_metric: str
    settings: Settings  # shared by every run here: the group settings but size and data seed
    split: str
    sizes: list[Size]  # by training examples, fewest first
    methods: list[str]  # row labels (method, variant) that train, by trainable parameters, full last; then the rest
    cells: dict[tuple[str, Size], Cell]  # (row label, size) -> cell
    budget_notes: list[str]
    data_sizes: dict[str, list[int]]  # split -> the example counts its runs recorded
    distinguishing: Settings = ()

    @property
    def key(self) -> tuple[str, str, str, str, str, Settings]:
        return (self.task, self.dataset, self.backbone, self.quant, self.primary_metric, self.settings)

    def size_examples(self, size: Size) -> float | None:
        """Mean training examples at this size, over its cells (the methods of one data seed
        train on the same draw, so their cells agree but where a method lacks a data seed)."""
        counts = [cell.train_examples for (_, at), cell in self.cells.items() if at == size and cell.train_examples]
        return statistics.fmean(counts) if counts else None


def size_label(size: Size) -> str:
    """K=8, ≤1000 (task.max_train_samples), or all."""
    shots, cap = size
    if shots not in ("null", UNKNOWN):
        return f"K={shots}"
    if cap not in ("null", UNKNOWN):
        return f"≤{cap}"
    return "all"


def efficiency_views(runs: list[Run]) -> list[EfficiencyView]:
    """A view for every set of successful runs, otherwise alike, that trained on at least two
    training-set sizes."""
    successful = [run for run in runs if run.status == "ok"]
    views = [
        _view(key, members) for key, members in sorted(group_by(successful, _view_key).items())
        if len(group_by(members, _size)) > 1
    ]
    mark_distinguishing(views)
    return views


def _view_key(run: Run) -> tuple[str, str, str, str, str, Settings]:
    identity = (str(getattr(run, name)) for name in ("task", "dataset", "backbone", "quant", "primary_metric"))
    settings = tuple((key, value) for key, value in group_settings(run) if key not in POOLED_SETTINGS)
    return (*identity, settings)


def _size(run: Run) -> Size:
    return tuple(shown(config_value(run, key)) for key in SIZE_SETTINGS)


def _view(key: tuple[str, str, str, str, str, Settings], runs: list[Run]) -> EfficiencyView:
    split = metric_split(runs)
    variants = _variants(runs)
    labels = {run.path: row_label(str(run.method), variants[run.path]) for run in runs}
    cells = {
        (label, size): _cell(variants[members[0].path], size, members, split)
        for (label, size), members in group_by(runs, lambda run: (labels[run.path], _size(run))).items()
    }
    view = EfficiencyView(*key, split=split, sizes=[], methods=_method_order(runs, labels, cells), cells=cells,
                          budget_notes=_budget_notes(runs), data_sizes=data_sizes(runs))
    view.sizes = sorted({size for _, size in cells}, key=lambda size: _examples_order(view, size))
    return view


def _variants(runs: list[Run]) -> dict[str, str]:
    """run path -> its variant among its method's runs in the view (aggregate.variant_labels). A
    budget that changes with the size (more steps for more examples) makes no variant: the view
    spans it and says so in its budget notes."""
    return {
        run.path: variant
        for members in group_by(runs, lambda run: run.method).values()
        for run, variant in zip(members, variant_labels(members, ignored=BUDGET_SETTINGS))
    }


def _cell(variant: str, size: Size, runs: list[Run], split: str) -> Cell:
    ordered = sorted(runs, key=lambda run: (shown(config_value(run, DATA_SEED)), run.seed))
    counts = [run.data_sizes["train"] for run in ordered if "train" in run.data_sizes]
    return Cell(
        method=str(ordered[0].method),
        variant=variant,
        size=size,
        scores=metric_values(ordered, split),
        data_seeds=[shown(config_value(run, DATA_SEED)) for run in ordered],
        seeds=[run.seed for run in ordered],
        train_examples=statistics.fmean(counts) if counts else None,
        trains_nothing=all(run.params is not None and run.params.trainable == 0 for run in ordered),
    )


def _examples_order(view: EfficiencyView, size: Size) -> tuple[bool, float, str]:
    examples = view.size_examples(size)
    return examples is None, examples or 0.0, size_label(size)


def _method_order(runs: list[Run], labels: dict[str, str], cells: dict[tuple[str, Size], Cell]) -> list[str]:
    """Row labels of methods that train by their trainable parameters, full last, as in the method
    tables; then those of methods that train nothing."""
    def order(label: str) -> tuple[bool, bool, float, str]:
        mine = [cell for (name, _), cell in cells.items() if name == label]
        known = [run.params.trainable for run in runs if labels[run.path] == label and run.params is not None]
        mean_trainable = statistics.fmean(known) if known else float("inf")
        return all(cell.trains_nothing for cell in mine), mine[0].method == FULL, mean_trainable, label

    return sorted(set(labels.values()), key=order)


def _budget_notes(runs: list[Run]) -> list[str]:
    """The budget settings on which the view's runs differ: a point of the curve then differs
    in training as well as in data. trainer.epochs is left out when every run sets max_steps."""
    steps_only = all(isinstance(raw_setting(run, MAX_STEPS), int) and raw_setting(run, MAX_STEPS) > 0 for run in runs)
    notes = []
    for key in BUDGET_SETTINGS:
        if steps_only and key == EPOCHS:
            continue
        values = sorted({shown(config_value(run, key)) for run in runs})
        if len(values) > 1:
            notes.append(f"{key} differs across these runs ({', '.join(values)})")
    return notes


def write_efficiency_csv(views: list[EfficiencyView], path: Path) -> Path:
    """One row per method (and variant) and training-set size: the numbers of the table and the plot, with
    the runs' data seeds and seeds, metric as a fraction like results.csv."""
    columns = [
        "task", "dataset", "backbone", "quant", *(key for key, _ in views[0].distinguishing), "method", "variant",
        "size",
        SHOTS, MAX_TRAIN, "train_examples_mean", "n", "data_seeds", "seeds", "primary_metric", "metric_split",
        "metric_mean", "metric_std", "trains_nothing",
    ]
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=columns, extrasaction="ignore", restval="")
        writer.writeheader()
        for view in views:
            for method in view.methods:
                for size in view.sizes:
                    cell = view.cells.get((method, size))
                    if cell is not None:
                        writer.writerow(_csv_row(view, cell))
    return path


def _csv_row(view: EfficiencyView, cell: Cell) -> dict[str, Any]:
    return {
        "task": view.task, "dataset": view.dataset, "backbone": view.backbone, "quant": view.quant,
        **dict(view.distinguishing), "method": cell.method, "variant": cell.variant, "size": size_label(cell.size),
        **{key: "" if value in ("null", UNKNOWN) else value for key, value in zip(SIZE_SETTINGS, cell.size)},
        "train_examples_mean": "" if cell.train_examples is None else f"{cell.train_examples:g}", "n": cell.n,
        "data_seeds": " ".join(cell.data_seeds), "seeds": " ".join(map(str, cell.seeds)),
        "primary_metric": view.primary_metric, "metric_split": view.split, "metric_mean": f"{cell.mean / 100:.6g}",
        "metric_std": "" if cell.std is None else f"{cell.std / 100:.6g}", "trains_nothing": cell.trains_nothing,
    }


def write_efficiency(views: list[EfficiencyView], out: Path) -> tuple[dict[str, Path], list[str]]:
    """efficiency.csv and efficiency.png where there is a view, and a sentence where the plot
    cannot be drawn. Files of an earlier report are removed first, as plots.py does."""
    for name in (EFFICIENCY_PNG, EFFICIENCY_CSV):
        (out / name).unlink(missing_ok=True)
    if not views:
        return {}, []
    written = {"efficiency_csv": write_efficiency_csv(views, out / EFFICIENCY_CSV)}
    try:
        import matplotlib  # noqa: F401  (only to know whether the plot can be drawn)
    except ImportError:
        return written, ["No data-efficiency plot: it needs matplotlib (`pip install 'peftlab[report]'`)."]
    written["efficiency"] = plot_efficiency(views, out / EFFICIENCY_PNG)
    return written, []


CAPTION = (
    "{metric} ×100 ({split}) against the training-set size: K = `task.shots_per_class` (K examples of each "
    "label; for NER, sentences until every entity type has K entities), ≤N = `task.max_train_samples`, all = the "
    "whole training split; under each size, the training examples its runs used (mean of `data_sizes.train`). "
    "Each cell: mean ± sample std (ddof=1) over the method's runs at that size, n = runs. Those runs differ in "
    "data seed (`task.data_seed`, which draws the examples) and in training seed where several ran: the data seed "
    "is a seed-like axis here, so its runs are pooled, where the tables above keep each data seed apart. "
    "Full fine-tuning is the reference (the black line in the plot); a method that trains no parameter is a "
    "horizontal line there."
)


def efficiency_blocks(views: list[EfficiencyView], written: dict[str, Path], notes: list[str]) -> list[Block]:
    """A heading, the caption and the table (rows method, columns size) per view, then the plot."""
    blocks: list[Block] = []
    for view in views:
        blocks += [
            Heading(
                f"Data efficiency: `{view.task}` on `{view.dataset}`, backbone `{view.backbone}`, quant `{view.quant}`"
                f"{distinguishing(view)}"
            ),
            Paragraph(CAPTION.format(
                metric=view.primary_metric, split=metric_label(view.split, view.settings, view.data_sizes)
            )),
            efficiency_table(view),
        ]
        if view.budget_notes:
            blocks += [Paragraph("Budgets differ, so a point differs in training as well as in data:"),
                       Bullets(view.budget_notes)]
    if "efficiency" in written:
        blocks.append(Image("metric vs training examples", written["efficiency"]))
    return blocks + [Paragraph(note) for note in notes]


def efficiency_table(view: EfficiencyView) -> Table:
    headers = ["method"]
    for size in view.sizes:
        examples = view.size_examples(size)
        headers.append(size_label(size) + ("" if examples is None else f" ({examples:,.0f} examples)"))
    rows = []
    for method in view.methods:
        cells = [view.cells.get((method, size)) for size in view.sizes]
        trains_nothing = all(cell.trains_nothing for cell in cells if cell is not None)
        rows.append([
            f"{method} (trains nothing)" if trains_nothing else method,
            *(MISSING if cell is None else _metric(cell.mean, cell.std, cell.n) for cell in cells),
        ])
    return Table(headers, rows, numeric=True)


def plot_efficiency(views: list[EfficiencyView], path: Path) -> Path:
    """Metric against training examples (log x), one panel per view: a line per method that
    trains (mean ± std over its runs at each size), full fine-tuning in black and thicker (the
    reference), and a dotted horizontal line per size for a method that trains nothing."""
    from peftlab.report.plots import _figure

    figure, axes = _figure(len(views))
    methods = dict.fromkeys(method for view in views for method in view.methods)
    colors = {method: f"C{number % 10}" for number, method in enumerate(methods)}
    for axis, view in zip(axes, views):
        for method in view.methods:
            cells = [view.cells[method, size] for size in view.sizes if (method, size) in view.cells]
            if all(cell.trains_nothing for cell in cells):
                for cell in cells:
                    axis.axhline(cell.mean, color=colors[method], linestyle=":", linewidth=1.5,
                                 label=f"{method} ({size_label(cell.size)}, 0 trained): {cell.mean:.1f}")
                continue
            placed = [cell for cell in cells if cell.train_examples]
            if not placed:
                continue
            reference = method == FULL
            axis.errorbar(
                [cell.train_examples for cell in placed], [cell.mean for cell in placed],
                yerr=[cell.std or 0 for cell in placed], marker="o", capsize=3,
                color="black" if reference else colors[method], linewidth=2.5 if reference else 1.2,
                label=f"{method} (reference)" if reference else method, zorder=3 if reference else 2,
            )
        axis.set_xscale("log")
        axis.set_xlabel("training examples used (log scale)")
        axis.set_ylabel(f"{view.primary_metric} ×100 ({view.split}), mean ± std over data seeds")
        axis.set_title(title(view), fontsize=10)
        axis.grid(True, which="both", alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=8)
        else:  # files older than `data_sizes` record no training-set size to place a point at
            axis.text(0.5, 0.5, "no run records its training-set size (result.json data_sizes)",
                      ha="center", va="center", transform=axis.transAxes, fontsize=9)
    figure.savefig(path, dpi=110)
    return path
