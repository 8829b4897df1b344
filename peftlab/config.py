"""Typed configs: the shape of what Hydra composes, as dataclasses in Hydra's ConfigStore.

Hydra merges every config file and command-line override into these, so a value of the wrong
type (`trainer.batch_size=abc`, `quant.quant_type=nf5`, `task.normalize=[lower]`) and a key the
schema lacks (`trainer.batch_sise=8`) are refused while the config composes, naming the key.
The yaml files carry the values; a schema carries only types (and, in `minimum`, the least
value a number may take).

Where each applies: `PeftlabConfig` is the root (first in conf/config.yaml's defaults) and
types the backbone, the trainer and the seed; a quant file starts from the schema of its kind
(`defaults: [/schema/quant/int8@_here_]`), and a task kind's base file from the kind's
(conf/task/ner.yaml, classification.yaml, base/generation.yaml). Method files are not typed
here: each peft config class checks its own fields. `trainer.extra` stays a free dict: it goes to `TrainingArguments` as it is,
which checks it.

What types cannot say, `check_config` refuses before anything loads, in one paragraph: a key
added with `+` that the schema lacks (Hydra opens a node for `+`, so `+quant.typo=1` composes),
a number below its minimum, training with neither epochs nor steps, and two ways of choosing the
training set at once (`task.shots_per_class` with `task.max_train_samples`).
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from peftlab.errors import ConfigError


def minimum(least: float, *, exclusive: bool = False, default: Any = MISSING) -> Any:
    """A number field that must be >= `least` (> with `exclusive`); `check_config` enforces it."""
    return field(default=default, metadata={"minimum": least, "exclusive": exclusive})


@dataclass
class BackboneConfig:
    """conf/backbone/*.yaml: where the pretrained weights come from (peftlab/backbones.py) and
    how methods name its layers."""

    name: str = MISSING
    pretrained: str = MISSING  # a hub id, a model folder, or pkg://PACKAGE/FOLDER (a folder inside an installed package)
    # The hub id of the weights a `pkg://` folder is a copy of: what checkpoints and exports name as
    # their base (`backbones.base_reference`), instead of this machine's site-packages path.
    hub_id: str | None = None
    gguf_file: str | None = None  # a .gguf file in the `pretrained` folder, converted once to safetensors
    revision: str | None = None  # a hub branch, tag or commit
    # Run the Python code a model folder may ship (`auto_map` in its config.json) to build the
    # model or the tokenizer. Off: that code runs with your user's rights, so turn it on only for a
    # source you trust, and pin `revision` to the commit you read.
    trust_remote_code: bool = False
    tokenizer_kwargs: dict[str, Any] = field(default_factory=dict)
    slots: dict[str, str] = MISSING  # generic slot (attn_q, ffn_out, ...) -> regex over the end of a module name
    head_in_body: list[str] = field(default_factory=list)  # body modules the task head reads (BERT's pooler)


@dataclass
class TrainerConfig:
    """conf/trainer/*.yaml: knobs of transformers.TrainingArguments under short names (what each
    does is said in conf/trainer/default.yaml)."""

    epochs: int | float = MISSING  # > 0 unless max_steps > 0
    max_steps: int = MISSING
    batch_size: int = minimum(1)
    eval_batch_size: int = minimum(1)
    lr: float = minimum(0, exclusive=True)
    weight_decay: float = minimum(0)
    warmup: int | float = minimum(0)  # int = steps, float in [0, 1) = fraction of the steps
    scheduler: str = MISSING
    grad_accum: int = minimum(1)
    group_by_length: bool = MISSING
    shuffle_grouped_batches: bool = MISSING  # grouped batches in random order, not mega-batch by mega-batch
    target_weighted_loss: bool = MISSING  # weigh each training batch's loss by its targets
    eval_strategy: str = MISSING
    eval_steps: int | float | None = MISSING
    logging_steps: int | float = MISSING
    gradient_checkpointing: bool = MISSING
    progress_bar: bool = MISSING
    threads: int | None = MISSING
    select_best: bool = MISSING  # keep the checkpoint with the best validation score, not the last
    early_stopping_patience: int | None = minimum(1)  # evaluations without improvement; None = off
    save_every: int = minimum(0)  # 0 = no resume checkpoints
    keep_checkpoints: int = minimum(1)
    extra: dict[str, Any] = MISSING


class FourBitType(StrEnum):
    nf4 = "nf4"  # NormalFloat, QLoRA's data type
    fp4 = "fp4"


class ComputeDtype(StrEnum):
    auto = "auto"
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"


class StorageDtype(StrEnum):
    uint8 = "uint8"
    bfloat16 = "bfloat16"
    float16 = "float16"
    float32 = "float32"


@dataclass
class FloatBase:
    """conf/quant/none.yaml: a base in full precision."""

    name: str = MISSING
    bits: int | None = MISSING  # null


@dataclass
class Int8Base:
    """conf/quant/int8.yaml: LLM.int8() (Dettmers et al. 2022)."""

    name: str = MISSING
    bits: int = MISSING  # 8
    outlier_threshold: float = minimum(0)
    skip_modules: list[str] = MISSING


@dataclass
class FourBitBase:
    """conf/quant/nf4.yaml: 4-bit codes, as QLoRA (Dettmers et al. 2023)."""

    name: str = MISSING
    bits: int = MISSING  # 4
    quant_type: FourBitType = MISSING
    double_quant: bool = MISSING
    compute_dtype: ComputeDtype = MISSING
    quant_storage: StorageDtype = MISSING
    skip_modules: list[str] = MISSING


# The bits each quant schema stands for: `quant.bits` must say the same.
QUANT_KINDS: dict[type, int | None] = {FloatBase: None, Int8Base: 8, FourBitBase: 4}
Columns = dict[str, str | None]  # canonical name -> the source's column; null = not read


@dataclass
class DataSource:
    """task.data: where the examples come from (peftlab/data/sources.py)."""

    format: str = MISSING
    path: str | None = MISSING
    hub_id: str | None = MISSING
    hub_config: str | None = MISSING
    encoding: str = MISSING  # of local text files; a codec name Python knows


@dataclass
class TokenData(DataSource):
    columns: Columns = MISSING
    hub_columns: Columns | None = MISSING
    validation_fraction: float = MISSING


@dataclass
class ClassificationData(DataSource):
    columns: Columns = MISSING
    hub_columns: Columns | None = MISSING
    label_names_file: str | None = MISSING
    validation_fraction: float = MISSING


@dataclass
class GenerationData(DataSource):
    validation_fraction: float = MISSING
    columns: Columns | None = None  # label_text rows need no mapping


@dataclass
class TokenClassificationTask:
    """conf/task/ner.yaml and the files built on it (peftlab/tasks/token_classification.py)."""

    name: str = MISSING
    kind: str = MISSING
    data: TokenData = MISSING
    labels: list[str] | None = MISSING
    max_length: int = minimum(1)
    max_train_samples: int | None = minimum(1)
    max_eval_samples: int | None = minimum(1)
    shots_per_class: int | None = minimum(1)  # few-shot train and validation (peftlab/data/few_shot.py); None = off
    data_seed: int = MISSING


class ClassificationMetric(StrEnum):
    accuracy = "accuracy"
    f1_macro = "f1_macro"


@dataclass
class SequenceClassificationTask:
    """conf/task/classification.yaml and the files built on it (sequence_classification.py)."""

    name: str = MISSING
    kind: str = MISSING
    data: ClassificationData = MISSING
    labels: list[str] | None = MISSING
    primary_metric: ClassificationMetric = MISSING
    max_length: int = minimum(1)
    max_train_samples: int | None = minimum(1)
    max_eval_samples: int | None = minimum(1)
    shots_per_class: int | None = minimum(1)  # few-shot train and validation (peftlab/data/few_shot.py); None = off
    data_seed: int = MISSING


@dataclass
class Template:
    """Format strings over a row's fields that build the prompt and the completion."""

    prompt: str = MISSING
    completion: str = MISSING


class Normalizer(StrEnum):
    strip = "strip"
    casefold = "casefold"
    squash_spaces = "squash_spaces"


class GenerationMetric(StrEnum):
    exact_match = "exact_match"
    rouge_l = "rouge_l"  # with rouge: true


@dataclass
class GenerationTask:
    """conf/task/base/generation.yaml and the files built on it (generation.py)."""

    name: str = MISSING
    kind: str = MISSING
    data: GenerationData = MISSING
    template: Template | None = MISSING
    label_words: dict[Any, str] | None = MISSING
    chat_template: bool = MISSING
    separator: str = MISSING
    max_length: int = minimum(2)  # at least one prompt token and EOS
    max_new_tokens: int = minimum(1)
    generation_batch_tokens: int = minimum(1)
    loss_batch_tokens: int = minimum(1)
    rouge: bool = MISSING
    normalize: list[Normalizer] = MISSING
    primary_metric: GenerationMetric = MISSING
    max_train_samples: int | None = minimum(1)
    max_eval_samples: int | None = minimum(1)
    data_seed: int = MISSING


@dataclass
class LearningRateSearch:
    """protocol.search: how each method's learning rate is tuned on validation. The rates tried
    are the method's default (its `trainer.lr`) times each factor, one trial each."""

    lr_factors: list[float] = MISSING
    overrides: list[str] = MISSING  # what a trial changes from the final runs, e.g. [trainer.epochs=1]
    # Where the best rate is the highest (lowest) tried, a better one may lie beyond: try up to
    # this many more, one grid step further each time (the ratio of the two outermost rates on
    # that side), until the best is inside the rates tried. 0: the grid as given.
    extend_at_edge: int = minimum(0, default=0)


@dataclass
class ProtocolConfig:
    """conf/experiment/*_protocol.yaml: the comparison `python -m peftlab.protocol` runs
    (peftlab/protocol.py). The runs it launches carry `protocol: null`; protocol.json records it."""

    methods: list[str] = MISSING
    seeds: list[int] = MISSING
    search: LearningRateSearch = field(default_factory=LearningRateSearch)
    dir: str = MISSING  # search/, runs/ and the protocol summary; the same folder again resumes


@dataclass
class ContinualStage:
    """One task of a continual sequence: a conf/task file and what its stage changes (its budget:
    `trainer.epochs=1`, `task.max_train_samples=2000`, ...)."""

    task: str = MISSING
    overrides: list[str] = field(default_factory=list)


@dataclass
class ContinualConfig:
    """conf/experiment/continual_*.yaml: the task sequence `python -m peftlab.continual` trains
    one task after another (peftlab/continual.py), in each regime of `regimes`."""

    tasks: list[ContinualStage] = MISSING
    regimes: list[str] = MISSING  # full, shared_lora, adapter_per_task
    data_dir: str | None = None  # each task's task.data.path is <data_dir>/<task>; null: the task's own
    dir: str = MISSING  # a run folder per stage, continual.json and the report; the same folder again resumes


@dataclass
class ForgettingConfig:
    """forgetting: the language-model loss of a causal-LM run on text it was not fine-tuned on,
    before and after training (peftlab/forgetting.py). Off (texts: null) by default: it costs nothing."""

    texts: str | None = None  # a .txt file (one text a line) or .jsonl ({"text": ...} a line); null = not measured
    max_texts: int | None = minimum(1)  # the first N texts of the file; null = all
    max_length: int = minimum(2)  # tokens a text keeps (its start); at least two, so one is predicted
    batch_size: int = minimum(1)


@dataclass
class PeftlabConfig:
    """conf/config.yaml: one run is backbone x method x task x quant x trainer."""

    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    method: Any = MISSING
    task: Any = MISSING
    quant: Any = MISSING
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    seed: int = MISSING
    protocol: ProtocolConfig | None = None
    continual: ContinualConfig | None = None
    forgetting: ForgettingConfig = field(default_factory=ForgettingConfig)
    resume: bool = MISSING
    overwrite: bool = MISSING


def register() -> None:
    """Put the schemas where the config files' defaults lists name them."""
    store = ConfigStore.instance()
    store.store(group="schema", name="peftlab", node=PeftlabConfig)
    for name, node in (("float", FloatBase), ("int8", Int8Base), ("four_bit", FourBitBase)):
        store.store(group="schema/quant", name=name, node=node)
    for name, node in (
        ("token_classification", TokenClassificationTask),
        ("sequence_classification", SequenceClassificationTask),
        ("generation", GenerationTask),
    ):
        store.store(group="schema/task", name=name, node=node)


def config_dir() -> str:
    """conf/ beside the package in a checkout; inside the package in an installed wheel."""
    packaged = Path(__file__).parent / "conf"
    return str(packaged if packaged.is_dir() else Path(__file__).parent.parent / "conf")


def resolved(cfg: DictConfig) -> dict[str, Any]:
    """The config as plain values, every interpolation resolved: what result.json records.
    A value that does not resolve (`???`, an interpolation to a missing key, or one whose
    value does not fit the type where it lands) is refused naming its key."""
    try:
        return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True, enum_to_str=True)
    except OmegaConfBaseException as error:
        key = getattr(error, "full_key", None)
        raise ConfigError(
            f"the config does not resolve at {key or 'a key'}: {getattr(error, 'msg', error)}. Set {key or 'it'} "
            "on the command line (key=value) or in its config file."
        ) from error


def check_config(cfg: DictConfig) -> None:
    """Refuse, naming the keys, what the schemas' types let through (see the module docstring)."""
    problems = _schema_problems(cfg, "")
    if cfg.trainer.max_steps <= 0 and not cfg.trainer.epochs > 0:
        problems.append(f"trainer.epochs={cfg.trainer.epochs} must be > 0 (or set trainer.max_steps > 0)")
    if choose_on_validation(cfg.trainer) and cfg.trainer.eval_strategy == "no":
        problems.append(
            "trainer.select_best and trainer.early_stopping_patience choose by the validation scores taken during "
            "training, and trainer.eval_strategy='no' takes none: set trainer.eval_strategy=epoch (or steps, with "
            "trainer.eval_steps)"
        )
    if cfg.task.get("shots_per_class") is not None and cfg.task.max_train_samples is not None:
        problems.append(
            f"task.shots_per_class={cfg.task.shots_per_class} and task.max_train_samples={cfg.task.max_train_samples} "
            "both choose the training set: set one of them to null (task.max_eval_samples may stay: it caps "
            "validation and test after the few-shot draw)"
        )
    if problems:
        raise ConfigError("; ".join(problems) + ".")


def choose_on_validation(trainer: DictConfig) -> bool:
    """Whether the run follows its validation score during training: to keep the best
    checkpoint, to stop early, or both."""
    return trainer.select_best or trainer.early_stopping_patience is not None


def _schema_problems(node: DictConfig, path: str) -> list[str]:
    """Keys a typed node has that its schema lacks, and numbers below their minimum, in the
    typed nodes at and below `node`. Untyped nodes (a method, a backbone, trainer.extra) are
    not looked into."""
    schema = OmegaConf.get_type(node)
    if not dataclasses.is_dataclass(schema):
        return []
    fields = {spec.name: spec for spec in dataclasses.fields(schema)}
    problems = []
    for key in node:
        if key not in fields:
            problems.append(_unknown(str(key), path, list(fields)))
        elif isinstance(node[key], DictConfig):
            problems += _schema_problems(node[key], f"{path}{key}.")
        elif (problem := _below_minimum(f"{path}{key}", node[key], fields[key])) is not None:
            problems.append(problem)
    return problems


def _unknown(key: str, path: str, settings: list[str]) -> str:
    close = difflib.get_close_matches(key, settings, n=1)
    hint = f"did you mean {path}{close[0]}? " if close else ""
    return f"{path}{key} is not a setting of {path.rstrip('.') or 'the config'} ({hint}its settings: {', '.join(settings)})"


def _below_minimum(key_path: str, value: Any, spec: dataclasses.Field) -> str | None:
    if "minimum" not in spec.metadata or isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    least, exclusive = spec.metadata["minimum"], spec.metadata["exclusive"]
    if value > least or (value == least and not exclusive):
        return None
    return f"{key_path}={value} must be {'>' if exclusive else '>='} {least}"


register()
