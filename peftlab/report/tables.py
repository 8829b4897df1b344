"""The report's words and tables: aggregate.py's groups laid out as document blocks (a heading,
the settings a table's runs share, the table, the best method per budget, the notes and
checks), the failed runs, and how to read it all. renderers.py turns the blocks into Markdown
and HTML, so both files say the same thing."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from peftlab.report.aggregate import (
    FLAG,
    FULL,
    MISSING,
    VALIDATION_MARK,
    Group,
    MethodRow,
    Report,
)
from peftlab.report.comparison import UNKNOWN
from peftlab.report.quantization import REFERENCE, QuantGroup, QuantRow
from peftlab.report.read import Run
from peftlab.report.renderers import Block, Bold, Bullets, Heading, Image, Paragraph, Table
from peftlab.result import RESULT_FILE, Forgetting

BUDGET_MARK = "*"
HELD_OUT_COLUMN = "held-out LM loss Δ"

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


def report_blocks(
    report: Report, quantization: list[QuantGroup], command: str, plots: dict[str, Path], plot_notes: list[str],
    views: list[Block] = (),
) -> list[Block]:
    """The whole document; `views` are other views across the tables (data efficiency), placed
    after the tables and before the plots."""
    ok, failed = len(report.runs) - len(report.failed), len(report.failed)
    read = len(report.runs) + len(report.unreadable)
    blocks: list[Block] = [
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
    for quant_group in quantization:
        blocks += quantization_blocks(quant_group)
    blocks += views
    blocks += plot_blocks(plots, plot_notes)
    if report.failed:
        blocks += [Heading("Failed runs"), failed_table(report.failed)]
    if report.unreadable:
        rows = [[f"`{file.path}`", file.why] for file in report.unreadable]
        blocks += [Heading("Unreadable files"), Table(["file", "why it was skipped"], rows)]
    return blocks


def group_blocks(group: Group) -> list[Block]:
    blocks: list[Block] = [
        Heading(
            f"`{group.task}` on `{group.dataset}`: backbone `{group.backbone}`, quant `{group.quant}`"
            f"{distinguishing(group)}"
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
    if group.held_out:
        blocks.append(Paragraph(held_out_line(group.held_out)))
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
    with_forgetting = any(row.lm_loss_change is not None for row in group.rows)
    headers = [
        "method", "trainable params", "% of base", f"{group.primary_metric} ×100 ({group.metric_label()})",
        "Δ vs full", *([HELD_OUT_COLUMN] if with_forgetting else []), "peak RSS MB",
        *(["peak CUDA MB"] if with_cuda else []), "train s", "samples/s", "checkpoint MB",
        *(["notes"] if with_notes else []),
    ]
    best = [row for _, row in group.best if row is not None]
    rows = []
    for row in group.rows:
        emphasis = Bold if any(row is winner for winner in best) else str
        rows.append([
            emphasis(row.label), _count(row.trainable), _percent(row.trainable_pct), emphasis(metric_cell(row)),
            delta_cell(row), *([lm_loss_change_cell(row)] if with_forgetting else []), _fixed(row.peak_rss_mb, 0),
            *([_fixed(row.peak_cuda_mb, 0)] if with_cuda else []),
            _fixed(row.train_seconds, 1), _fixed(row.samples_per_second, 1), _fixed(row.checkpoint_mb, 2),
            *([" ".join(f"[{mark}]" for mark in row.note_marks)] if with_notes else []),
        ])
    return Table(headers, rows, numeric=True)


def lm_loss_change_cell(row: MethodRow) -> str:
    """The held-out LM loss change, mean ± sample std over runs, signed: + is forgetting."""
    if row.lm_loss_change is None:
        return MISSING
    spread = "" if row.lm_loss_change_std is None else f" ± {row.lm_loss_change_std:.3f}"
    return f"{row.lm_loss_change:+.3f}{spread}"


def held_out_line(held_out: list[Forgetting]) -> str:
    """What the held-out LM loss column measures, on which text, from which starting loss."""
    first = held_out[0]
    lowest = min(record.lm_loss_before for record in held_out)
    highest = max(record.lm_loss_before for record in held_out)
    losses, perplexities = f"{lowest:.3f}", f"{math.exp(lowest):,.1f}"
    if f"{highest:.3f}" != losses:  # every method starts from the same base: a spread is numerical noise, shown
        losses, perplexities = f"{losses} to {highest:.3f}", f"{perplexities} to {math.exp(highest):,.1f}"
    return (
        f"{HELD_OUT_COLUMN}: the language-model loss (nats per predicted token) on held-out text the runs were not "
        f"fine-tuned on, `{first.texts}` ({first.texts_used:,} texts, {first.tokens:,} predicted tokens; "
        f"`forgetting.texts`), after training minus before, mean ± std over runs. Positive: the model got worse at "
        f"text it was not trained on (forgetting). Before fine-tuning: {losses} (perplexity {perplexities})."
    )


def metric_cell(row: MethodRow) -> str:
    flags = (["bimodal"] if row.bimodal else []) + (
        [f"not converged {len(row.not_converged)}/{row.n}"] if row.not_converged else []
    )
    flagged = f" {FLAG} {', '.join(flags)}" if flags else ""
    return _metric(row.metric_mean, row.metric_std, row.n) + flagged


def _metric(mean: float, std: float | None, n: int) -> str:
    """mean ± sample std (n=runs), no ± for a single run."""
    spread = "" if std is None else f" ± {std:.2f}"
    return f"{mean:.2f}{spread} (n={n})"


def delta_cell(row: MethodRow) -> str:
    return _delta(row.method == FULL, row.delta_vs_full, row.budget_differences)


def _delta(is_reference: bool, delta: float | None, budget_differences: list[str]) -> str:
    """A Δ cell, in the method table and the quantization table alike: — for the reference row,
    n/a without a reference, the points otherwise, marked when the budget differed."""
    if is_reference:
        return "—"
    if delta is None:
        return MISSING
    return f"{delta:+.2f}" + (BUDGET_MARK if budget_differences else "")


def best_line(budget: float | None, row: MethodRow | None) -> str:
    scope = "best overall" if budget is None else f"best within ≤{budget:g}% trainable"
    return f"{scope}: {row.label} ({row.metric_mean:.1f})" if row else f"{scope}: no method"


def quantization_blocks(group: QuantGroup) -> list[Block]:
    blocks: list[Block] = [
        Heading(
            f"Quantization: `{group.label}`, `{group.task}` on `{group.dataset}`, backbone `{group.backbone}`"
            f"{distinguishing(group)}"
        ),
        Paragraph(
            f"The runs of `{group.label}` above, side by side by quantized base (`quant`). Δ and × {REFERENCE}: "
            f"against the float base (`quant={REFERENCE}`); model MB is `memory.model_bytes`, the model as loaded "
            "(base and head, quantization scales included); time × none is train seconds over the float base's."
        ),
    ]
    shared = [f"{key}=`{value}`" for key, value in group.settings if value != UNKNOWN]
    if shared:
        blocks.append(Paragraph(f"Every run here has {', '.join(shared)}."))
    if not group.on_gpu:
        blocks.append(Paragraph(
            "No GPU: on CPU bitsandbytes dequantizes every weight for each matmul, so a quantized base saves "
            "memory here, not time."
        ))
    if group.budget_warnings:
        blocks.append(Paragraph(
            f"{FLAG} Not trained on the float base's budget, so their Δ (marked {BUDGET_MARK}) compares "
            f"quantization and budget at once: {'; '.join(group.budget_warnings)}."
        ))
    return blocks + [quantization_table(group)]


def quantization_table(group: QuantGroup) -> Table:
    headers = [
        "quant", f"{group.primary_metric} ×100 ({group.metric_label()})", f"Δ vs {REFERENCE}", "model MB",
        f"model × {REFERENCE}", "peak RSS MB", *(["peak CUDA MB"] if group.on_gpu else []), "train s",
        f"time × {REFERENCE}", "samples/s",
    ]
    rows = [
        [
            row.label, _metric(row.metric_mean, row.metric_std, row.n), quant_delta_cell(row), _fixed(row.model_mb, 1),
            _fixed(row.model_vs_none, 2), _fixed(row.peak_rss_mb, 0),
            *([_fixed(row.peak_cuda_mb, 0)] if group.on_gpu else []),
            _fixed(row.train_seconds, 1), _fixed(row.time_vs_none, 2), _fixed(row.samples_per_second, 1),
        ]
        for row in group.rows
    ]
    return Table(headers, rows, numeric=True)


def quant_delta_cell(row: QuantRow) -> str:
    return _delta(row.label == REFERENCE, row.delta_vs_none, row.budget_differences)


def plot_blocks(plots: dict[str, Path], notes: list[str]) -> list[Block]:
    blocks: list[Block] = [Heading("Plots")]
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


def failed_table(failed: list[Run]) -> Table:
    """One row per failed run; a quant column when one of them had a quantized base."""
    with_quant = any(run.quant != REFERENCE for run in failed)
    rows = [
        [run.task, run.backbone, run.method, *([run.quant] if with_quant else []), str(run.seed),
         error_summary(run.error), f"`{run.path}`"]
        for run in failed
    ]
    return Table(["task", "backbone", "method", *(["quant"] if with_quant else []), "seed", "error", "file"], rows)


def error_summary(error: Any) -> str:
    """The line that says what went wrong: the first one, or for a Python traceback (what run.py
    stores for an unexpected error) the last, which names the exception."""
    lines = [line.strip() for line in str(error or "").splitlines() if line.strip()]
    if not lines:
        return "(no error message)"
    return lines[-1] if lines[0].startswith("Traceback") else lines[0]


def _count(value: float | None) -> str:
    return MISSING if value is None else f"{round(value):,}"


def _percent(value: float | None) -> str:
    """Three significant digits: 100, 1.49, 0.0341 (fixed decimals would show 0.00 for small methods)."""
    return MISSING if value is None else f"{value:.3g}"


def _fixed(value: float | None, decimals: int) -> str:
    return MISSING if value is None else f"{value:,.{decimals}f}"


def title(group: Group) -> str:
    """A figure panel's title: the table's heading in short."""
    dataset = Path(group.dataset).name or group.dataset  # a data folder's path is too long for a title
    return f"{group.task} ({dataset}) · {group.backbone} · quant {group.quant}{distinguishing(group)}"


def distinguishing(group: Group) -> str:
    return "".join(f" · {key}={value}" for key, value in group.distinguishing)
