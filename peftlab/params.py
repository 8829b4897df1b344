"""The one place parameters are counted. The head is counted once (peft's modules_to_save
keeps a frozen original beside the trained copy) and apart from the base. A quantized base
counts as many parameters as the same base in float (`parameter_count`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from peftlab.result import ParamCount


@dataclass(frozen=True)
class BaseCount:
    """Counted on the frozen model with its head, before any method adds modules."""

    base_total: int
    head_total: int


def in_modules(name: str, modules: list[str]) -> bool:
    """True when a parameter or module name is one of `modules` or lies inside one: the head may
    be nested in the body (`bert.pooler.dense.weight` is in `bert.pooler`)."""
    return any(name == module or name.startswith(f"{module}.") for module in modules)


def parameter_count(parameter: torch.Tensor) -> int:
    """Values a parameter holds. A packed 4-bit weight (bitsandbytes' Params4bit) stores two
    values per uint8 element, more with a wider quant_storage, so its count is its logical shape,
    kept in its quant_state; an 8-bit weight stores one value per element."""
    state = getattr(parameter, "quant_state", None)
    return state.shape.numel() if state is not None else parameter.numel()


def count_base(model: torch.nn.Module, head_modules: list[str]) -> BaseCount:
    """`parameters()` yields a shared tensor once: a decoder's LM head tied to its input
    embeddings is counted once, in the body (a causal LM has no task head)."""
    head = sum(parameter_count(p) for name, p in model.named_parameters() if in_modules(name, head_modules))
    return BaseCount(base_total=sum(parameter_count(p) for p in model.parameters()) - head, head_total=head)


def count_trainable(model: torch.nn.Module, before: BaseCount, head_modules: list[str]) -> ParamCount:
    """Split what trains into the method's share and the head's share."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    head = sum(
        p.numel() for name in head_modules for p in inner.get_submodule(name).parameters() if p.requires_grad
    )
    if head != before.head_total:
        raise RuntimeError(
            f"the task head should train in full ({before.head_total} parameters) but {head} do: "
            "the method froze part of it."
        )
    trainable = sum(parameter_count(p) for p in model.parameters() if p.requires_grad)
    return ParamCount(
        base_total=before.base_total,
        trainable=trainable,
        method=trainable - head,
        head=head,
        trainable_pct=100.0 * trainable / (before.base_total + before.head_total),
    )
