"""`trainer.grad_accum`: k micro-batches of b examples must train as one batch of k·b.

transformers' Trainer skips its division of the loss by the accumulation steps when the model's
forward takes **kwargs, trusting it to divide by Trainer's count of the accumulated batch's
targets; transformers' classification heads take the **kwargs and drop the count
(transformers#47688), so without peftlab's correction their loss and gradients came out
`grad_accum` times too large."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from peftlab.run import make_trainer, prepare


def first_step(cfg, tmp_path: Path, batch_size: int, grad_accum: int) -> dict[str, float]:
    """The loss and gradient norm Trainer logs for the first optimizer step, dropout off so that
    one batch and its micro-batches see the same network. Random batches: both runs draw the same
    permutation, so the step's examples are the same 8 (length grouping would cut them differently)."""
    cfg.trainer.batch_size = batch_size
    cfg.trainer.grad_accum = grad_accum
    cfg.trainer.max_steps = 1
    cfg.trainer.logging_steps = 1
    cfg.trainer.group_by_length = False
    prepared = prepare(cfg)
    for module in prepared.model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    trainer = make_trainer(cfg, prepared, tmp_path / f"b{batch_size}_k{grad_accum}")
    trainer.train()
    logged = trainer.state.log_history[0]
    return {"loss": logged["loss"], "grad_norm": logged["grad_norm"]}


@pytest.mark.parametrize("composer", ["tiny_cls_config", "tiny_gen_config"])
def test_accumulated_micro_batches_train_as_one_batch(composer, request, tmp_path):
    """Exactly, where the loss is a mean over targets that every micro-batch holds equally many of
    (one label per sentence) or is divided by the accumulated count (the causal-LM loss)."""
    make = request.getfixturevalue(composer)  # the generation fixture replaces the data loader: one at a time
    whole = first_step(make("method=lora"), tmp_path, batch_size=8, grad_accum=1)
    accumulated = first_step(make("method=lora"), tmp_path, batch_size=4, grad_accum=2)
    assert accumulated["loss"] == pytest.approx(whole["loss"], rel=1e-3)
    assert accumulated["grad_norm"] == pytest.approx(whole["grad_norm"], rel=1e-3)


def test_accumulated_token_classification_keeps_the_loss_scale(tiny_config, tmp_path):
    """Token labels: each micro-batch's loss is its mean over its own tokens, so the accumulated
    step averages two means where one batch takes one over all tokens: near (0.03% apart on these
    sentences of similar lengths), not equal. The bug this guards against doubled both numbers."""
    whole = first_step(tiny_config("method=lora"), tmp_path, batch_size=8, grad_accum=1)
    accumulated = first_step(tiny_config("method=lora"), tmp_path, batch_size=4, grad_accum=2)
    assert accumulated["loss"] == pytest.approx(whole["loss"], rel=0.05)
    assert accumulated["grad_norm"] == pytest.approx(whole["grad_norm"], rel=0.05)
