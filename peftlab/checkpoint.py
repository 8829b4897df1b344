"""The two checkpoint formats of a trained run, and loading them back.

peft's (`save_adapter`): `save_pretrained`, the adapter and the head in modules_to_save, which
users can load with `PeftModel.from_pretrained`. peftlab's own (`save_trainable`): exactly the
trainable tensors in `trainable.safetensors`: for head-only the head, for BitFit the biases and
the head, for adapters the adapters, for full fine-tuning every weight (a decoder's LM head tied
to its input embeddings once, under the embedding's name: loading it restores both).

Both write the trained model's config beside the weights (`config.json`: the architecture and
the head's label names, `id2label`/`label2id`), so a reload names its labels instead of
`LABEL_0`..., and predict rebuilds the head without the training data. Weights are safetensors
only, written and read: nothing in a checkpoint is unpickled.

Each applied method picks its format (`AppliedMethod.save`); `save_trained`/`load_trained` pick
it from the model alone, for callers that hold only a model (benchmarks/generation_eval.py
drives two checkouts of peftlab through them).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel, set_peft_model_state_dict
from safetensors.torch import load_file, save_file

from peftlab.backbones import BaseReference

TRAINABLE_FILE = "trainable.safetensors"
PEFT_WEIGHTS_FILE = "adapter_model.safetensors"
PEFT_CONFIG_FILE = "adapter_config.json"
MODEL_CONFIG_FILE = "config.json"
PROMPT_EMBEDDINGS = "prompt_embeddings"


def save_adapter(model: PeftModel, directory: Path, base: BaseReference | None = None) -> int:
    """peft's format, naming `base` as the base model (without it, peft names the folder the
    base was loaded from: this machine's path); returns the bytes written."""
    directory.mkdir(parents=True, exist_ok=True)
    if base is not None:
        for adapter in model.peft_config.values():
            adapter.base_model_name_or_path, adapter.revision = base.name_or_path, base.revision
            if getattr(adapter, "tokenizer_name_or_path", None) is not None:  # a prompt initialised from text
                adapter.tokenizer_name_or_path = base.name_or_path
    # peftlab never resizes the vocabulary; peft's "auto" would look the base up on the hub to find out
    model.save_pretrained(directory, save_embedding_layers=False)
    save_model_config(model.get_base_model(), directory)
    return _bytes_in(directory)


def load_adapter(model: PeftModel, directory: Path, adapter_name: str = "default") -> None:
    """Put the weights of a peft checkpoint into `model`'s adapter `adapter_name`, from
    safetensors only (peft itself would fall back to unpickling `adapter_model.bin`). Refuses
    weights the model lacks, and a task head (modules_to_save) the checkpoint leaves unfilled."""
    outcome = set_peft_model_state_dict(model, load_file(directory / PEFT_WEIGHTS_FILE), adapter_name=adapter_name)
    # peft loads prompt embeddings into the prompt encoder itself, then reports the key unused
    _refuse_unexpected([key for key in outcome.unexpected_keys if key != PROMPT_EMBEDDINGS], directory)
    unfilled = [key for key in outcome.missing_keys if f".modules_to_save.{adapter_name}." in key]
    if unfilled:
        raise ValueError(f"the checkpoint in {directory} has no weights for the task head's {sorted(unfilled)[:5]}")


def save_trainable(model: torch.nn.Module, directory: Path) -> int:
    """peftlab's format: every tensor that trains, under its name in `model`; returns the bytes written."""
    directory.mkdir(parents=True, exist_ok=True)
    save_file(trainable_tensors(model), directory / TRAINABLE_FILE)
    save_model_config(model, directory)
    return _bytes_in(directory)


def trainable_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every tensor that trains, by its name in `model`, ready to save."""
    return {name: p.detach().contiguous().cpu() for name, p in model.named_parameters() if p.requires_grad}


def load_trainable(model: torch.nn.Module, directory: Path) -> None:
    _refuse_unexpected(model.load_state_dict(load_file(directory / TRAINABLE_FILE), strict=False).unexpected_keys, directory)


def save_model_config(model: torch.nn.Module, directory: Path) -> None:
    """The trained transformers model's config, naming its own class as the architecture (the
    base's config.json names the body's, e.g. BertModel)."""
    config = copy.deepcopy(model.config)
    config.architectures = [type(model).__name__]
    config.save_pretrained(directory)


def read_model_config(directory: Path) -> dict[str, Any]:
    """The config `save_model_config` wrote, as plain JSON (read without building anything)."""
    return json.loads((directory / MODEL_CONFIG_FILE).read_text(encoding="utf-8"))


def save_trained(model: torch.nn.Module, directory: Path) -> int:
    """Write the trained weights of `model` in its method's format; return the bytes written."""
    return save_adapter(model, directory) if isinstance(model, PeftModel) else save_trainable(model, directory)


def load_trained(model: torch.nn.Module, directory: Path) -> torch.nn.Module:
    """Put saved weights into a fresh model built by the same config (base + method applied),
    refusing a checkpoint whose weights the model does not have."""
    (load_adapter if isinstance(model, PeftModel) else load_trainable)(model, directory)
    return model


def _refuse_unexpected(unexpected: list[str], directory: Path) -> None:
    if unexpected:
        raise ValueError(f"the checkpoint in {directory} has weights the model lacks: {sorted(unexpected)[:5]}")


def _bytes_in(directory: Path) -> int:
    return sum(path.stat().st_size for path in directory.rglob("*") if path.is_file())
