"""Bottleneck adapters: Houlsby et al. 2019 (after the attention output and the FFN output of
every layer, with the layer norms trained) and Pfeiffer et al. 2020 (after the FFN output only).
AdapterHub's `adapters` pins an older transformers, so this is ours.

Each adapter hangs off the linear layer it follows as a child module named `adapter` and is
applied by a forward hook, so the base weights keep their names and stay untouched."""

from __future__ import annotations

import torch
from omegaconf import DictConfig
from torch import nn
from transformers.activations import ACT2FN

from peftlab.errors import ConfigError, Unsupported
from peftlab.methods import AppliedMethod, MethodContext, output_features, require_range


class Bottleneck(nn.Module):
    """h + up(act(down(h))). The up-projection starts at zero, so step 0 equals the frozen model."""

    def __init__(self, hidden: int, bottleneck: int, activation: str) -> None:
        super().__init__()
        self.down = nn.Linear(hidden, bottleneck)
        self.act = ACT2FN[activation]
        self.up = nn.Linear(bottleneck, hidden)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden + self.up(self.act(self.down(hidden)))


class BottleneckAdapters(AppliedMethod):
    """Adapters hung off a frozen model; saved and loaded as peftlab's own trainable tensors."""

    def merge(self) -> torch.nn.Module:
        raise Unsupported(
            "bottleneck adapters are small nonlinear networks (down, activation, up) beside the base, with "
            "nothing to merge into its linear weights: serve the run with peftlab (python -m peftlab.predict), "
            "or train a method that merges, e.g. method=lora."
        )


def apply(model: torch.nn.Module, method: DictConfig, context: MethodContext) -> BottleneckAdapters:
    bottleneck = bottleneck_size(method, context.hidden_size)
    if method.activation not in ACT2FN:
        raise ConfigError(f"method.activation={method.activation!r} is unknown; use e.g. relu, gelu, silu.")
    for name in context.modules_for(model, method.placement, "method.placement"):
        layer = model.get_submodule(name)
        layer.add_module("adapter", Bottleneck(output_features(layer), bottleneck, method.activation))
        layer.register_forward_hook(_through_adapter)
    for name in context.modules_for(model, method.train_norms, "method.train_norms", kinds=None):
        model.get_submodule(name).requires_grad_(True)
    return BottleneckAdapters(model)


def bottleneck_size(method: DictConfig, hidden_size: int) -> int:
    """`bottleneck` if set, else hidden size // `reduction_factor`."""
    if method.bottleneck is None:
        require_range(method, "reduction_factor", 1, hidden_size)
        return hidden_size // method.reduction_factor
    require_range(method, "bottleneck", 1, hidden_size)
    return method.bottleneck


def _through_adapter(layer: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
    return layer.adapter(output)
