"""Model-level helpers the method, quantization, decoder and classification tests share: a fixed
batch through the task's own collator, logits, a few plain AdamW steps, and the audit every
method must pass (what trains, what stays bit-identical, what the checkpoint restores)."""

from __future__ import annotations

import pytest
import torch
import transformers
from hydra.utils import get_class
from peft import PromptLearningConfig

from peftlab.run import prepare


def body_parameters(cfg) -> int:
    """Counted on a plain BertModel, with none of peftlab's counting code."""
    body = transformers.BertModel.from_pretrained(cfg.backbone.pretrained, add_pooling_layer=False)
    return sum(p.numel() for p in body.parameters())


def fixed_batch(prepared, size: int = 6) -> dict[str, torch.Tensor]:
    collate = prepared.task.collator(prepared.tokenizer, prepared.method.input_layout)
    return collate([prepared.encoded["train"][i] for i in range(size)])


def logits(model, batch) -> torch.Tensor:
    model.eval()
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        return model(**inputs).logits


def optimizer_steps(prepared, batch, lr: float, steps: int) -> list[float]:
    """Plain AdamW on the trainable parameters, dropout off: the loss on one batch must fall."""
    model = prepared.model
    model.eval()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    losses = []
    for _ in range(steps):
        loss = model(**batch).loss
        losses.append(loss.item())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return losses


def audit_training(cfg, checkpoint_dir, batch_size: int = 6):
    """Train on one batch and check what every method promises: the loss falls, every frozen
    parameter is bit-identical, every trainable one moved, and the checkpoint restores the
    trained logits. Returns (prepared, batch, trained logits) for method-specific checks."""
    prepared = prepare(cfg)
    batch = fixed_batch(prepared, batch_size)
    frozen = {n: p.detach().clone() for n, p in prepared.model.named_parameters() if not p.requires_grad}
    trainable = {n: p.detach().clone() for n, p in prepared.model.named_parameters() if p.requires_grad}

    losses = optimizer_steps(prepared, batch, lr=1e-2, steps=8)

    assert losses[-1] < losses[0] * 0.9, losses
    now = dict(prepared.model.named_parameters())
    assert [n for n, before in frozen.items() if not torch.equal(before, now[n])] == []
    assert [n for n, before in trainable.items() if torch.equal(before, now[n].detach())] == []

    trained_logits = logits(prepared.model, batch)
    prepared.method.save(checkpoint_dir)
    restored = prepare(cfg)
    restored.method.load(checkpoint_dir)
    assert torch.allclose(trained_logits, logits(restored.model, batch), atol=1e-6)
    return prepared, batch, trained_logits


def assert_zero_init_is_identity(cfg, batch_size: int = 6) -> None:
    """A method whose new weights start at zero must leave the model's outputs unchanged until
    the first step (prompt and prefix tuning add context from the start by design: skipped)."""
    if adds_context(cfg.method):
        pytest.skip("prompt and prefix tuning add context from the first step by design")
    prepared = prepare(cfg)
    transformers.set_seed(cfg.seed)
    frozen = prepared.task.build_model(cfg.backbone, cfg.quant)  # same seed: the same head initialisation
    batch = fixed_batch(prepared, batch_size)
    assert torch.allclose(logits(prepared.model, batch), logits(frozen, batch), atol=1e-6)


def adds_context(method) -> bool:
    """Prompt and prefix tuning: peft prompt-learning configs, which add context, not weights."""
    return "peft" in method and issubclass(get_class(method.peft._target_), PromptLearningConfig)
