"""LoRA (Hu et al. 2021) and DoRA (Liu et al. 2024, `use_dora: true`), through peft.
B starts at zero, so step 0 equals the frozen model. The task head goes to `modules_to_save`:
it trains in full and is saved with the adapter."""

from __future__ import annotations

import torch
from omegaconf import DictConfig
from peft import LoraConfig, get_peft_model

from peftlab.methods import MethodContext, require_range


def apply(model: torch.nn.Module, method: DictConfig, context: MethodContext) -> torch.nn.Module:
    require_range(method, "r", 1)
    require_range(method, "alpha", 1e-12)
    require_range(method, "dropout", 0.0, 0.999)
    config = LoraConfig(
        r=method.r,
        lora_alpha=method.alpha,
        lora_dropout=method.dropout,
        use_dora=method.use_dora,
        target_modules=context.modules_for(model, method.targets, "method.targets"),
        modules_to_save=context.modules_to_save,
        task_type=context.peft_task_type,
    )
    return get_peft_model(model, config)
