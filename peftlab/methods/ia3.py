"""(IA)^3 (Liu et al. 2022), through peft: learned vectors that rescale keys, values and the
FFN's inner activations. Vectors start at one, so step 0 equals the frozen model; they can be
merged into the base weights."""

from __future__ import annotations

import torch
from omegaconf import DictConfig
from peft import IA3Config, get_peft_model

from peftlab.errors import ConfigError
from peftlab.methods import MethodContext


def apply(model: torch.nn.Module, method: DictConfig, context: MethodContext) -> torch.nn.Module:
    targets = context.modules_for(model, method.targets, "method.targets")
    feedforward = context.modules_for(model, method.feedforward, "method.feedforward")
    if not set(feedforward) <= set(targets):
        raise ConfigError(
            f"method.feedforward slots {list(method.feedforward)} must also be in method.targets "
            f"{list(method.targets)}: (IA)^3 rescales the input of feed-forward targets, the output of the others."
        )
    config = IA3Config(
        target_modules=targets,
        feedforward_modules=feedforward,
        modules_to_save=context.modules_to_save,
        task_type=context.peft_task_type,
    )
    return get_peft_model(model, config)
