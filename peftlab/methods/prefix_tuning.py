"""Prefix tuning (Li & Liang 2021), through peft: trainable key/value prefixes in every
attention layer (P-tuning v2 style for encoders). The prefix lives in the attention keys, not
in the sequence, so labels need no shift. `projection: true` reparametrises the prefix
through an MLP, as in the paper, for more stable training.

Trap: for encoders (token and sequence classification) peft hands the prefix to the model as
`past_key_values` and first checks that name in the forward signature. transformers 5.24
renamed it `cache` in BERT-family models, so peft 0.21.2 refuses them mid-training; the check
below says so before anything trains."""

from __future__ import annotations

import inspect

import peft
import torch
import transformers
from omegaconf import DictConfig
from peft import PrefixTuningConfig, get_peft_model

from peftlab.errors import ConfigError
from peftlab.methods import MethodContext, require_range


def apply(model: torch.nn.Module, method: DictConfig, context: MethodContext) -> torch.nn.Module:
    require_range(method, "num_virtual_tokens", 1, context.max_positions)
    require_range(method, "projection_hidden", 1)
    if context.peft_task_type != "CAUSAL_LM":
        require_past_key_values(model, context.backbone_name)
    config = PrefixTuningConfig(
        num_virtual_tokens=method.num_virtual_tokens,
        prefix_projection=method.projection,
        encoder_hidden_size=method.projection_hidden,
        modules_to_save=context.modules_to_save,
        task_type=context.peft_task_type,
    )
    return get_peft_model(model, config)


def require_past_key_values(model: torch.nn.Module, backbone_name: str) -> None:
    """Refuse, with the versions and the fix, an encoder whose forward no longer takes
    `past_key_values`: peft (which feeds the prefix through it) would fail at the first step."""
    body = getattr(model, model.base_model_prefix, model)
    if any("past_key_values" in inspect.signature(module.forward).parameters for module in (model, body)):
        return
    raise ConfigError(
        f"method=prefix_tuning cannot run on backbone {backbone_name!r} with transformers "
        f"{transformers.__version__} and peft {peft.__version__}: the model's forward takes no "
        "`past_key_values`, the argument peft passes the prefix through (BERT-family models renamed it "
        "`cache` in transformers 5.24). Install the tested versions (`make install`, from requirements.lock; "
        "pyproject.toml allows transformers<5.24), or use another method such as method=prompt_tuning "
        "or method=lora."
    )
