"""The report of a continual-learning folder (`python -m peftlab.continual`, or
`python -m peftlab.report DIR` on a folder holding continual.json): R[i][j] per regime as tables
and as a heat map (continual.png), the average final metric, backward transfer and forgetting,
and each stage's budget, written as continual.md and a self-contained continual.html.

Read from continual.json alone, which the command writes; the stage runs' result.json files are
not pooled into the method report (`report.md`): a stage after the first trained on a body that
earlier tasks had already moved, which a table of methods would not show."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from peftlab.report.renderers import Block, Bullets, Heading, Image, Paragraph, Table, to_html, to_markdown

CONTINUAL_FILE = "continual.json"
MARKDOWN_FILE, HTML_FILE, PLOT_FILE = "continual.md", "continual.html", "continual.png"
SUMMARY_KEYS = (("final_average", "A (avg final)"), ("backward_transfer", "BWT"), ("forgetting", "F (forgetting)"))
BUDGET_KEYS = ("trainer.epochs", "trainer.max_steps", "trainer.batch_size", "trainer.lr")


def is_continual(directory: Path) -> bool:
    return (Path(directory) / CONTINUAL_FILE).is_file()


def write_continual_report(directory: Path, out: Path | None = None) -> dict[str, Path]:
    """continual.md, continual.html and (with matplotlib) continual.png from `directory`'s
    continual.json, into `out` (default: `directory`). Returns what was written by name."""
    directory = Path(directory)
    out = directory if out is None else Path(out)
    summary = json.loads((directory / CONTINUAL_FILE).read_text(encoding="utf-8"))
    out.mkdir(parents=True, exist_ok=True)
    plot = plot_matrices(summary, out / PLOT_FILE)
    blocks = continual_blocks(summary, plot)
    written = {"markdown": out / MARKDOWN_FILE, "html": out / HTML_FILE}
    written["markdown"].write_text(to_markdown(blocks), encoding="utf-8")
    written["html"].write_text(to_html(blocks), encoding="utf-8")
    return {**written, **({"heatmap": plot} if plot else {})}


def continual_blocks(summary: dict[str, Any], plot: Path | None) -> list[Block]:
    tasks = summary["tasks"]
    regimes = summary["regimes"]
    blocks: list[Block] = [
        Heading(f"Continual learning: {' → '.join(tasks)} on `{summary['backbone']}`", 1),
        Paragraph(f"Command: `{summary['command']}`  \ngit {summary['git_sha']}, seed {summary['seed']}"),
        Paragraph(
            "R[i][j]: task j's primary metric ×100 (" + metric_names(regimes) + "), scored with task j's own head on "
            "the body as stage i left it; empty where j > i (task j has no trained head yet). With T tasks:"
        ),
        Bullets([
            "A (average final metric) = mean over j of R[T][j]: every task, after the whole sequence.",
            "BWT (backward transfer, Lopez-Paz & Ranzato 2017) = mean over j < T of R[T][j] − R[j][j]: what "
            "training the later tasks did to each earlier one; negative is forgetting.",
            "F (forgetting, Chaudhry et al. 2018) = mean over j < T of max over j ≤ l < T of R[l][j] − R[T][j]: "
            "each earlier task's drop from its best score to its last.",
        ]),
    ]
    if not regimes:
        return blocks + [Paragraph("No regime has finished yet.")]
    for split in ("test", "validation"):
        blocks += [Heading(f"Summary ({split})"), summary_table(regimes, tasks, split)]
    for name, regime in regimes.items():
        blocks += [
            Heading(f"`{name}`: {regime['what']} (method `{regime['method']}`)"),
            Paragraph("R on test:"), matrix_table(regime, tasks, "test"),
            Paragraph("R on validation:"), matrix_table(regime, tasks, "validation"),
        ]
    blocks += [
        Heading("Stages: what each trained on"),
        Paragraph("The budget of every stage, as its run folder's result.json records it (`trainer.max_steps` > 0 "
                  "overrides `trainer.epochs`); examples after `task.max_train_samples` / `task.max_eval_samples`."),
        stages_table(regimes),
    ]
    if plot is not None:
        blocks += [Heading("Heat map"), Image("R on test, one panel per regime", plot)]
    else:
        blocks.append(Paragraph("No heat map: it needs matplotlib (`pip install 'peftlab[report]'`)."))
    return blocks


def metric_names(regimes: dict[str, Any]) -> str:
    names = {stage["task"]: stage["primary_metric"] for regime in regimes.values() for stage in regime["stages"]}
    return ", ".join(f"{task}: {metric}" for task, metric in names.items()) or "none scored yet"


def summary_table(regimes: dict[str, Any], tasks: list[str], split: str) -> Table:
    headers = ["regime", "method", *(label for _, label in SUMMARY_KEYS), *(f"{task} final" for task in tasks)]
    rows = []
    for name, regime in regimes.items():
        metrics = regime["metrics"][split]
        final = regime["matrix"][split][-1]
        rows.append([name, regime["method"], *(points(metrics[key], signed=key != "final_average")
                                                for key, _ in SUMMARY_KEYS), *(points(value) for value in final)])
    return Table(headers, rows, numeric=True)


def matrix_table(regime: dict[str, Any], tasks: list[str], split: str) -> Table:
    headers = ["after stage", *(f"{j + 1} {task}" for j, task in enumerate(tasks))]
    rows = [[f"{i + 1} {tasks[i]}", *(points(value) for value in row)] for i, row in enumerate(regime["matrix"][split])]
    return Table(headers, rows, numeric=True)


def stages_table(regimes: dict[str, Any]) -> Table:
    headers = ["regime", "stage", "task", "dataset", "examples (train/val/test)", *BUDGET_KEYS, "trainable %",
               "train s", "run"]
    rows = []
    for name, regime in regimes.items():
        for index, stage in enumerate(regime["stages"]):
            sizes = stage["data_sizes"]
            examples = "/".join(str(sizes.get(split, "—")) for split in ("train", "validation", "test"))
            rows.append([
                name, str(index + 1), stage["task"], f"`{stage['dataset']}`", examples,
                *(f"{stage['budget'][key]:g}" for key in BUDGET_KEYS), f"{stage['trainable_pct']:.3g}",
                f"{stage['train_seconds']:.1f}", f"`{stage['run']}`",
            ])
    return Table(headers, rows, numeric=True)


def points(value: float | None, signed: bool = False) -> str:
    """A 0-1 score as points ×100; a difference with its sign."""
    if value is None:
        return "—"
    return f"{100 * value:+.2f}" if signed else f"{100 * value:.2f}"


def plot_matrices(summary: dict[str, Any], path: Path) -> Path | None:
    """R on test as a heat map, one panel per regime, one color scale for all; None without
    matplotlib or without a finished regime. A plot of an earlier report is removed first."""
    path.unlink(missing_ok=True)
    regimes = summary["regimes"]
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return None
    if not regimes:
        return None
    tasks = summary["tasks"]
    values = [100 * v for regime in regimes.values() for row in regime["matrix"]["test"] for v in row if v is not None]
    low, high = (min(values), max(values)) if values else (0.0, 100.0)
    figure = Figure(figsize=(1.6 + 2.4 * len(tasks) * len(regimes), 1.4 + 1.1 * len(tasks)), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(regimes), squeeze=False)[0]
    for axis, (name, regime) in zip(axes, regimes.items()):
        grid = [[math.nan if v is None else 100 * v for v in row] for row in regime["matrix"]["test"]]
        image = axis.imshow(grid, cmap="viridis", vmin=low, vmax=high)
        for i, row in enumerate(grid):
            for j, value in enumerate(row):
                if not math.isnan(value):
                    color = "white" if value < (low + high) / 2 else "black"  # readable on viridis' dark and light ends
                    axis.text(j, i, f"{value:.1f}", ha="center", va="center", color=color)
        axis.set_xticks(range(len(tasks)), [f"{j + 1} {task}" for j, task in enumerate(tasks)])
        axis.set_yticks(range(len(tasks)), [f"after {i + 1} {task}" for i, task in enumerate(tasks)])
        axis.set_xlabel("task scored (test)")
        axis.set_title(name, fontsize=10)
    figure.colorbar(image, ax=list(axes), label="primary metric ×100 (test)")
    figure.savefig(path, dpi=110)
    return path
