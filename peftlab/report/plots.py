"""The report's figures: pareto.png (metric against trainable share of the base) and curves.png
(validation metric over training steps), one panel per table. matplotlib is imported only here
and only when a figure is drawn (the `report` extra); without it the report says so."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from peftlab.report.aggregate import FULL, Group, MethodRow
from peftlab.report.tables import title

PARETO_FILE, CURVES_FILE = "pareto.png", "curves.png"


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
        f"No learning curve for {title(group)}: no run logged validation {group.primary_metric} during "
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
            elif row.trainable_pct == 0:
                _untrained_reference(axis, row, colors[row.label])
            elif row.trainable_pct:  # a log axis has no place for 0 or an unknown share
                axis.errorbar(
                    row.trainable_pct, row.metric_mean, yerr=row.metric_std or 0, fmt="o", capsize=4,
                    color=colors[row.label],
                )
                axis.annotate(
                    f"{row.label} (n={row.n})", (row.trainable_pct, row.metric_mean),
                    textcoords="offset points", xytext=(6, 4), fontsize=9,
                )
        axis.set_xscale("log")
        axis.margins(x=0.15)  # room for the names beside the outermost points
        axis.set_xlabel("trainable parameters, % of the base model (log scale)")
        axis.set_ylabel(f"{group.primary_metric} ×100 ({group.split}), mean ± std over seeds")
        axis.set_title(title(group), fontsize=10)
        axis.grid(True, which="both", alpha=0.3)
    figure.savefig(path, dpi=110)
    return path


def _full_reference(axis: Any, row: MethodRow) -> None:
    label = f"{row.label} (n={row.n}): {row.metric_mean:.2f}"
    axis.axhline(row.metric_mean, color="0.25", linestyle="--", label=label)
    if row.metric_std:
        axis.axhspan(row.metric_mean - row.metric_std, row.metric_mean + row.metric_std, color="0.25", alpha=0.12)
    axis.legend(loc="lower right", fontsize=9)


def _untrained_reference(axis: Any, row: MethodRow, color: Any) -> None:
    """A method that trains nothing (in-context prompting) has no place on the log axis: a
    dotted line, the floor that training must rise above, as full fine-tuning's line is the top."""
    label = f"{row.label} (n={row.n}, nothing trained): {row.metric_mean:.2f}"
    axis.axhline(row.metric_mean, color=color, linestyle=":", label=label)
    axis.legend(loc="lower right", fontsize=9)


def plot_curves(groups: list[Group], path: Path) -> Path:
    """Validation metric over training steps, one line per row (mean over seeds)."""
    figure, axes = _figure(len(groups))
    colors = method_colors(groups)
    for axis, group in zip(axes, groups):
        for row in group.rows:
            points = group.curves.get(row.label)
            if points:
                steps, values = zip(*points)
                axis.plot(steps, values, marker="o", markersize=3, label=row.label, color=colors[row.label])
        axis.set_xlabel("training step")
        axis.set_ylabel(f"validation {group.primary_metric} ×100, mean over seeds")
        axis.set_title(title(group), fontsize=10)
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize=8)
    figure.savefig(path, dpi=110)
    return path


def method_colors(groups: list[Group]) -> dict[str, str]:
    """One color per row label (method and variant) in every panel of both figures, so a row is
    found at a glance."""
    labels = dict.fromkeys(row.label for group in groups for row in group.rows)
    return {label: f"C{number % 10}" for number, label in enumerate(labels)}


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
