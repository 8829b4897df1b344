"""The two checkpoint formats of a trained run, and loading them back.

peft's (`save_adapter`): `save_pretrained`, the adapter and the head in modules_to_save, which
users can load with `PeftModel.from_pretrained`. peftlab's own (`save_trainable`): exactly the
trainable tensors in `trainable.safetensors`: for head-only the head, for BitFit the biases and
the head, for adapters the adapters, for full fine-tuning every weight (a decoder's LM head tied
to its input embeddings once, under the embedding's name: loading it restores both).

Each applied method picks its format (`AppliedMethod.save`); `save_trained`/`load_trained` pick
it from the model alone, for callers that hold only a model (benchmarks/generation_eval.py
drives two checkouts of peftlab through them).
"""

from __future__ import annotations

from pathlib import Path

import torch
from peft import PeftModel, set_peft_model_state_dict
from safetensors.torch import load_file, save_file

TRAINABLE_FILE = "trainable.safetensors"
PEFT_WEIGHTS_FILE = "adapter_model.safetensors"
PROMPT_EMBEDDINGS = "prompt_embeddings"


def save_adapter(model: PeftModel, directory: Path) -> int:
    """peft's format; returns the bytes written."""
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    return _bytes_in(directory)


def load_adapter(model: PeftModel, directory: Path) -> None:
    outcome = set_peft_model_state_dict(model, load_file(directory / PEFT_WEIGHTS_FILE))
    # peft loads prompt embeddings into the prompt encoder itself, then reports the key unused
    _refuse_unexpected([key for key in outcome.unexpected_keys if key != PROMPT_EMBEDDINGS], directory)


def save_trainable(model: torch.nn.Module, directory: Path) -> int:
    """peftlab's format: every tensor that trains, under its name in `model`; returns the bytes written."""
    directory.mkdir(parents=True, exist_ok=True)
    save_file(trainable_tensors(model), directory / TRAINABLE_FILE)
    return _bytes_in(directory)


def trainable_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every tensor that trains, by its name in `model`, ready to save."""
    return {name: p.detach().contiguous().cpu() for name, p in model.named_parameters() if p.requires_grad}


def load_trainable(model: torch.nn.Module, directory: Path) -> None:
    _refuse_unexpected(model.load_state_dict(load_file(directory / TRAINABLE_FILE), strict=False).unexpected_keys, directory)


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
