"""Methods that train a chosen subset of the base's own weights, in place: full fine-tuning
('.*') and head-only probing (nothing). No new modules, so the checkpoint holds exactly the
weights that changed."""

from __future__ import annotations

import re

import torch
from omegaconf import DictConfig

from peftlab.errors import ConfigError
from peftlab.methods import AppliedMethod, MethodContext
from peftlab.quant import is_quantized


def apply(model: torch.nn.Module, method: DictConfig, context: MethodContext) -> AppliedMethod:
    """Unfreeze base parameters whose name matches any regex in `method.train_params`."""
    patterns = [_compile(pattern, method.name) for pattern in method.train_params]
    for name, parameter in model.named_parameters():
        if not context.in_head(name) and any(pattern.search(name) for pattern in patterns):
            if is_quantized(parameter):
                raise ConfigError(
                    f"method.train_params of method {method.name!r} selects {name}, which the quantized "
                    "base stores packed and cannot train; narrow method.train_params or use quant=none."
                )
            parameter.requires_grad_(True)
    return AppliedMethod(model)


def _compile(pattern: str, method_name: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as error:
        raise ConfigError(
            f"method.train_params entry {pattern!r} of method {method_name!r} is not a valid "
            f"regular expression: {error}."
        ) from error
