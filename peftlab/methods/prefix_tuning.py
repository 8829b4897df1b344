"""Prefix tuning (Li & Liang 2021), through peft: trainable key/value prefixes in every
attention layer (P-tuning v2 style for encoders). The prefix lives in the attention keys, not
in the sequence, so labels need no shift. `projection: true` reparametrises the prefix
through an MLP, as in the paper, for more stable training."""

from __future__ import annotations

import torch
from omegaconf import DictConfig
from peft import PrefixTuningConfig, get_peft_model

from peftlab.methods import MethodContext, require_range


def apply(model: torch.nn.Module, method: DictConfig, context: MethodContext) -> torch.nn.Module:
    require_range(method, "num_virtual_tokens", 1, context.max_positions)
    require_range(method, "projection_hidden", 1)
    config = PrefixTuningConfig(
        num_virtual_tokens=method.num_virtual_tokens,
        prefix_projection=method.projection,
        encoder_hidden_size=method.projection_hidden,
        modules_to_save=context.modules_to_save,
        task_type=context.peft_task_type,
    )
    return get_peft_model(model, config)
