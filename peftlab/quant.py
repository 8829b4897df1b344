"""Quantized bases through bitsandbytes: 8-bit (LLM.int8(), Dettmers et al. 2022) and 4-bit NF4
(QLoRA, Dettmers et al. 2023), applied at load time with `BitsAndBytesConfig`.

`conf/quant/*.yaml` says how; `quant.bits: null` is a float base. Nothing here branches on a
quant's or a method's name, only on their settings. A quantized base is frozen and kept exactly as
loaded: methods that train beside it (LoRA, which makes QLoRA, DoRA, IA3, prompts, adapters, the
head) may use one; each method's config lists the bits it takes (`quantized_base: [8, 4]`), and
any other is refused before anything loads. The task head is never quantized.

On CPU, quantization saves memory, not time: bitsandbytes dequantizes every weight for every
matmul (and bf16 math, fast on GPUs, is ~20x slower than fp32 on the CPUs measured here).
"""

from __future__ import annotations

import difflib
import importlib.metadata
import logging
import sys
from contextlib import contextmanager
from typing import Any, Iterator

import torch
import transformers.trainer
from omegaconf import DictConfig, OmegaConf
from peft import (
    PeftModel,
    get_peft_model,
    get_peft_model_state_dict,
    prepare_model_for_kbit_training,
    set_peft_model_state_dict,
)
from transformers import AutoConfig, BitsAndBytesConfig

from peftlab.errors import ConfigError
from peftlab.heads import head_modules

log = logging.getLogger("peftlab")

INSTALL = "pip install 'peftlab[quant]'"
# The keys a quant config has, by its `bits`: exactly these, so a typo is refused, not ignored.
OPTIONS = {
    None: ("name", "bits"),
    8: ("name", "bits", "outlier_threshold", "skip_modules"),
    4: ("name", "bits", "quant_type", "double_quant", "compute_dtype", "quant_storage", "skip_modules"),
}
KINDS = {None: "a float base", 8: "an 8-bit base", 4: "a 4-bit base"}
SHIPPED = {None: "conf/quant/none.yaml", 8: "conf/quant/int8.yaml", 4: "conf/quant/nf4.yaml"}
FOUR_BIT_TYPES = ("nf4", "fp4")
COMPUTE_DTYPES = {"auto": None, "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
STORAGE_DTYPES = {"uint8": torch.uint8, "bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def check_quantization(quant: DictConfig, method: DictConfig) -> None:
    """Everything about quantization that can be refused before anything loads: the quant
    options, whether the method can train on a quantized base, and whether bitsandbytes is
    installed and has kernels for this device."""
    check_options(quant)
    if quant.bits is None:
        return
    _check_method_allows_quantized_base(method, quant)
    _check_bitsandbytes(quant)


def check_options(quant: DictConfig) -> None:
    """Refuse an unknown, missing or out-of-range quant option, naming it and the valid ones.

    Hydra refuses `quant.typo=...` by itself, but `+quant.typo=...` adds the key: this catches it."""
    if "bits" not in quant or quant.bits not in OPTIONS:
        raise ConfigError(
            f"quant.bits={quant.get('bits')!r} (quant={quant.get('name')}): it must be null (a float base), "
            f"8 ({SHIPPED[8]}) or 4 ({SHIPPED[4]})."
        )
    valid = OPTIONS[quant.bits]
    problems = []
    for key in quant:
        if key not in valid:
            close = difflib.get_close_matches(str(key), valid, n=1)
            problems.append(f"quant.{key} is not one of its options" + (f" (did you mean quant.{close[0]}?)" if close else ""))
    missing = [f"quant.{key}" for key in valid if key not in quant]
    if missing:
        problems.append(f"it lacks {', '.join(missing)} (start from {SHIPPED[quant.bits]}, which sets every option)")
    if problems:
        raise ConfigError(
            f"quant={quant.name} ({KINDS[quant.bits]}): {'; '.join(problems)}. The options of {KINDS[quant.bits]} "
            f"are {', '.join(valid)}."
        )
    if quant.bits is not None:
        _check_values(quant)


def loading_arguments(
    quant: DictConfig, auto_class: type, head_in_body: list[str], source: str, **config_kwargs: Any
) -> dict[str, Any]:
    """The `from_pretrained` keyword arguments that quantize the base at load time; none for a
    float base. `source` and `config_kwargs` are those the model itself loads from;
    `head_in_body` names body modules the head reads (`backbone.head_in_body`: BERT's pooler)."""
    check_options(quant)
    if quant.bits is None:
        return {}
    config = AutoConfig.from_pretrained(source, **config_kwargs)
    keep_float = [*head_module_names(auto_class, config, head_in_body), *quant.skip_modules]
    return {"quantization_config": bitsandbytes_config(quant, keep_float)}


def head_module_names(auto_class: type, config: transformers.PretrainedConfig, head_in_body: list[str] = ()) -> list[str]:
    """The task head's modules (`peftlab.heads`), known before any weight loads: read off the
    model built on the meta device (no memory, no weights read). transformers' own default
    (the tied weights, the last parameter's module and the output embeddings) misses heads of
    several modules: RoBERTa's classification head is `classifier.dense` and
    `classifier.out_proj`, and only the second comes last. A task that trains another head is
    checked after loading by `require_float_head`."""
    with torch.device("meta"):
        skeleton = auto_class.from_config(config)
    return head_modules(skeleton, head_in_body)


def bitsandbytes_config(quant: DictConfig, keep_float: list[str]) -> BitsAndBytesConfig:
    """`BitsAndBytesConfig` for a quant config; `keep_float` modules are not quantized."""
    if quant.bits == 8:
        return BitsAndBytesConfig(
            load_in_8bit=True, llm_int8_threshold=float(quant.outlier_threshold), llm_int8_skip_modules=keep_float
        )
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=quant.quant_type,
        bnb_4bit_use_double_quant=quant.double_quant,
        bnb_4bit_compute_dtype=compute_dtype(quant.compute_dtype),
        bnb_4bit_quant_storage=STORAGE_DTYPES[quant.quant_storage],
        llm_int8_skip_modules=keep_float,
    )


def compute_dtype(setting: str) -> torch.dtype:
    """`auto`: bf16 where the device has fast bf16 matmuls (a CUDA GPU with bf16), fp32 elsewhere,
    CPUs included, where bf16 math measured ~20x slower than fp32."""
    if setting != "auto":
        return COMPUTE_DTYPES[setting]
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def prepare_loaded(model: torch.nn.Module, quant: DictConfig) -> torch.nn.Module:
    """Ready a just-loaded quantized base for training, as QLoRA does (peft's
    `prepare_model_for_kbit_training`): freeze every weight (the run then unfreezes the head and
    lets the method in) and cast any half-precision float weight, layer norms included, to fp32.
    Gradient checkpointing is left to the Trainer (`trainer.gradient_checkpointing`), which
    enables it non-reentrant and makes the input embeddings require grads itself.

    Two bitsandbytes behaviours are switched off, so the base stays as loaded: 4-bit layers
    on a CPU with AVX512-BF16 repack their weights in place for an inference kernel at the first
    evaluation (bf16 scales, no double quantization, no gradients through it for the training
    that follows), and 8-bit layers in evaluation warn once per matmul that they cast to fp16."""
    if quant.bits is None:
        return model
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    import bitsandbytes as bnb

    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False
    _say_once(logging.getLogger("bitsandbytes.autograd._functions"))
    kept = model.config.quantization_config.llm_int8_skip_modules
    log.info("quantized the base at load time: %s; kept in float: %s", _describe(quant), ", ".join(kept))
    return model


def is_quantized(parameter: torch.Tensor) -> bool:
    """A weight bitsandbytes stores quantized: frozen for good, never trained in place."""
    bnb = sys.modules.get("bitsandbytes")  # no quantized weight exists unless it was imported
    return bnb is not None and isinstance(parameter, (bnb.nn.Params4bit, bnb.nn.Int8Params))


def quantization_constants(model: torch.nn.Module) -> list[torch.Tensor]:
    """What bitsandbytes keeps beside the quantized weights of `model`'s layers, outside the
    parameters: a 4-bit weight's per-block scales (absmax) and code book, with double
    quantization also the scales' own scales and code book; an 8-bit weight's per-row scales,
    which move from the weight (SCB) to the layer's state at its first forward pass."""
    bnb = sys.modules.get("bitsandbytes")
    if bnb is None:
        return []
    constants = []
    for layer in model.modules():
        if isinstance(layer, bnb.nn.Linear4bit):
            state = layer.weight.quant_state
            constants += [state.absmax, state.code]
            if state.nested:
                constants += [state.state2.absmax, state.state2.code]
        elif isinstance(layer, bnb.nn.Linear8bitLt):
            scales = layer.weight.SCB if layer.weight.SCB is not None else layer.state.SCB
            constants += [scales] if scales is not None else []
    return constants


def require_float_head(model: torch.nn.Module, head_modules: list[str]) -> None:
    """The head trains in full, so none of its weights may be quantized."""
    quantized = [name for name, p in model.named_parameters() if name.split(".")[0] in head_modules and is_quantized(p)]
    if quantized:
        raise ConfigError(
            f"the task head ({', '.join(head_modules)}) must train in float, but {', '.join(quantized)} "
            f"were quantized. Keep them in float with quant.skip_modules=[{','.join(head_modules)}]."
        )


@contextmanager
def trainable_beside_quantized_base(model: torch.nn.Module) -> Iterator[None]:
    """Let `transformers.Trainer` take a quantized base whose trained modules are peftlab's own.

    Trainer refuses a quantized model that is not a peft model ("purely quantized models"), to
    stop a run that would train nothing. peftlab's own methods (head_only, adapter) train float
    modules beside the frozen quantized base, which count_trainable has counted, so for them the
    refusal is wrong. Trainer asks once, in its __init__, through
    `transformers.trainer.validate_quantization_for_training`; inside this block that check asks
    instead whether anything trains. Peft models and float bases keep Trainer's own check."""
    if isinstance(model, PeftModel) or not getattr(model, "is_quantized", False):
        yield
        return
    check = transformers.trainer.validate_quantization_for_training
    transformers.trainer.validate_quantization_for_training = _require_something_trains
    try:
        yield
    finally:
        transformers.trainer.validate_quantization_for_training = check


def merge_to_float(model: PeftModel) -> torch.nn.Module:
    """Merge a trained adapter into its base and return a plain float model.

    On a quantized base peft's own merge re-quantizes the merged weights, adding a second
    rounding error to what was trained. Here the base is dequantized first, exactly as its
    forward pass dequantizes it, and the adapter is merged in float: the merged model computes
    what the trained one did, and is a float model (its linear weights take 8x the bytes of
    4-bit ones, 4x those of 8-bit ones), which this says rather than re-quantizing it silently. Quantize it again at load time if needed.
    Prompt and prefix tuning add context, not weights: they have nothing to merge. `model` is
    consumed, as by peft's `merge_and_unload`."""
    if not isinstance(model, PeftModel):
        raise TypeError(
            f"merge_to_float merges a peft adapter (LoRA, DoRA, IA3) and got a {type(model).__name__}: "
            "peftlab's own methods (adapters, head_only, bitfit) keep their modules apart, with nothing to merge."
        )
    adapter = model.active_peft_config
    if adapter.is_prompt_learning:
        raise ValueError(f"{adapter.peft_type.value} adds virtual tokens, not weights: there is nothing to merge.")
    if not getattr(model.get_base_model(), "is_quantized", False):
        return model.merge_and_unload()
    quantized = model.get_base_model()
    quantization = quantized.config.quantization_config
    trained = {name: tensor.clone() for name, tensor in get_peft_model_state_dict(model).items()}
    # transformers' dequantize leaves these flags set, and peft's IA3 refuses even to unload with them
    for flag in ("is_loaded_in_4bit", "is_loaded_in_8bit"):
        if hasattr(quantized, flag):
            delattr(quantized, flag)
    base = model.unload().dequantize(dtype=torch.float32)
    rewrapped = get_peft_model(base, adapter)
    set_peft_model_state_dict(rewrapped, trained)
    merged = rewrapped.merge_and_unload()
    bits = "4-bit" if quantization.load_in_4bit else "8-bit"
    log.warning(
        "the merged model is float32, not %s: its %s base was dequantized and the adapter merged in float "
        "(%.1f MB of weights). It was not re-quantized; pass a quantization_config when you load it to "
        "quantize it again.",
        bits, bits, sum(p.numel() * p.element_size() for p in merged.parameters()) / 2**20,
    )
    return merged


def _check_values(quant: DictConfig) -> None:
    problems = []
    if not OmegaConf.is_list(quant.skip_modules) or not all(isinstance(name, str) for name in quant.skip_modules):
        problems.append(f"quant.skip_modules={quant.skip_modules!r} must be a list of module names, e.g. [bert.pooler]")
    if quant.bits == 8 and not (isinstance(quant.outlier_threshold, (int, float)) and quant.outlier_threshold >= 0):
        problems.append(f"quant.outlier_threshold={quant.outlier_threshold!r} must be a number >= 0 (6.0: LLM.int8())")
    if quant.bits == 4:
        for key, allowed in (
            ("quant_type", FOUR_BIT_TYPES),
            ("compute_dtype", tuple(COMPUTE_DTYPES)),
            ("quant_storage", tuple(STORAGE_DTYPES)),
            ("double_quant", (True, False)),
        ):
            if quant[key] not in allowed:
                problems.append(f"quant.{key}={quant[key]!r} must be one of {', '.join(map(str, allowed))}")
    if problems:
        raise ConfigError(f"quant={quant.name}: " + "; ".join(problems) + ".")


def _check_method_allows_quantized_base(method: DictConfig, quant: DictConfig) -> None:
    """`method.quantized_base` lists the `quant.bits` the method trains on; any other is refused
    with the method's own `quantized_base_refusal`, which says why and what to use instead."""
    if not OmegaConf.is_list(method.get("quantized_base")):
        raise ConfigError(
            f"conf/method/{method.name}.yaml does not say which quantized bases method={method.name} trains "
            f"on (quant={quant.name} has bits={quant.bits}): add quantized_base: [8, 4], or the bits it "
            "takes with a quantized_base_refusal that says why not the others and what to use instead."
        )
    if quant.bits not in method.quantized_base:
        raise ConfigError(f"method={method.name} cannot use quant={quant.name}: {method.quantized_base_refusal}.")


def _check_bitsandbytes(quant: DictConfig) -> None:
    """bitsandbytes installed, and able to quantize to `quant.bits` on the device the model
    will load on (transformers places a quantized model on the accelerator when there is one)."""
    try:
        import bitsandbytes as bnb
    except Exception as error:  # ImportError, or a broken backend raising on import
        raise ConfigError(
            f"quant={quant.name} needs bitsandbytes, which could not be imported ({type(error).__name__}: "
            f"{error}): {INSTALL}"
        ) from error
    accelerator = torch.accelerator.current_accelerator() if torch.accelerator.is_available() else None
    device = accelerator or torch.device("cpu")
    probe = torch.ones(64, 64, device=device)
    try:
        if quant.bits == 4:
            bnb.functional.quantize_4bit(probe, quant_type=quant.quant_type)
        else:
            bnb.functional.int8_vectorwise_quant(probe.half())
    except Exception as error:
        raise ConfigError(
            f"quant={quant.name}: bitsandbytes {importlib.metadata.version('bitsandbytes')} cannot quantize to "
            f"{quant.bits} bits on this device ({device.type}): {type(error).__name__}: {error}. Install a "
            f"bitsandbytes build with {device.type} support ({INSTALL} installs the default build; see "
            "https://huggingface.co/docs/bitsandbytes/main/en/installation), or use quant=none."
        ) from error


def _describe(quant: DictConfig) -> str:
    """A quantized base's settings in one line, `compute_dtype: auto` resolved."""
    if quant.bits == 8:
        return f"8-bit LLM.int8(), outlier threshold {quant.outlier_threshold}"
    return (
        f"4-bit {quant.quant_type}, double quantization {quant.double_quant}, compute in "
        f"{str(compute_dtype(quant.compute_dtype)).removeprefix('torch.')}, stored as {quant.quant_storage}"
    )


def _require_something_trains(model: torch.nn.Module) -> None:
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError("nothing in this quantized model trains: attach a method that trains beside the base.")


class _Once(logging.Filter):
    """Lets each distinct message through once."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        first = message not in self.seen
        self.seen.add(message)
        return first


def _say_once(logger: logging.Logger) -> None:
    if not any(isinstance(existing, _Once) for existing in logger.filters):
        logger.addFilter(_Once())
