"""Column mapping: the one place where a source's own column names (a CSV header, JSON keys, a
hub dataset's features) become the canonical names a task reads (`text`, `text_pair`, `label`
for classification; `prompt`, `completion` for generation). `task.data.columns` maps each
canonical name to a column of the source; whatever keys it names are carried over, so a new
task kind needs no change here. A canonical name mapped to null is not read (a single-text
dataset leaves `text_pair: null`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from peftlab.errors import DataError

Example = dict[str, Any]


@dataclass(frozen=True)
class Table:
    """The rows of one split as its source names their columns."""

    origin: str  # the file, or the hub dataset and split: messages name it
    rows: list[dict[str, Any]]
    columns: list[str] | None  # what every row has (a CSV header, a hub schema); None where rows differ (JSON Lines)
    lines: list[int] | None = None  # the 1-based line where each row starts, for messages about one row

    def __len__(self) -> int:
        return len(self.rows)


def select_columns(table: Table, columns: Mapping[str, str | None], config_key: str = "task.data.columns") -> list[Example]:
    """[{canonical name: value}] for every row; a column the source lacks is an error that
    names the config key, the column asked for, the columns found and where."""
    wanted = {canonical: column for canonical, column in columns.items() if column is not None}
    if table.columns is not None:
        for canonical, column in wanted.items():
            if column not in table.columns:
                raise _missing_column(config_key, canonical, column, table.columns, table.origin)
    examples = []
    for index, row in enumerate(table.rows):
        example = {}
        for canonical, column in wanted.items():
            if column not in row:
                where = f"{table.origin}:{table.lines[index]}" if table.lines else f"{table.origin}, row {index + 1}"
                raise _missing_column(config_key, canonical, column, list(row), where)
            example[canonical] = row[column]
        examples.append(example)
    return examples


def _missing_column(config_key: str, canonical: str, column: str, found: list[str], where: str) -> DataError:
    return DataError(
        f"{config_key}.{canonical}={column!r} is not a column of {where}; the columns found there are "
        f"{list(found)}. Set {config_key}.{canonical} to the column that holds the {canonical} "
        "(on the command line or in the task's yaml)."
    )
