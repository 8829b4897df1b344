"""The Result record and result.json: the one file per run that the report and every
benchmark read. A failed run writes one too, so a sweep can say what went wrong where.

The measured sections are typed records (`ParamCount`, `Timing`, `Memory`, `Checkpoint`,
`Selection`, `Forgetting`): the run fills them, the report and the benchmarks read them back
through `Result.read`, and the JSON keeps one shape for all. A failed run has none of them,
written as `{}`. Reading checks every key and type against these classes (`ResultFileError` names the file
and the key), after `upgrade_result_json` has brought a file written by an older peftlab to
today's shape: that function is the one place older shapes are known."""

from __future__ import annotations

import copy
import json
import math
import platform
import subprocess
import types
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

from peftlab import atomic
from peftlab.errors import PeftlabError

RESULT_FILE = "result.json"
TRACKED_PACKAGES = ("peftlab", "torch", "transformers", "peft", "datasets", "hydra-core", "seqeval")


@dataclass(frozen=True)
class ParamCount:
    """Parameters of the finished model, counted once by `peftlab.params`: the head apart from
    the base and once (peft's modules_to_save keeps a frozen copy beside the trained one), a
    packed 4-bit weight at its logical size."""

    base_total: int  # the pretrained body, without the head
    trainable: int  # method + head
    method: int
    head: int
    trainable_pct: float  # share of all parameters of the finished model (base + head) that train


@dataclass(frozen=True)
class Timing:
    train_seconds: float  # 0.0 for a method that trains nothing (evaluated as loaded)
    train_samples_per_second: float | None  # None where nothing trained
    train_tokens_per_second: float | None  # real (non-padding) tokens; None where nothing trained
    eval_seconds: float  # every evaluated split, generation included
    torch_threads: int | None  # timings compare only at equal threads; None in runs older than the key


@dataclass(frozen=True)
class Memory:
    peak_rss_mb: float
    peak_cuda_mb: float | None  # None without CUDA
    model_bytes: int | None  # the model as loaded (base + head), before the method; None in older runs


@dataclass(frozen=True)
class Checkpoint:
    path: str
    size_bytes: int


@dataclass(frozen=True)
class Selection:
    """Which weights the run scored, chosen on validation during training (trainer.select_best,
    trainer.early_stopping_patience). A run with neither scores its last step after its whole
    budget and has no Selection."""

    metric: str  # the validation score that chose: the primary metric, or "loss" (lower is better)
    best_step: int | None  # the step of the best validation score; None when no score was a number
    best_value: float | None
    selected_step: int  # the step whose weights were scored on validation and test
    last_step: int  # the last step trained
    budget_steps: int  # the steps the budget allowed (trainer.epochs or trainer.max_steps)
    early_stopped: bool  # training stopped before budget_steps, for want of a better validation score


@dataclass(frozen=True)
class Forgetting:
    """The language-model loss of a causal-LM run on held-out text, before and after fine-tuning
    (`forgetting.texts`, peftlab/forgetting.py): mean cross-entropy in nats per predicted token
    over all the texts, token-weighted. Positive change: the model got worse at text it was not
    trained on. A run without `forgetting.texts` has none."""

    texts: str  # the file's name
    sha256: str  # of the file's bytes: runs compare only on the same file
    texts_used: int  # the first forgetting.max_texts non-blank texts
    tokens: int  # predicted tokens: each text's tokens after its first, up to forgetting.max_length
    lm_loss_before: float  # the pretrained model (a peft method's adapter switched off), before training
    lm_loss_after: float  # the model scored on test (the best validation checkpoint with trainer.select_best)
    lm_loss_change: float  # after - before


RECORDS = {
    "params": ParamCount, "timing": Timing, "memory": Memory, "checkpoint": Checkpoint, "selection": Selection,
    "forgetting": Forgetting,
}
STATUSES = ("ok", "failed")

# What result.json gained after its first shape (commit 1e0ee25): (the key, its section or None
# for the top level, the commit that added it, what a file from before holds in its place).
# Files carry no version number: a file's shape is told by the keys it has, key by key.
ADDED_KEYS = (
    ("notes", None, "aa170e9", []),
    ("torch_threads", "timing", "cd0cc39", None),
    ("model_bytes", "memory", "4a4f275", None),
    ("dataset_fingerprint", None, "e3d7132", None),
    ("data_sizes", None, "e3d7132", {}),
    ("selection", None, "ea8a580", {}),
    ("forgetting", None, "10bc045", {}),
)
# Config keys the report keys its tables on that peftlab gained later: (dotted key, the commit
# that added it, the value that turns its feature off, which is what a run from before ran
# with). Without this, runs before and after the key split into two tables that differ only in
# "n/a" against "null".
ADDED_CONFIG_KEYS = (
    ("backbone.gguf_file", "531d970", None),  # no GGUF file: weights loaded as safetensors
    ("task.shots_per_class", "9a9e5cf", None),  # no few-shot sampling: the whole training split
)


class ResultFileError(PeftlabError, ValueError):
    """A result.json that does not fit the schema below (or is no JSON at all). `problem` says
    why in words, naming the key; the message adds the file where it is known."""

    def __init__(self, problem: str, path: Path | None = None) -> None:
        super().__init__(problem if path is None else f"{path}: {problem}")
        self.problem = problem
        self.path = path


def finite(value: Any) -> float | None:
    """`value` as a float where it is a finite number; None where it is missing, NaN or infinite
    (a diverged run logs NaN) or no number at all (a history point's other keys)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def upgrade_result_json(data: dict[str, Any]) -> dict[str, Any]:
    """A result.json as written by any peftlab since the first (1e0ee25), in today's shape; the
    one place older shapes are known. The shapes it accepts, oldest first, each the one before
    plus the keys named (ADDED_KEYS):

    - 1e0ee25: identity, error, params, primary_metric, metrics, history, timing (train_seconds,
      train_samples_per_second, train_tokens_per_second, eval_seconds), memory (peak_rss_mb,
      peak_cuda_mb), checkpoint, config, versions, git_sha
    - aa170e9: notes; metrics.test is null for a dataset without a test split
    - cd0cc39: timing.torch_threads
    - 4a4f275: memory.model_bytes
    - e3d7132: dataset_fingerprint, data_sizes
    - ea8a580: selection ({} for a run that selected nothing)
    - 10bc045: forgetting ({} for a run that did not measure it), today's shape

    A key is filled only where the file lacks it, with what says "not recorded" (None, an empty
    list or section), never with a made-up measurement; a section that is `{}` (a failed run)
    stays empty. Config keys added later (ADDED_CONFIG_KEYS) are filled with the setting the run
    did use, the one that turns their feature off, where the file records the section that holds
    them. The file is not changed: `Result.write` writes today's shape."""
    upgraded = dict(data)
    for key, section, _, missing_value in ADDED_KEYS:
        if section is None:
            upgraded.setdefault(key, copy.copy(missing_value))  # a copy: a Result's notes grow in place
        elif isinstance(upgraded.get(section), dict) and upgraded[section]:
            upgraded[section] = {key: missing_value, **upgraded[section]}
    if isinstance(upgraded.get("config"), dict):
        upgraded["config"] = _with_added_config_keys(upgraded["config"])
    return upgraded


def _with_added_config_keys(config: dict[str, Any]) -> dict[str, Any]:
    for dotted, _, feature_off in ADDED_CONFIG_KEYS:
        config = _filled(config, dotted.split("."), feature_off)
    return config


def _filled(node: dict[str, Any], path: list[str], value: Any) -> dict[str, Any]:
    """`node` with `value` at `path` where every section on the way exists and the key does not;
    a copy where anything is added, never the caller's dict changed."""
    key, *rest = path
    if not rest:
        return node if key in node else {**node, key: value}
    child = node.get(key)
    if not isinstance(child, dict):
        return node
    filled = _filled(child, rest, value)
    return node if filled is child else {**node, key: filled}


@dataclass
class Result:
    status: str  # "ok" | "failed"
    task: str
    dataset: str
    method: str
    backbone: str
    quant: str
    seed: int
    error: str | None = None
    dataset_fingerprint: str | None = None  # what `dataset` names, exactly (peftlab.data.sources.dataset_identity)
    params: ParamCount | None = None
    primary_metric: str | None = None
    metrics: dict[str, dict[str, float] | None] = field(default_factory=dict)  # "test": None without one
    data_sizes: dict[str, int] = field(default_factory=dict)  # examples per split after the subsample
    history: list[dict[str, float]] = field(default_factory=list)  # validation metrics during training
    timing: Timing | None = None
    memory: Memory | None = None
    checkpoint: Checkpoint | None = None
    selection: Selection | None = None
    forgetting: Forgetting | None = None
    config: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    git_sha: str | None = None
    notes: list[str] = field(default_factory=list)  # what a reader must know, e.g. no test split

    def write(self, run_dir: Path) -> Path:
        """Atomically: a run killed while writing leaves the previous result.json or none, never
        a truncated one that the report would have to skip."""
        return atomic.write_text(Path(run_dir) / RESULT_FILE, json.dumps(self.to_json(), indent=2, sort_keys=False) + "\n")

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        return {**data, **{section: data[section] or {} for section in RECORDS}}

    @classmethod
    def read(cls, path: Path) -> "Result":
        """The Result in a result.json file, or ResultFileError naming the file and what is wrong
        with it: unreadable, not JSON, or a key missing, unknown or of the wrong type."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as error:
            raise ResultFileError(f"cannot read it ({error.strerror})", path) from error
        except json.JSONDecodeError as error:
            problem = f"not valid JSON ({error.msg} at line {error.lineno}, column {error.colno})"
            raise ResultFileError(problem, path) from error
        except UnicodeDecodeError as error:
            raise ResultFileError("not UTF-8 text", path) from error
        try:
            return cls.from_json(data)
        except ResultFileError as error:
            raise ResultFileError(error.problem, path) from None

    @classmethod
    def from_json(cls, data: Any) -> "Result":
        """The parsed JSON of a result.json of any shape `upgrade_result_json` accepts, checked key
        by key against this class and the records; ResultFileError names the first key that does
        not fit."""
        if not isinstance(data, dict):
            raise ResultFileError("not a JSON object")
        data = upgrade_result_json(data)
        hints = get_type_hints(cls)
        _check_keys(data, hints, "")
        values = {}
        for key, hint in hints.items():
            if key in RECORDS:
                values[key] = _record(data[key], RECORDS[key], key)
            else:
                _check_type(data[key], hint, key)
                values[key] = data[key]
        if values["status"] not in STATUSES:
            raise ResultFileError(f"unknown status {values['status']!r} (expected {' or '.join(STATUSES)})")
        return cls(**values)


def primary_score(run: Result, split: str) -> float | None:
    """The run's primary metric on `split`, a fraction as result.json has it; None where the
    split or the number is missing, or the number is not finite."""
    scores = run.metrics.get(split) or {}
    return finite(scores.get(run.primary_metric))


def _record(section: Any, record: type, key: str) -> Any:
    """A section of result.json as its record; None for `{}` (a failed run, or no selection)."""
    if not isinstance(section, dict):
        raise ResultFileError(f"{key} is {_shown(section)}, expected an object ({{}} when not measured)")
    if not section:
        return None
    hints = get_type_hints(record)
    _check_keys(section, hints, f"{key}.")
    for name, value in section.items():
        _check_type(value, hints[name], f"{key}.{name}")
    return record(**section)


def _check_keys(data: dict[str, Any], hints: dict[str, Any], prefix: str) -> None:
    missing = [f"{prefix}{key}" for key in hints if key not in data]
    if missing:
        raise ResultFileError(f"missing {', '.join(missing)}")
    unknown = [f"{prefix}{key}" for key in data if key not in hints]
    if unknown:
        raise ResultFileError(
            f"unknown key {', '.join(unknown)} (a newer peftlab's file, or a typo in a hand-made one)"
        )


def _check_type(value: Any, hint: Any, key: str) -> None:
    """Raise ResultFileError naming `key` where `value` does not fit the type `hint`. JSON has
    one kind of number: a float field takes an integer and keeps it as written; true and false
    are no numbers."""
    origin = get_origin(hint)
    if hint is Any:
        return
    if origin in (Union, types.UnionType):
        if value is None and type(None) in get_args(hint):
            return
        (hint,) = [option for option in get_args(hint) if option is not type(None)]
        _check_type(value, hint, key)
    elif origin is dict:
        if not isinstance(value, dict):
            raise ResultFileError(f"{key} is {_shown(value)}, expected an object")
        _, item_hint = get_args(hint)
        for name, item in value.items():
            _check_type(item, item_hint, f"{key}.{name}")
    elif origin is list:
        if not isinstance(value, list):
            raise ResultFileError(f"{key} is {_shown(value)}, expected a list")
        (item_hint,) = get_args(hint)
        for number, item in enumerate(value):
            _check_type(item, item_hint, f"{key}[{number}]")
    elif not _fits(value, hint):
        raise ResultFileError(f"{key} is {_shown(value)}, expected {TYPE_WORDS[hint]}")


TYPE_WORDS = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}


def _fits(value: Any, hint: type) -> bool:
    if hint in (int, float) and isinstance(value, bool):
        return False
    return isinstance(value, (int, float) if hint is float else hint)


def _shown(value: Any) -> str:
    """A value in an error message: short, with its JSON kind."""
    text = json.dumps(value, default=repr)
    return text if len(text) <= 40 else text[:37] + "..."


def package_versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in TRACKED_PACKAGES:
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            continue
    return found


def git_sha() -> str | None:
    """The commit of the peftlab checkout that made the run, when it is one."""
    try:
        completed = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if completed.returncode != 0:
        return None
    return completed.stdout.strip() or None
