"""The task head, defined once: the modules a task kind's transformers class adds around the
pretrained body, and so the modules that train in full with every method and stay in float on
a quantized base.

The rule reads the model, not a list of names: its top-level modules with weights outside the
pretrained body (`base_model_prefix`), so every transformers head (classifier, score,
qa_outputs, lm_head) and every head of several modules (RoBERTa's `classifier.dense` and
`classifier.out_proj`) is found. Some heads also read modules inside the body: BERT's sequence
classifier reads the body's pooler. The backbone config names those (`backbone.head_in_body`,
relative to the body); a name the built model lacks, or that has no weights, is skipped (token
classification builds no pooler, nor does RoBERTa's sequence classifier).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


def head_modules(model: torch.nn.Module, head_in_body: Iterable[str] = ()) -> list[str]:
    """The head's modules by full name: beside the body first, then those inside it. Works on a
    model built on the meta device too, so a quantized load knows its head before any weight."""
    modules = dict(model.named_modules())
    beside_body = [
        name for name, child in model.named_children() if name != model.base_model_prefix and _has_weights(child)
    ]
    inside_body = [f"{model.base_model_prefix}.{name}" for name in head_in_body]
    return beside_body + [name for name in inside_body if name in modules and _has_weights(modules[name])]


def _has_weights(module: torch.nn.Module) -> bool:
    return any(True for _ in module.parameters())
