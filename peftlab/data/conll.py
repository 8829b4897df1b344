"""Read CoNLL-column NER files as they are found in the wild: one word per line, a blank line
between sentences, `-DOCSTART-` lines between documents. The token is the first column and the
IOB2 tag the last, so 2-column (WNUT-17) and 4-column (CoNLL-2003) files read alike. Columns are
split on tabs when a line has one (tweet tokens may hold spaces), else on runs of spaces. CRLF
line ends and U+FEFF (a BOM at the start, or stray ones inside concatenated files) are tolerated."""

from __future__ import annotations

import re
from functools import partial
from pathlib import Path

from peftlab.data.splits import read_split_files
from peftlab.data.text import DEFAULT_ENCODING, read_lines
from peftlab.errors import DataError

CONLL_EXTENSIONS = (".txt", ".conll", ".tsv", ".iob", ".bio", ".iob2")
DOCUMENT_START = "-DOCSTART-"
BOM = "\ufeff"
IOB2_TAG = re.compile(r"O|[BI]-\S+")
EXPECTED_LINE = (
    "each word line needs the token in the first column and its IOB2 tag (O, B-<type> or I-<type>) "
    "in the last, separated by a tab or spaces, with a blank line between sentences"
)

Sentence = dict[str, list[str]]


def read_conll(path: str | Path, encoding: str = DEFAULT_ENCODING) -> list[Sentence]:
    """[{"tokens": [...], "tags": [...]}, ...] in file order. Tags are kept as written (an I-X
    after O is not repaired: strict IOB2 scoring decides what it means)."""
    path = Path(path)
    sentences: list[Sentence] = []
    tokens: list[str] = []
    tags: list[str] = []
    for number, line in enumerate(read_lines(path, encoding), start=1):
        columns = _columns(line)
        if not columns or columns[0] == DOCUMENT_START:
            if tokens:
                sentences.append({"tokens": tokens, "tags": tags})
                tokens, tags = [], []
            continue
        word = _word(path, number, line, columns)
        if word is not None:
            tokens.append(word[0])
            tags.append(word[1])
    if tokens:
        sentences.append({"tokens": tokens, "tags": tags})
    return sentences


def read_conll_dir(directory: str | Path, encoding: str = DEFAULT_ENCODING) -> dict[str, list[Sentence]]:
    """Every split whose file is in the folder (named as `find_split_files` recognises)."""
    return read_split_files(directory, CONLL_EXTENSIONS, partial(read_conll, encoding=encoding), "sentences", EXPECTED_LINE)


def _columns(line: str) -> list[str]:
    """The line's columns with U+FEFF removed; [] for a blank line, also one that held only a
    stray BOM (WNUT-17's dev file ends with such a line)."""
    line = line.rstrip()
    if "\t" in line:
        columns = [column.strip(" ") for column in line.split("\t")]
    else:
        columns = [column for column in line.split(" ") if column]
    if BOM in line:
        columns = [column.replace(BOM, "").strip(" ") for column in columns]
        if not any(columns):
            return []
    return columns


def _word(path: Path, number: int, line: str, columns: list[str]) -> tuple[str, str] | None:
    """(token, tag) of a word line; None for a word that was only a stray BOM, dropped with
    its tag so that tokens and tags stay aligned."""
    if len(columns) == 1:
        raise _line_error(path, number, line, "this line has a single column")
    token, tag = columns[0], columns[-1]
    if not IOB2_TAG.fullmatch(tag):
        problem = f"tag {tag!r} is not an IOB2 tag (convert IOBES or BILOU tags to IOB2 first)"
        raise _line_error(path, number, line, problem)
    if not token:
        if BOM in line:
            return None
        raise _line_error(path, number, line, "the token column is empty")
    return token, tag


def _line_error(path: Path, number: int, line: str, problem: str) -> DataError:
    return DataError(f"{path}:{number}: {problem}: {line!r}; {EXPECTED_LINE}. Fix or remove that line.")
