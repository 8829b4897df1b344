"""results.csv: one flat row per run, ok and failed, for a spreadsheet or pandas. Its columns
are fixed first and then every key some run has, section by section, so they do not depend on
which file was read first. The measured sections have the columns of their records in
peftlab/result.py: a file older than a key (memory.model_bytes, timing.torch_threads) leaves
its cell empty."""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from peftlab.report.aggregate import SPLITS, Group, Report, Thresholds, group_key
from peftlab.report.comparison import (
    BUDGET_SETTINGS,
    FINGERPRINT,
    GROUP_SETTINGS,
    convergence,
    quant_keys,
    raw_setting,
)
from peftlab.report.read import Run
from peftlab.result import Forgetting, Memory, ParamCount, Timing, primary_score

IDENTITY = ("task", "dataset", "method", "backbone", "quant", "seed")
IDENTITY_COLUMNS = ("task", "dataset", "method", "variant", "backbone", "quant", "seed")  # variant: from its table
PARAM_KEYS, TIMING_KEYS, MEMORY_KEYS, FORGETTING_KEYS = (
    tuple(field.name for field in fields(record)) for record in (ParamCount, Timing, Memory, Forgetting)
)
CONVERGENCE_WORDS = {True: "converged", False: "not converged", None: "unknown"}


def results_rows(report: Report) -> list[dict[str, Any]]:
    """One flat row per run, ok and failed. `metric` is the primary metric as result.json has it
    (a fraction), on `metric_split`, the split the run's table used. Beside the numbers: the
    settings that define its table, its budget, its convergence, the examples it used, its notes
    and the commit that made it. `variant` names the training settings that put the run in a row
    of its own beside its method's other rows (aggregate.variant_labels); empty where none does."""
    groups = {group.key: group for group in report.groups}
    return [
        _flat_run(run, groups[group_key(run)] if run.status == "ok" else None, report.thresholds)
        for run in report.runs
    ]


def _flat_run(run: Run, group: Group | None, thresholds: Thresholds) -> dict[str, Any]:
    split = group.split if group else None
    row = {key: getattr(run, key) for key in ("status", "error", *IDENTITY, FINGERPRINT, "git_sha")}
    row["variant"] = group.variants[run.path] if group else None
    row.update({key: raw_setting(run, key) for key in (*GROUP_SETTINGS, *quant_keys(run), *BUDGET_SETTINGS)})
    row.update(_prefixed("params", asdict(run.params) if run.params else {}))
    row["primary_metric"] = run.primary_metric
    row["metric_split"] = split
    row["metric"] = primary_score(run, split) if split else None
    if split:
        curve = convergence(run)
        row["convergence"] = CONVERGENCE_WORDS[curve.converged(thresholds.converged_delta)]
        row["evaluations"] = curve.evaluations
        row["convergence_gain"] = curve.gain
    row.update(_prefixed("data_sizes", run.data_sizes))
    for name in ("validation", "test"):
        row.update(_prefixed(name, run.metrics.get(name) or {}))
    row.update(_prefixed("timing", asdict(run.timing) if run.timing else {}))
    row.update(_prefixed("memory", asdict(run.memory) if run.memory else {}))
    row.update(_prefixed("forgetting", asdict(run.forgetting) if run.forgetting else {}))
    row["notes"] = run.notes or None
    row["checkpoint_size_bytes"] = run.checkpoint.size_bytes if run.checkpoint else None
    row["path"] = run.path
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
        "status", "error", *IDENTITY_COLUMNS, FINGERPRINT, "git_sha", *GROUP_SETTINGS,
        *section_columns("quant", separator="."), *BUDGET_SETTINGS, *section_columns("params", PARAM_KEYS),
        "primary_metric", "metric_split", "metric", "convergence", "evaluations", "convergence_gain",
        *section_columns("data_sizes", SPLITS), *section_columns("validation"), *section_columns("test"),
        *section_columns("timing", TIMING_KEYS), *section_columns("memory", MEMORY_KEYS),
        *section_columns("forgetting", FORGETTING_KEYS),
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


