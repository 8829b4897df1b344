"""Read CSV and TSV files with a header row, through Python's `csv` module.

CSV follows RFC 4180 as spreadsheets write it: a field holding a comma, a quote or a line break
is quoted, quotes inside are doubled, and a quoted field may span lines (Banking77 has such
fields). Because of those, a row's line number is not its row number: every message names the
line where the row starts, counted in the file. TSV is read as GLUE and most corpora write it:
no quoting at all, so a `"` is text (`he said "no"`) and a field holds neither a tab nor a line
break. Rows come out keyed by the header's names; `task.data.columns` maps them."""

from __future__ import annotations

import csv
import io
from functools import partial
from pathlib import Path

from peftlab.data.columns import Table
from peftlab.data.splits import read_split_files
from peftlab.data.text import DEFAULT_ENCODING, read_text
from peftlab.errors import DataError

CSV_EXTENSIONS = (".csv",)
TSV_EXTENSIONS = (".tsv",)
CSV_EXPECTED = (
    "a CSV file needs a header row with the column names, then one row per example with as many "
    "fields; a field holding a comma, a quote or a line break goes in double quotes, with any quote "
    'inside doubled ("")'
)
TSV_EXPECTED = (
    "a TSV file needs a header row with the column names, then one line per example with as many "
    "tab-separated fields; quotes are read as text"
)


def read_csv(path: str | Path, encoding: str = DEFAULT_ENCODING) -> Table:
    return _read(Path(path), encoding, delimiter=",", quoting=csv.QUOTE_MINIMAL, expected=CSV_EXPECTED)


def read_tsv(path: str | Path, encoding: str = DEFAULT_ENCODING) -> Table:
    return _read(Path(path), encoding, delimiter="\t", quoting=csv.QUOTE_NONE, expected=TSV_EXPECTED)


def read_csv_dir(directory: str | Path, encoding: str = DEFAULT_ENCODING) -> dict[str, Table]:
    read = partial(read_csv, encoding=encoding)
    return read_split_files(directory, CSV_EXTENSIONS, read, "rows below the header", CSV_EXPECTED)


def read_tsv_dir(directory: str | Path, encoding: str = DEFAULT_ENCODING) -> dict[str, Table]:
    read = partial(read_tsv, encoding=encoding)
    return read_split_files(directory, TSV_EXTENSIONS, read, "rows below the header", TSV_EXPECTED)


def _read(path: Path, encoding: str, delimiter: str, quoting: int, expected: str) -> Table:
    """The header, then every non-blank row as {column: field} with the line it starts on."""
    text = io.StringIO(read_text(path, encoding), newline="")
    reader = csv.reader(text, delimiter=delimiter, quoting=quoting, strict=True)
    header: list[str] | None = None
    rows, lines = [], []
    while True:
        start = reader.line_num + 1
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as error:
            raise _row_error(path, start, reader.line_num, f"the row cannot be parsed ({error})", expected) from error
        if not any(field.strip() for field in fields):
            continue
        if header is None:
            header = _header(path, start, fields, expected)
            continue
        if len(fields) != len(header):
            problem = f"this row has {len(fields)} fields but the header has {len(header)} ({header})"
            raise _row_error(path, start, reader.line_num, problem, expected)
        rows.append(dict(zip(header, fields)))
        lines.append(start)
    return Table(origin=str(path), rows=rows, columns=header or [], lines=lines)


def _header(path: Path, line: int, fields: list[str], expected: str) -> list[str]:
    names = [name.strip() for name in fields]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise _row_error(path, line, line, f"the header names columns {repeated} more than once", expected)
    return names


def _row_error(path: Path, start: int, end: int, problem: str, expected: str) -> DataError:
    lines = f"{start}" if end <= start else f"{start} (the row runs to line {end})"
    return DataError(f"{path}:{lines}: {problem}; {expected}. Fix or remove that row.")
