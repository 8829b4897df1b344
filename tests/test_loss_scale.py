"""How a training batch's loss is scaled.

`trainer.grad_accum`: k micro-batches of b examples must train as one batch of k·b.

transformers' Trainer skips its division of the loss by the accumulation steps when the model's
forward takes **kwargs, trusting it to divide by Trainer's count of the accumulated batch's
targets; transformers' classification heads take the **kwargs and drop the count
(transformers#47688), so without peftlab's correction their loss and gradients came out
`grad_accum` times too large.

`trainer.target_weighted_loss`: each batch's loss weighed by its targets over the average
batch's, so that a batch of short sentences weighs less than one of long sentences."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from datasets import Dataset

from peftlab.run import make_trainer, mean_batch_targets, prepare
from tests.conftest import compose_config


def first_step(cfg, tmp_path: Path, batch_size: int, grad_accum: int, weighted: bool = False) -> dict[str, float]:
    """The loss and gradient norm Trainer logs for the first optimizer step, dropout off so that
    one batch and its micro-batches see the same network. Random batches: both runs draw the same
    permutation, so the step's examples are the same 8 (length grouping would cut them differently)."""
    cfg.trainer.batch_size = batch_size
    cfg.trainer.grad_accum = grad_accum
    cfg.trainer.max_steps = 1
    cfg.trainer.logging_steps = 1
    cfg.trainer.group_by_length = False
    cfg.trainer.target_weighted_loss = weighted
    prepared = prepare(cfg)
    for module in prepared.model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    trainer = make_trainer(cfg, prepared, tmp_path / f"b{batch_size}_k{grad_accum}_w{weighted}")
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


def test_weighted_token_classification_accumulates_exactly(tiny_config, tmp_path):
    """Weighted, each micro-batch contributes its targets' summed loss over the same constant, so
    4 x 2 gives what one batch of 8 gives (16 sentences: the average batch of 8 holds exactly
    twice the average batch of 4's targets), where unweighted the two differ (the test above)."""
    whole = first_step(tiny_config("method=lora"), tmp_path, batch_size=8, grad_accum=1, weighted=True)
    accumulated = first_step(tiny_config("method=lora"), tmp_path, batch_size=4, grad_accum=2, weighted=True)
    assert accumulated["loss"] == pytest.approx(whole["loss"], rel=1e-4)
    assert accumulated["grad_norm"] == pytest.approx(whole["grad_norm"], rel=1e-4)


def test_both_trainer_presets_weigh_batches_by_their_targets():
    """The default since experiment conll2003_grouped_batches (benchmarks/README.md)."""
    assert compose_config([]).trainer.target_weighted_loss is True
    assert compose_config(["trainer=smoke"]).trainer.target_weighted_loss is True


def test_mean_batch_targets_counts_labels_other_than_the_ignored_over_the_epoch_batches():
    rows = Dataset.from_dict({"labels": [[1, -100, 2], [3], [-100, -100], [0, 4]]})
    assert mean_batch_targets(rows, batch_size=2) == 5 / 2
    assert mean_batch_targets(rows, batch_size=3) == 5 / 2  # a short last batch counts as a batch
    sentences = Dataset.from_dict({"labels": [0, 1, 1, 0, 2]})  # one label per sentence
    assert mean_batch_targets(sentences, batch_size=2) == 5 / 3


@pytest.mark.parametrize("weighted", [False, True])
def test_training_loss_is_weighted_by_the_batch_targets_and_evaluation_loss_never(tiny_config, tmp_path, weighted):
    """The weight is this batch's targets over the average batch's: a batch of the two shortest
    sentences weighs less than one of the two longest, by their target ratio; the evaluation
    loss (validation scores and model selection) stays the plain mean."""
    cfg = tiny_config("method=full", f"trainer.target_weighted_loss={weighted}", "trainer.batch_size=2")
    prepared = prepare(cfg)
    trainer = make_trainer(cfg, prepared, tmp_path / "trainer")
    train = prepared.encoded["train"]
    by_targets = sorted(range(len(train)), key=lambda row: sum(label != -100 for label in train[row]["labels"]))
    mean = mean_batch_targets(train, batch_size=2)
    model = trainer.model
    for rows in (by_targets[:2], by_targets[-2:]):
        batch = trainer.data_collator([train[row] for row in rows])
        targets = int(batch["labels"].ne(-100).sum())
        model.eval()
        with torch.no_grad():
            plain = trainer.compute_loss(model, batch).item()
        model.train()
        for module in model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
        with torch.no_grad():
            trained = trainer.compute_loss(model, batch).item()
        assert trained == pytest.approx(plain * (targets / mean if weighted else 1.0), rel=1e-5)
    assert trainer.evaluate()["eval_loss"] == pytest.approx(
        make_trainer(tiny_config("method=full"), prepared, tmp_path / "plain").evaluate()["eval_loss"], rel=1e-6
    )
