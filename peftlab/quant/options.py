"""Everything about quantization that can be refused before anything loads: the quant options,
whether the method can train on a quantized base, and whether bitsandbytes is installed and has
kernels for this device."""

from __future__ import annotations

import difflib
import importlib.metadata

import torch
from omegaconf import DictConfig, OmegaConf

from peftlab.errors import ConfigError

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
