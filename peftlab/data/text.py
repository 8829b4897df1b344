"""Read a data file as text the way every reader needs it: in the encoding `task.data.encoding`
names (UTF-8 by default, with an optional BOM: files saved by Excel and Notepad start with one,
and it would glue itself to the first column name or label), and errors that name the file,
the line and the key to set."""

from __future__ import annotations

import codecs
from pathlib import Path

from peftlab.errors import ConfigError, DataError

DEFAULT_ENCODING = "utf-8"
ENCODING_KEY = "task.data.encoding"


def read_text(path: Path, encoding: str = DEFAULT_ENCODING) -> str:
    """The whole file, decoded (a leading UTF-8 BOM dropped); line ends are left as they are."""
    codec = _codec(encoding)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise DataError(f"cannot read {path}: {error.strerror}; check the path and its permissions.") from error
    try:
        return data.decode(codec)
    except UnicodeDecodeError as error:
        line_number = data[: error.start].decode(codec, errors="replace").count("\n") + 1
        shown = "UTF-8" if codec == "utf-8-sig" else encoding
        raise DataError(
            f"{path}:{line_number}: not valid {shown} ({error.reason}), the encoding {ENCODING_KEY} names. Set "
            f"{ENCODING_KEY} to the file's encoding (e.g. {ENCODING_KEY}=latin-1 or cp1252), or save the file as {shown}."
        ) from error


def read_lines(path: Path, encoding: str = DEFAULT_ENCODING) -> list[str]:
    """The file's lines without their ends; CRLF and a lone CR end a line like LF does."""
    return read_text(path, encoding).replace("\r\n", "\n").replace("\r", "\n").split("\n")


def _codec(encoding: str) -> str:
    """Python's name for `encoding`; UTF-8 read as `utf-8-sig`, which drops a leading BOM."""
    try:
        name = codecs.lookup(encoding).name
    except LookupError as error:
        raise ConfigError(
            f"{ENCODING_KEY}={encoding!r} is not an encoding Python knows. Use a codec name such as utf-8, latin-1, "
            "cp1252 or utf-16 (the list: https://docs.python.org/3/library/codecs.html#standard-encodings)."
        ) from error
    return "utf-8-sig" if name == "utf-8" else name
