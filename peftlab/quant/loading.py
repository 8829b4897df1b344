"""Quantize the base while it loads, keeping the task head in float, and ready it for training."""

from __future__ import annotations

import logging
from typing import Any

import torch
import transformers
from omegaconf import DictConfig
from peft import prepare_model_for_kbit_training
from transformers import AutoConfig, BitsAndBytesConfig

from peftlab.errors import ConfigError
from peftlab.heads import head_modules
from peftlab.quant import is_quantized
from peftlab.quant.options import COMPUTE_DTYPES, STORAGE_DTYPES

log = logging.getLogger("peftlab")


def loading_arguments(
    quant: DictConfig, auto_class: type, head_in_body: list[str], source: str, **config_kwargs: Any
) -> dict[str, Any]:
    """The `from_pretrained` keyword arguments that quantize the base at load time; none for a
    float base. `source` and `config_kwargs` are those the model itself loads from;
    `head_in_body` names body modules the head reads (`backbone.head_in_body`: BERT's pooler)."""
    if quant.bits is None:
        return {}
    config = AutoConfig.from_pretrained(source, **config_kwargs)
    trust_remote_code = config_kwargs.get("trust_remote_code", False)
    keep_float = [*head_module_names(auto_class, config, head_in_body, trust_remote_code), *quant.skip_modules]
    return {"quantization_config": bitsandbytes_config(quant, keep_float)}

def head_module_names(
    auto_class: type, config: transformers.PretrainedConfig, head_in_body: list[str] = (), trust_remote_code: bool = False
) -> list[str]:
    """The task head's modules (`peftlab.heads`), known before any weight loads: read off the
    model built on the meta device (no memory, no weights read). transformers' own default
    (the tied weights, the last parameter's module and the output embeddings) misses heads of
    several modules: RoBERTa's classification head is `classifier.dense` and
    `classifier.out_proj`, and only the second comes last. A task that trains another head is
    checked after loading by `require_float_head`."""
    with torch.device("meta"):
        skeleton = auto_class.from_config(config, trust_remote_code=trust_remote_code)
    return head_modules(skeleton, head_in_body)

def bitsandbytes_config(quant: DictConfig, keep_float: list[str]) -> BitsAndBytesConfig:
    """`BitsAndBytesConfig` for a quant config; `keep_float` modules are not quantized."""
    if quant.bits == 8:
        return BitsAndBytesConfig(
            load_in_8bit=True, llm_int8_threshold=float(quant.outlier_threshold), llm_int8_skip_modules=keep_float
        )
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=str(quant.quant_type),
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

def require_float_head(model: torch.nn.Module, head_modules: list[str]) -> None:
    """The head trains in full, so none of its weights may be quantized."""
    quantized = [name for name, p in model.named_parameters() if name.split(".")[0] in head_modules and is_quantized(p)]
    if quantized:
        raise ConfigError(
            f"the task head ({', '.join(head_modules)}) must train in float, but {', '.join(quantized)} "
            f"were quantized. Keep them in float with quant.skip_modules=[{','.join(head_modules)}]."
        )

def _describe(quant: DictConfig) -> str:
    """A quantized base's settings in one line, `compute_dtype: auto` resolved."""
    if quant.bits == 8:
        return f"8-bit LLM.int8(), outlier threshold {quant.outlier_threshold}"
    return (
        f"4-bit {quant.quant_type}, double quantization {quant.double_quant}, compute in "
        f"{str(compute_dtype(quant.compute_dtype)).removeprefix('torch.')}, stored as {quant.quant_storage}"
    )

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
