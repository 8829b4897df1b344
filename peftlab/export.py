"""A trained run as a model that loads without peftlab."""

from __future__ import annotations

import logging

import torch
from peft import PeftModel, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict

from peftlab.errors import Unsupported

log = logging.getLogger("peftlab")


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
        raise Unsupported(
            f"{adapter.peft_type.value} adds virtual tokens, not weights: there is nothing to merge. Export the "
            "adapter in peft's format instead (python -m peftlab.export RUN_DIR OUT --adapter)."
        )
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
