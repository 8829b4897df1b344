"""Files and folders a kill never leaves half-written. Each is written beside its final name and
renamed into place: `os.replace` within one filesystem is atomic, so a reader (the report, a
resumed run) sees the old content or the new, never a part of either."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

STAGING_SUFFIX = ".partial"


def write_text(path: Path, text: str) -> Path:
    """`path` holds `text`, or what it held before if this is interrupted."""
    path = Path(path)
    staging = path.with_name(f".{path.name}.{os.getpid()}{STAGING_SUFFIX}")
    try:
        with staging.open("w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(staging, path)
    finally:
        staging.unlink(missing_ok=True)
    return path


@contextmanager
def folder(target: Path) -> Iterator[Path]:
    """A staging folder to write into; when the block ends without an error it becomes `target`,
    replacing a `target` already there. On an error the staging folder is removed and `target`
    stays as it was. A folder cannot be renamed over a non-empty one, so an old `target` is moved
    aside first: a kill between the two renames leaves no `target`, never a mixed one."""
    target = Path(target)
    staging = target.with_name(f".{target.name}.{os.getpid()}{STAGING_SUFFIX}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if target.exists():
        old = target.with_name(f".{target.name}.{os.getpid()}.old")
        os.replace(target, old)
        os.replace(staging, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, target)
