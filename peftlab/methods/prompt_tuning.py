"""Prompt tuning (Lester et al. 2021), through peft: N trainable embeddings put in front of
every input. They take sequence positions, so token-level labels are shifted by N (the run
asks `prepended_positions`); initialised at random, from random vocabulary embeddings, or
from the embeddings of a text."""

from __future__ import annotations

import torch
from omegaconf import DictConfig
from peft import PromptTuningConfig, PromptTuningInit, get_peft_model

from peftlab.errors import ConfigError
from peftlab.methods import MethodContext, require_range

INITS = {"random": PromptTuningInit.RANDOM, "vocab": PromptTuningInit.SAMPLE_VOCAB, "text": PromptTuningInit.TEXT}


def apply(model: torch.nn.Module, method: DictConfig, context: MethodContext) -> torch.nn.Module:
    require_range(method, "num_virtual_tokens", 1, context.max_positions - context.max_length)
    if method.init not in INITS:
        raise ConfigError(f"method.init={method.init!r} is unknown; use one of {sorted(INITS)}.")
    if (method.init == "text") != bool(method.init_text):
        raise ConfigError("method.init_text is used with method.init=text, and only then: set both or neither.")
    config = PromptTuningConfig(
        num_virtual_tokens=method.num_virtual_tokens,
        prompt_tuning_init=INITS[method.init],
        prompt_tuning_init_text=method.init_text,
        tokenizer_name_or_path=context.pretrained if method.init == "text" else None,
        modules_to_save=context.modules_to_save,
        task_type=context.peft_task_type,
    )
    return get_peft_model(model, config)
