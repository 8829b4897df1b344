"""Everything about quantization that can be refused before anything loads: the quant options,
whether the method can train on a quantized base, and whether bitsandbytes is installed and has
kernels for this device."""

from __future__ import annotations

import importlib.metadata

import torch
from omegaconf import DictConfig, OmegaConf

from peftlab.config import QUANT_KINDS
from peftlab.errors import ConfigError

INSTALL = "pip install 'peftlab[quant]'"
SHIPPED = {None: "none", 8: "int8", 4: "nf4"}  # the quant file of each kind, in conf/quant/
COMPUTE_DTYPES = {"auto": None, "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
STORAGE_DTYPES = {"uint8": torch.uint8, "bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def check_quantization(quant: DictConfig, method: DictConfig) -> None:
    """Everything about quantization that can be refused before anything loads. The options'
    names, types and ranges are the schemas' (peftlab/config.py); here: that `quant.bits` is
    the schema's, whether the method can train on a quantized base, and whether bitsandbytes
    is installed and has kernels for this device."""
    check_kind(quant)
    if quant.bits is None:
        return
    _check_method_allows_quantized_base(method, quant)
    _check_bitsandbytes(quant)


def check_kind(quant: DictConfig) -> None:
    """A quant file's options are those of the schema it starts from, so its `bits` must be that
    schema's: `quant=int8 quant.bits=4` would load a 4-bit base with 8-bit options."""
    schema = OmegaConf.get_type(quant)
    if schema not in QUANT_KINDS:
        raise ConfigError(
            f"conf/quant/{quant.get('name')}.yaml does not start from a quant schema: begin it with "
            "defaults: [/schema/quant/KIND@_here_, _self_], KIND float, int8 or four_bit, as conf/quant/nf4.yaml does."
        )
    if quant.bits != QUANT_KINDS[schema]:
        kinds = ", ".join(f"quant={name} ({'null' if bits is None else bits})" for bits, name in SHIPPED.items())
        raise ConfigError(
            f"quant.bits={quant.bits} does not fit quant={quant.name}, whose options are those of bits "
            f"{'null' if QUANT_KINDS[schema] is None else QUANT_KINDS[schema]} ({schema.__name__} in peftlab/config.py). "
            f"Choose the quant file of the bits you want instead: {kinds}."
        )


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
