"""Splits: find a dataset's train/validation/test files in a folder by their names, as datasets
in the wild name them (`train.txt`, `dev.conll`, `valid.txt`, `test.csv`, `train_data.tsv`), read
each with a format's reader, and carve a validation split from train where a dataset has none.
The rule is the same for every task kind: train is required, validation is carved when missing,
test is optional (the run then reports validation only and says so)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Callable, Sized, TypeVar

from peftlab.errors import ConfigError, DataError

Split = TypeVar("Split", bound=Sized)

# canonical split -> the file stems that mean it (compared case-insensitively)
SPLIT_STEMS: dict[str, tuple[str, ...]] = {
    "train": ("train", "training"),
    "validation": ("dev", "valid", "validation", "val"),
    "test": ("test", "testing"),
}
STEM_SEPARATORS = "._-"
LISTED_FILES_LIMIT = 20


def find_split_files(directory: str | Path, extensions: tuple[str, ...]) -> dict[str, Path]:
    """{split: file} in train, validation, test order; a missing validation or test split is
    left out for the caller to judge, a missing train split is an error because no task runs
    without one. An empty `extensions` accepts any suffix."""
    folder = Path(directory)
    if not folder.is_dir():
        problem = "is not a directory" if folder.exists() else "does not exist"
        raise DataError(
            f"the data folder {str(folder)!r} {problem}; it is set by the config key task.data.path. "
            "Point task.data.path at the folder that holds the split files (train.txt, dev.txt, test.txt or similar)."
        )
    candidates: dict[str, list[Path]] = {split: [] for split in SPLIT_STEMS}
    for path in sorted(folder.iterdir()):
        split = _split_of(path.name)
        if split is not None and path.is_file() and _has_accepted_suffix(path, extensions):
            candidates[split].append(path)
    for split, paths in candidates.items():
        if len(paths) > 1:
            raise DataError(
                f"{folder} has {len(paths)} files for the {split!r} split: {', '.join(p.name for p in paths)}; "
                "remove or rename all but one so that peftlab knows which to read."
            )
    if not candidates["train"]:
        raise DataError(_no_train_file_message(folder, extensions))
    return {split: paths[0] for split, paths in candidates.items() if paths}


def _split_of(file_name: str) -> str | None:
    """The canonical split a file name stands for: its stem is a known split name, alone or
    followed by a separator and more (`train_data.tsv`), so `validation` is not read as `val`."""
    stem = Path(file_name).stem.lower()
    for split, names in SPLIT_STEMS.items():
        for name in names:
            if stem == name or (stem.startswith(name) and stem[len(name)] in STEM_SEPARATORS):
                return split
    return None


def _has_accepted_suffix(path: Path, extensions: tuple[str, ...]) -> bool:
    return not extensions or path.suffix.lower() in {extension.lower() for extension in extensions}


def _no_train_file_message(folder: Path, extensions: tuple[str, ...]) -> str:
    """Show what is there beside what would be recognised: the fix is usually one rename."""
    present = sorted(path.name for path in folder.iterdir())
    listed = ", ".join(present[:LISTED_FILES_LIMIT]) or "none"
    if len(present) > LISTED_FILES_LIMIT:
        listed += f" and {len(present) - LISTED_FILES_LIMIT} more"
    recognised = "; ".join(f"{split}: {'/'.join(names)}" for split, names in SPLIT_STEMS.items())
    suffixes = ", ".join(extensions) if extensions else "any"
    return (
        f"no training file in {folder} (task.data.path); files there: {listed}. "
        f"Split files are recognised by name ({recognised}), alone or followed by '.', '_' or '-' "
        f"and more (e.g. train.txt, train_data.tsv), with suffix {suffixes}; rename the training file to match."
    )


def read_split_files(
    directory: str | Path, extensions: tuple[str, ...], read: Callable[[Path], Split], unit: str, expected: str
) -> dict[str, Split]:
    """{split: what `read` made of its file} for every split file in the folder. An empty split
    is refused by file name: it is a failed download or a wrong file, never a choice. `unit`
    names what the file should hold ("sentences", "rows") and `expected` how it should look."""
    splits = {}
    for split, path in find_split_files(directory, extensions).items():
        content = read(path)
        if not len(content):
            raise DataError(
                f"{path} (the {split} split) has no {unit}; {expected}. Put the data in that file or remove it."
            )
        splits[split] = content
    return splits


def carve_validation(train: list, fraction: float, seed: int) -> tuple[list, list]:
    """(train, validation): a fixed random `fraction` of the examples (at least one) becomes
    validation, both keep the file order. The seed is the data seed, not the training seed, so
    every method and every training seed is compared on the same held-out examples."""
    if not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
        raise ConfigError(
            f"task.data.validation_fraction={fraction!r} must be in (0, 1): the share of the training "
            "split held out for validation when the dataset has no validation split."
        )
    size = max(1, round(len(train) * fraction))
    if size >= len(train):
        raise DataError(
            f"the training split has {len(train)} examples, too few to carve a validation split from "
            f"(task.data.validation_fraction={fraction}). Add a validation file (dev/valid/validation) or more data."
        )
    held_out = set(random.Random(seed).sample(range(len(train)), size))
    kept = [example for index, example in enumerate(train) if index not in held_out]
    return kept, [example for index, example in enumerate(train) if index in held_out]
