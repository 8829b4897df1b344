"""Quantized bases through bitsandbytes: 8-bit (LLM.int8(), Dettmers et al. 2022) and 4-bit NF4
(QLoRA, Dettmers et al. 2023), applied at load time with `BitsAndBytesConfig`.

`conf/quant/*.yaml` says how; `quant.bits: null` is a float base. Nothing here branches on a
quant's or a method's name, only on their settings. A quantized base is frozen and kept exactly as
loaded: methods that train beside it (LoRA, which makes QLoRA, DoRA, IA3, prompts, adapters, the
head) may use one; each method's config lists the bits it takes (`quantized_base: [8, 4]`), and
any other is refused before anything loads. The task head is never quantized.

On CPU, quantization saves memory, not time: bitsandbytes dequantizes every weight for every
matmul (and bf16 math, fast on GPUs, is ~20x slower than fp32 on the CPUs measured here).

The package in three steps of a run: `options` refuses what cannot work before anything loads,
`loading` quantizes the base while it loads and readies it for training, and
`peftlab.export.merge_to_float` turns a trained adapter and its quantized base into a float model.
What a quantized weight is, which every step asks, is here. What Trainer needs for a quantized
base is `peftlab.run.PeftlabTrainer`.
"""

from __future__ import annotations

import sys

import torch


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
