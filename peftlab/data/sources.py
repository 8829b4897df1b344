"""Load a task's splits from where its config says: the embedded demo, a local folder in a
known format (`task.data.path` + `task.data.format`), or a hub dataset (`task.data.hub_id`).
Every source yields the same shape: {split: [example dict, ...]} with canonical split names
and canonical example keys, so task kinds never see where the data came from."""

from __future__ import annotations

import hashlib
import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from omegaconf import DictConfig

from peftlab.data.columns import Example, Table, select_columns
from peftlab.data.conll import CONLL_EXTENSIONS, read_conll_dir
from peftlab.data.demo_ner import make_demo_ner
from peftlab.data.few_shot import ShotRule, draw_few_shot, few_shot_note
from peftlab.data.jsonl import JSONL_EXTENSIONS, read_jsonl_dir
from peftlab.data.label_text import LABEL_TEXT_EXTENSIONS, read_label_text_dir
from peftlab.data.splits import carve_validation, find_split_files
from peftlab.data.table import CSV_EXTENSIONS, TSV_EXTENSIONS, read_csv_dir, read_tsv_dir
from peftlab.errors import ConfigError, DataError

log = logging.getLogger("peftlab")

Splits = dict[str, list[Example]]


@dataclass(frozen=True)
class LocalFormat:
    read_dir: Callable[..., dict[str, Any]]  # (folder, encoding=task.data.encoding)
    extensions: tuple[str, ...]  # of the split files `read_dir` reads: exactly those are fingerprinted
    named_columns: bool  # rows keyed by the file's own column names, mapped through task.data.columns


# task.data.format -> reader of a local folder. Fixed layouts (conll, label_text) give canonical
# examples; the others keep the file's column names until task.data.columns maps them.
LOCAL_FORMATS: dict[str, LocalFormat] = {
    "conll": LocalFormat(read_conll_dir, CONLL_EXTENSIONS, named_columns=False),
    "label_text": LocalFormat(read_label_text_dir, LABEL_TEXT_EXTENSIONS, named_columns=False),
    "csv": LocalFormat(read_csv_dir, CSV_EXTENSIONS, named_columns=True),
    "tsv": LocalFormat(read_tsv_dir, TSV_EXTENSIONS, named_columns=True),
    "jsonl": LocalFormat(read_jsonl_dir, JSONL_EXTENSIONS, named_columns=True),
}
# The demo needs no folder: peftlab makes it.
GENERATED: dict[str, Callable[[], Splits]] = {
    "demo_ner": make_demo_ner,
}
HUB_SPLIT_NAMES = {"train": "train", "validation": "validation", "valid": "validation", "dev": "validation", "test": "test"}
HIDDEN_LABEL = -1  # the `datasets` ClassLabel value for "no label" (GLUE and SST-2 hide their test labels so)
FINGERPRINT_HEX_DIGITS = 16  # 64 bits: two different copies of a dataset never collide by chance


def load_splits(data: DictConfig) -> Splits:
    """Read every split the source has; train is always there, validation and test when the
    source has them (`arrange_splits` applies the rule for the missing ones)."""
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


def dataset_identity(data: DictConfig) -> tuple[str, str | None]:
    """(name, fingerprint) of the data a run reads, in `load_splits`'s order of sources. The
    name is for people (`wnut17`, not the folder's absolute path, which differs per machine);
    the fingerprint says whether two runs saw the same data: `sha256:<hex>` over the split files'
    contents for a local folder (a re-download or an edited copy under the same name differs),
    `hub:<id>[:<config>]` for a hub dataset, `generated:<format>` for data peftlab makes (the
    run's git_sha pins its generator). None when the folder cannot be read: that run failed."""
    if data.path is not None:
        return Path(data.path).resolve().name, _local_fingerprint(data)
    if data.format in GENERATED:
        return data.format, f"generated:{data.format}"
    if data.hub_id is not None:
        config = f":{data.hub_config}" if data.hub_config is not None else ""
        return f"{data.hub_id}{config}", f"hub:{data.hub_id}{config}"
    return str(data.format), None


def _local_fingerprint(data: DictConfig) -> str | None:
    """sha256 over each split's name and its file's bytes, in train, validation, test order: the
    files `_read_local` reads, whatever else the folder holds (a README, a license)."""
    local_format = LOCAL_FORMATS.get(data.format)
    if local_format is None:
        return None
    try:
        files = find_split_files(data.path, local_format.extensions)
        digest = hashlib.sha256()
        for split, path in files.items():
            with path.open("rb") as file:
                digest.update(f"{split}:{hashlib.file_digest(file, 'sha256').hexdigest()}\n".encode())
    except (DataError, OSError):
        return None
    return f"sha256:{digest.hexdigest()[:FINGERPRINT_HEX_DIGITS]}"


def arrange_splits(splits: Splits, task: DictConfig, shot_rule: ShotRule | None = None) -> tuple[Splits, list[str]]:
    """The split rule every task kind shares, then the few-shot draw and the subsample. A
    missing validation split is carved from train (`task.data.validation_fraction`, seeded by
    `task.data_seed`); a missing test split stays missing. With `task.shots_per_class`, train and
    validation are drawn by the kind's `shot_rule` (peftlab/data/few_shot.py). Returns the splits
    in train, validation, test order and the notes a reader of result.json must see."""
    notes = []
    seed = task.data_seed
    if "validation" not in splits:
        fraction = task.data.validation_fraction
        train, validation = carve_validation(splits["train"], fraction, seed)
        splits = {**splits, "train": train, "validation": validation}
        notes.append(
            f"the data has no validation split: {len(validation)} of {len(train) + len(validation)} training "
            f"examples were held out as validation (task.data.validation_fraction={fraction}, task.data_seed={seed})"
        )
    shots = task.get("shots_per_class")
    few_shot = None
    if shots is not None:
        if shot_rule is None:
            raise ConfigError(f"task {task.name!r}: its kind ({task.kind}) has no few-shot rule; set task.shots_per_class=null.")
        few_shot = draw_few_shot(splits["train"], splits["validation"], shots, seed, shot_rule)
        splits = {**splits, "train": few_shot.train.examples, "validation": few_shot.validation.examples}
    arranged = {
        "train": subsample(splits["train"], task.max_train_samples, seed),
        "validation": subsample(splits["validation"], task.max_eval_samples, seed),
    }
    if "test" in splits:
        arranged["test"] = subsample(splits["test"], task.max_eval_samples, seed)
    if few_shot is not None:
        whole_test = len(splits["test"]) if "test" in splits else None
        notes.append(few_shot_note(few_shot, {split: len(examples) for split, examples in arranged.items()}, whole_test))
    return arranged, notes


def subsample(examples: list[dict], limit: int | None, seed: int) -> list[dict]:
    """A fixed random subset in original order: the same for every method and training seed.
    `limit` is at least 1 (the task schemas' minimum, peftlab/config.py)."""
    if limit is None or limit >= len(examples):
        return examples
    keep = sorted(random.Random(seed).sample(range(len(examples)), limit))
    return [examples[i] for i in keep]


def _read_local(data: DictConfig) -> Splits:
    if data.format not in LOCAL_FORMATS:
        raise ConfigError(
            f"task.data.format={data.format!r} cannot be read from a folder (task.data.path); "
            f"known formats: {sorted(LOCAL_FORMATS)}."
        )
    local_format = LOCAL_FORMATS[data.format]
    splits = local_format.read_dir(Path(data.path), encoding=data.encoding)
    if local_format.named_columns:
        return {split: select_columns(table, data.columns) for split, table in splits.items()}
    return splits


def _load_hub(data: DictConfig) -> Splits:
    """`datasets.load_dataset` for users online. `task.data.hub_columns` maps the hub's column
    names where they differ from the local files' (`task.data.columns`); ClassLabel integers
    become their names."""
    import datasets

    try:
        loaded = datasets.load_dataset(data.hub_id, data.hub_config)
    except Exception as error:  # datasets raises many types for "not reachable"
        raise DataError(
            f"could not load the hub dataset task.data.hub_id={data.hub_id!r}: {str(error).splitlines()[0]} "
            "If this machine is offline, set task.data.path=DIR to a local copy."
        ) from error
    config_key = "task.data.hub_columns" if data.get("hub_columns") else "task.data.columns"
    columns = data.get("hub_columns") or data.columns
    splits = {}
    for hub_name, dataset in loaded.items():
        if hub_name not in HUB_SPLIT_NAMES:
            continue
        origin = f"the hub dataset {data.hub_id!r} (split {hub_name!r})"
        if len(dataset) == 0:
            raise DataError(f"{origin} is empty; pick another task.data.hub_config or a local copy (task.data.path).")
        examples = select_columns(Table(origin, dataset.to_list(), dataset.column_names), columns, config_key)
        decoded = _decode_class_labels(examples, dataset, columns, origin)
        if decoded is None:
            log.warning("%s has no labels (all %d, the hub's 'hidden'): left out", origin, HIDDEN_LABEL)
            continue
        splits[HUB_SPLIT_NAMES[hub_name]] = decoded
    if "train" not in splits:
        raise DataError(
            f"the hub dataset {data.hub_id!r} has no training split (it has {sorted(loaded)}); "
            "a task needs one named train."
        )
    return splits


def _decode_class_labels(examples: list[Example], dataset, columns: DictConfig, origin: str) -> list[Example] | None:
    """ClassLabel integers -> their names, in place; None for a split whose labels are all hidden
    (-1), which cannot be scored and is left out like a missing split."""
    for canonical, column in columns.items():
        if column is None:
            continue
        feature = dataset.features[column]
        names = getattr(getattr(feature, "feature", feature), "names", None)
        if names is None:
            continue
        if all(example[canonical] == HIDDEN_LABEL for example in examples):
            return None
        for index, example in enumerate(examples):
            example[canonical] = _label_names(example[canonical], names, f"{origin}, row {index + 1}")
    return examples


def _label_names(value: int | list[int], names: list[str], where: str) -> str | list[str]:
    if isinstance(value, list):
        return [names[v] for v in value]
    if not 0 <= value < len(names):
        raise DataError(f"{where}: label {value} is not one of the dataset's {len(names)} classes; drop that row.")
    return names[value]
