"""Read a data file as text the way every reader needs it: UTF-8 with an optional BOM (files
saved by Excel and Notepad start with one, and it would glue itself to the first column name
or label), and errors that name the file and the line."""

from __future__ import annotations

from pathlib import Path

from peftlab.errors import DataError


def read_text(path: Path) -> str:
    """The whole file, decoded as UTF-8 without a leading BOM; line ends are left as they are."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise DataError(f"cannot read {path}: {error.strerror}; check the path and its permissions.") from error
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line_number = data[: error.start].count(b"\n") + 1
        raise DataError(f"{path}:{line_number}: not valid UTF-8 ({error.reason}); save the file as UTF-8.") from error


def read_lines(path: Path) -> list[str]:
    """The file's lines without their ends; CRLF and a lone CR end a line like LF does."""
    return read_text(path).replace("\r\n", "\n").replace("\r", "\n").split("\n")
