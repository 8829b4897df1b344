"""Load a task's splits from where its config says: the embedded demo, a local folder in a
known format (`task.data.path` + `task.data.format`), or a hub dataset (`task.data.hub_id`).
Every source yields the same shape: {split: [example dict, ...]} with canonical split names."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Callable

from omegaconf import DictConfig

from peftlab.data.conll import read_conll_dir
from peftlab.data.demo_ner import make_demo_ner
from peftlab.errors import ConfigError, DataError

Splits = dict[str, list[dict]]

# format -> reader of a local folder. The demo needs no folder: peftlab makes it.
LOCAL_READERS: dict[str, Callable[[Path], Splits]] = {
    "conll": read_conll_dir,
}
GENERATED: dict[str, Callable[[], Splits]] = {
    "demo_ner": make_demo_ner,
}
HUB_SPLIT_NAMES = {"train": "train", "validation": "validation", "valid": "validation", "dev": "validation", "test": "test"}


def load_splits(data: DictConfig) -> Splits:
    """Read every split the source has; callers check which they need."""
    if data.path is not None:
        return _read_local(data)
    if data.format in GENERATED:
        return GENERATED[data.format]()
    if data.hub_id is not None:
        return _load_hub(data)
    raise ConfigError(
        f"task.data has no source: set task.data.path=DIR (a local copy in format {data.format!r}) "
        "or task.data.hub_id=ID (a Hugging Face dataset)."
    )


def subsample(examples: list[dict], limit: int | None, seed: int) -> list[dict]:
    """A fixed random subset in original order: the same for every method and training seed."""
    if limit is None or limit >= len(examples):
        return examples
    if limit < 1:
        raise ConfigError(f"task.max_train_samples / task.max_eval_samples must be >= 1 or null, got {limit}.")
    keep = sorted(random.Random(seed).sample(range(len(examples)), limit))
    return [examples[i] for i in keep]


def _read_local(data: DictConfig) -> Splits:
    if data.format not in LOCAL_READERS:
        raise ConfigError(
            f"task.data.format={data.format!r} cannot be read from a folder (task.data.path); "
            f"known formats: {sorted(LOCAL_READERS)}."
        )
    return LOCAL_READERS[data.format](Path(data.path))


def _load_hub(data: DictConfig) -> Splits:
    """`datasets.load_dataset` for users online; columns renamed to the task's own names."""
    import datasets

    try:
        loaded = datasets.load_dataset(data.hub_id, data.hub_config)
    except Exception as error:  # datasets raises many types for "not reachable"
        raise DataError(
            f"could not load the hub dataset task.data.hub_id={data.hub_id!r}: {str(error).splitlines()[0]} "
            "If this machine is offline, set task.data.path=DIR to a local copy."
        ) from error
    splits = {}
    for hub_name, dataset in loaded.items():
        if hub_name in HUB_SPLIT_NAMES:
            splits[HUB_SPLIT_NAMES[hub_name]] = _rows_with_task_columns(dataset, data)
    return splits


def _rows_with_task_columns(dataset, data: DictConfig) -> list[dict]:
    """Rename configured columns to canonical ones; ClassLabel integers become their names."""
    rows = []
    decoders = {}
    for canonical, column in data.columns.items():
        if column not in dataset.column_names:
            raise DataError(
                f"task.data.columns.{canonical}={column!r} is not a column of {data.hub_id!r}; "
                f"it has {dataset.column_names}."
            )
        feature = dataset.features[column]
        names = getattr(getattr(feature, "feature", feature), "names", None)
        decoders[canonical] = (column, names)
    for record in dataset:
        row = {}
        for canonical, (column, names) in decoders.items():
            value = record[column]
            if names is not None:
                value = [names[v] for v in value] if isinstance(value, list) else names[value]
            row[canonical] = value
        rows.append(row)
    return rows
