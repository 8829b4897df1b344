"""Save what a run trained, in the owning library's format, and load it back.

peft models save with `save_pretrained` (adapter + the head in modules_to_save; users can load
it with `PeftModel.from_pretrained`). Methods of our own save exactly the trainable tensors to
`trainable.safetensors`: for head-only the head, for BitFit the biases and the head, for
adapters the adapters, for full fine-tuning every weight (a decoder's LM head tied to its input
embeddings once, under the embedding's name: loading it restores both).
"""

from __future__ import annotations

from pathlib import Path

import torch
from peft import PeftModel, set_peft_model_state_dict
from safetensors.torch import load_file, save_file

TRAINABLE_FILE = "trainable.safetensors"
PEFT_WEIGHTS_FILE = "adapter_model.safetensors"
PROMPT_EMBEDDINGS = "prompt_embeddings"


def save_trained(model: torch.nn.Module, directory: Path) -> int:
    """Write the trained weights into `directory`; return the bytes written."""
    directory.mkdir(parents=True, exist_ok=True)
    if isinstance(model, PeftModel):
        model.save_pretrained(directory)
    else:
        tensors = {name: p.detach().contiguous().cpu() for name, p in model.named_parameters() if p.requires_grad}
        save_file(tensors, directory / TRAINABLE_FILE)
    return sum(path.stat().st_size for path in directory.rglob("*") if path.is_file())


def load_trained(model: torch.nn.Module, directory: Path) -> torch.nn.Module:
    """Put saved weights into a fresh model built by the same config (base + method applied),
    refusing a checkpoint whose weights the model does not have."""
    if isinstance(model, PeftModel):
        outcome = set_peft_model_state_dict(model, load_file(directory / PEFT_WEIGHTS_FILE))
        # peft loads prompt embeddings into the prompt encoder itself, then reports the key unused
        unexpected = [key for key in outcome.unexpected_keys if key != PROMPT_EMBEDDINGS]
    else:
        tensors = load_file(directory / TRAINABLE_FILE)
        unexpected = model.load_state_dict(tensors, strict=False).unexpected_keys
    if unexpected:
        raise ValueError(f"the checkpoint in {directory} has weights the model lacks: {sorted(unexpected)[:5]}")
    return model
