"""results.csv: one flat row per run, ok and failed, for a spreadsheet or pandas. Its columns
are fixed first and then every key some run has, section by section, so they do not depend on
which file was read first."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from peftlab.report.aggregate import SPLITS, Report, Thresholds, group_key
from peftlab.report.comparison import (
    BUDGET_SETTINGS,
    FINGERPRINT,
    GROUP_SETTINGS,
    convergence,
    quant_keys,
    raw_setting,
)
from peftlab.report.read import IDENTITY, number, section

PARAM_KEYS = ("base_total", "trainable", "method", "head", "trainable_pct")
TIMING_KEYS = ("train_seconds", "train_samples_per_second", "train_tokens_per_second", "eval_seconds")
MEMORY_KEYS = ("peak_rss_mb", "peak_cuda_mb", "model_bytes")
CONVERGENCE_WORDS = {True: "converged", False: "not converged", None: "unknown"}


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
    metrics = section(run, "metrics")
    row = {key: run.get(key) for key in ("status", "error", *IDENTITY, FINGERPRINT, "git_sha")}
    row.update({key: raw_setting(run, key) for key in (*GROUP_SETTINGS, *quant_keys(run), *BUDGET_SETTINGS)})
    row.update(_prefixed("params", section(run, "params")))
    row["primary_metric"] = run.get("primary_metric")
    row["metric_split"] = split
    row["metric"] = number(metrics, split, run["primary_metric"]) if split else None
    if split:
        curve = convergence(run)
        row["convergence"] = CONVERGENCE_WORDS[curve.converged(thresholds.converged_delta)]
        row["evaluations"] = curve.evaluations
        row["convergence_gain"] = curve.gain
    row.update(_prefixed("data_sizes", section(run, "data_sizes")))
    for name in ("validation", "test"):
        row.update(_prefixed(name, section(metrics, name)))
    for name in ("timing", "memory"):
        row.update(_prefixed(name, section(run, name)))
    row["notes"] = run.get("notes") or None
    row["checkpoint_size_bytes"] = section(run, "checkpoint").get("size_bytes")
    row["path"] = run["path"]
    return row


def _prefixed(prefix: str, values: dict[str, Any]) -> dict[str, Any]:
    return {f"{prefix}_{key}": value for key, value in values.items()}


def csv_columns(rows: list[dict[str, Any]]) -> list[str]:
    """Fixed columns, then every key some run has, section by section, known keys first, so the
    columns do not depend on which run was read first."""
    present = set().union(*rows)

    def section_columns(prefix: str, known: tuple[str, ...] = (), separator: str = "_") -> list[str]:
        found = {column for column in present if column.startswith(f"{prefix}{separator}")}
        ordered = [f"{prefix}{separator}{key}" for key in known if f"{prefix}{separator}{key}" in found]
        return ordered + sorted(found - set(ordered))

    return [
        "status", "error", *IDENTITY, FINGERPRINT, "git_sha", *GROUP_SETTINGS,
        *section_columns("quant", separator="."), *BUDGET_SETTINGS, *section_columns("params", PARAM_KEYS),
        "primary_metric", "metric_split", "metric", "convergence", "evaluations", "convergence_gain",
        *section_columns("data_sizes", SPLITS), *section_columns("validation"), *section_columns("test"),
        *section_columns("timing", TIMING_KEYS), *section_columns("memory", MEMORY_KEYS),
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


