"""Save what a run trained, in the owning library's format, and load it back onto a fresh base.

peft models save with `save_pretrained` (adapter + the head in modules_to_save). Methods that
train the base's own weights in place save exactly the trainable tensors to
`trainable.safetensors`: for head-only that is the head, for full fine-tuning every weight.
"""

from __future__ import annotations

from pathlib import Path

import torch
from peft import PeftModel
from safetensors.torch import load_file, save_file

TRAINABLE_FILE = "trainable.safetensors"


def save_trained(model: torch.nn.Module, directory: Path) -> int:
    """Write the trained weights into `directory`; return the bytes written."""
    directory.mkdir(parents=True, exist_ok=True)
    if isinstance(model, PeftModel):
        model.save_pretrained(directory)
    else:
        tensors = {name: p.detach().contiguous().cpu() for name, p in model.named_parameters() if p.requires_grad}
        save_file(tensors, directory / TRAINABLE_FILE)
    return sum(path.stat().st_size for path in directory.rglob("*") if path.is_file())


def load_trained(base: torch.nn.Module, directory: Path) -> torch.nn.Module:
    """Put saved weights onto a freshly loaded base with the same head shape."""
    if not (directory / TRAINABLE_FILE).exists():
        return PeftModel.from_pretrained(base, directory)
    tensors = load_file(directory / TRAINABLE_FILE)
    unexpected = set(tensors) - {name for name, _ in base.named_parameters()}
    if unexpected:
        raise ValueError(f"{directory / TRAINABLE_FILE} has weights the model lacks: {sorted(unexpected)[:5]}")
    base.load_state_dict(tensors, strict=False)
    return base
