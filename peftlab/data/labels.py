"""The label set of a classification dataset, and every example's label as one of its names.

Labels come as strings (`card_arrival`), as integers (`0`/`1` in SST-2, JSON numbers), or as
integers whose names are listed elsewhere (a `categories.json` beside the data, or
`task.labels`). The set is read from the full training split (before any subsample, so a rare
class is not lost) unless names are pinned; then the names fix the set and its order, and
integer labels are read as positions in that list. A label in validation or test that the set
lacks is an error that names it: scoring it would count a class the model cannot predict."""

from __future__ import annotations

import json
import re
from pathlib import Path

from omegaconf import DictConfig

from peftlab.data.columns import Example
from peftlab.errors import ConfigError, DataError

INTEGER = re.compile(r"-?\d+")


def pinned_label_names(task: DictConfig) -> tuple[list[str], str] | None:
    """(names, where they come from): `task.labels`, else `task.data.label_names_file` in the
    data folder (a hub dataset names its labels itself), else None: read from the data."""
    if task.labels is not None:
        return _checked_names([str(label) for label in task.labels], "task.labels"), "task.labels"
    data = task.data
    if data.label_names_file is None or data.path is None:
        return None
    path = Path(data.path) / data.label_names_file
    origin = f"{path} (task.data.label_names_file)"
    try:
        names = json.loads(path.read_text(encoding="utf-8-sig"))
    except OSError as error:
        raise DataError(
            f"cannot read the label names file {origin}: {error.strerror}. Put a JSON list of the label "
            "names there, or set task.data.label_names_file=null to read the labels from the data."
        ) from error
    except json.JSONDecodeError as error:
        raise DataError(f"{path}:{error.lineno}: not valid JSON ({error.msg}); it must be a JSON list of label names.") from error
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise DataError(f"{origin} must hold a JSON list of label names (strings), e.g. [\"negative\", \"positive\"].")
    return _checked_names(names, origin), origin


def label_names(splits: dict[str, list[Example]], pinned: tuple[list[str], str] | None, source: str) -> list[str]:
    """The label set, and every example's `label` rewritten as one of its names (in place)."""
    if pinned is None:
        names = sorted({example["label"] for example in splits["train"]}, key=_label_order)
        origin = "the training split"
    else:
        names, origin = pinned
    if len(names) < 2:
        raise DataError(
            f"{source}: {origin} has {len(names)} label(s) {names}; classification needs at least two. "
            "Check task.data.columns.label or pin the label set with task.labels=[...]."
        )
    positions = pinned is not None and _labels_are_positions(splits, names)
    for split, examples in splits.items():
        _name_labels(split, examples, names, origin, positions, source)
    return names


def _labels_are_positions(splits: dict[str, list[Example]], names: list[str]) -> bool:
    """Integer labels that are not themselves names index the pinned list (0 = first name)."""
    labels = {example["label"] for examples in splits.values() for example in examples}
    return not labels <= set(names) and all(INTEGER.fullmatch(label) for label in labels)


def _name_labels(split: str, examples: list[Example], names: list[str], origin: str, positions: bool, source: str) -> None:
    if positions:
        out_of_range = sorted({e["label"] for e in examples if not 0 <= int(e["label"]) < len(names)}, key=int)
        if out_of_range:
            raise DataError(
                f"the {split!r} split of {source} has integer labels {out_of_range} outside the {len(names)} "
                f"names of {origin} (0 to {len(names) - 1}). Fix the data or the names."
            )
        for example in examples:
            example["label"] = names[int(example["label"])]
        return
    unknown = sorted({example["label"] for example in examples} - set(names), key=_label_order)
    if unknown:
        raise DataError(
            f"the {split!r} split of {source} has labels {unknown} that {origin} does not have. "
            "Pin the full label set with task.labels=[...] (or task.data.label_names_file) or fix the data."
        )


def _checked_names(names: list[str], origin: str) -> list[str]:
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ConfigError(f"{origin} lists the labels {repeated} more than once; each label name must be unique.")
    return names


def _label_order(label: str) -> tuple[int, int | str]:
    """Integer labels in numeric order (2 before 10), after them any others alphabetically."""
    return (0, int(label)) if INTEGER.fullmatch(label) else (1, label)
