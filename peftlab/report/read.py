"""Reading a folder of result.json files for the report. `load_result` is the one place a file
becomes what the rest of the package works on (a dict as run.py wrote it); everything else
reads those dicts through `number` and `section`, which tolerate what older files lack."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peftlab.errors import PeftlabError
from peftlab.result import RESULT_FILE

IDENTITY = ("task", "dataset", "method", "backbone", "quant", "seed")


class NoResultsError(PeftlabError):
    """The folder is missing or holds no result.json: there is nothing to report."""


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
            runs.append({**load_result(path), "path": relative})
        except ValueError as problem:
            unreadable.append(Unreadable(relative, str(problem)))
    return runs, unreadable


def load_result(path: Path) -> dict[str, Any]:
    """One result.json as a dict, or ValueError saying in words why it cannot be used."""
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
    if data["status"] == "ok" and number(data, "metrics", "validation", primary) is None:
        return f"status ok but no number at metrics.validation.{primary} (its primary metric)"
    return None


def number(data: Any, *keys: str) -> float | None:
    """The number at data[key1][key2]..., or None where a key is missing or null, or the value is
    not a finite number."""
    for key in keys:
        data = data.get(key) if isinstance(data, dict) else None
    if isinstance(data, bool) or not isinstance(data, (int, float)) or not math.isfinite(data):
        return None
    return float(data)


def section(data: Any, key: str) -> dict[str, Any]:
    """data[key] where it is a dict, else an empty one (a failed run's sections are empty)."""
    value = data.get(key) if isinstance(data, dict) else None
    return value if isinstance(value, dict) else {}
