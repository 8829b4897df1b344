"""Read JSON Lines files: one JSON object per line (`{"text": "...", "label": "..."}`), blank
lines skipped. Objects may have different keys, so a missing key is reported for the line that
lacks it when `task.data.columns` is applied. Values keep their JSON types (an integer label
stays an integer until the task reads it)."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

from peftlab.data.columns import Table
from peftlab.data.splits import read_split_files
from peftlab.data.text import DEFAULT_ENCODING, read_lines
from peftlab.errors import DataError

JSONL_EXTENSIONS = (".jsonl",)
EXPECTED_LINE = 'each line needs one JSON object, e.g. {"text": "a moving film", "label": "positive"}'
JSON_TYPE_NAMES = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "a boolean", type(None): "null"}


def read_jsonl(path: str | Path, encoding: str = DEFAULT_ENCODING) -> Table:
    path = Path(path)
    rows, lines = [], []
    for number, line in enumerate(read_lines(path, encoding), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise _line_error(path, number, f"this line is not valid JSON ({error.msg} at column {error.colno})") from error
        if not isinstance(row, dict):
            raise _line_error(path, number, f"this line holds {JSON_TYPE_NAMES[type(row)]}, not an object")
        rows.append(row)
        lines.append(number)
    return Table(origin=str(path), rows=rows, columns=None, lines=lines)


def read_jsonl_dir(directory: str | Path, encoding: str = DEFAULT_ENCODING) -> dict[str, Table]:
    return read_split_files(directory, JSONL_EXTENSIONS, partial(read_jsonl, encoding=encoding), "JSON objects", EXPECTED_LINE)


def _line_error(path: Path, number: int, problem: str) -> DataError:
    return DataError(f"{path}:{number}: {problem}; {EXPECTED_LINE}. Fix or remove that line.")
