"""Reading a folder of result.json files for the report. `load_result` is the one place a file
becomes what the rest of the package works on: the typed `Result` of peftlab/result.py (older
files upgraded there, by `upgrade_result_json`), as a `Run` that also knows where its file is.
A file that does not fit the schema, or an ok run without a validation score to rank, is set
aside with the reason."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from peftlab.errors import PeftlabError
from peftlab.result import RESULT_FILE, Result, ResultFileError, primary_score


class NoResultsError(PeftlabError):
    """The folder is missing or holds no result.json: there is nothing to report."""


@dataclass(frozen=True)
class Unreadable:
    path: str  # relative to the report's folder
    why: str


@dataclass
class Run(Result):
    """A run's Result as the report found it: `path` is its result.json relative to the report's
    folder, for the notes and tables that point at a file. Not part of result.json."""

    path: str = ""


def read_runs(directory: Path) -> tuple[list[Run], list[Unreadable]]:
    """Every result.json under `directory`, in path order. A file that cannot be used is set
    aside with the reason instead of stopping the report: one run killed mid-write must not hide
    the other ninety-nine."""
    if not directory.is_dir():
        raise NoResultsError(f"{directory} is not a folder; give the folder of a run or of a sweep.")
    paths = sorted(path for path in directory.rglob(RESULT_FILE) if path.is_file())
    if not paths:
        raise NoResultsError(f"no {RESULT_FILE} under {directory}; give the folder of a run or of a sweep.")
    runs, unreadable = [], []
    for path in paths:
        relative = path.relative_to(directory).as_posix()
        try:
            runs.append(Run(**vars(load_result(path)), path=relative))
        except ResultFileError as error:
            unreadable.append(Unreadable(relative, error.problem))
    return runs, unreadable


def load_result(path: Path) -> Result:
    """One result.json as its Result, or ResultFileError saying in words why the report cannot
    use it: beyond the schema, an ok run must have the validation score its tables rank by."""
    result = Result.read(path)
    if result.status == "ok" and result.primary_metric is None:
        raise ResultFileError("status ok but no primary_metric", path)
    if result.status == "ok" and primary_score(result, "validation") is None:
        raise ResultFileError(
            f"status ok but no number at metrics.validation.{result.primary_metric} (its primary metric)", path
        )
    return result
