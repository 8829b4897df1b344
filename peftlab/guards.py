"""Training that has gone wrong stops instead of training on."""

from __future__ import annotations

import torch
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from peftlab.errors import PeftlabError


class TrainingDiverged(PeftlabError):
    """The loss or its gradients became nan or inf: every step after would spread it to the weights."""


class StopOnNonFiniteLoss(TrainerCallback):
    """Stops the run at the first optimizer step whose gradients are not finite, before the
    optimizer applies them. A nan or inf loss gives such gradients, and so does one that
    overflows; transformers' Trainer would train on (its `logging_nan_inf_filter` only keeps the
    logged loss readable), turning every trained weight into nan and saving checkpoints of it.

    The check is one norm over the gradients, as the gradient clipping before it computes.
    With fp16 mixed precision, inf gradients are the loss scaler's business (it skips that step
    and lowers the scale), so the check is left to it."""

    def on_pre_optimizer_step(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, model: torch.nn.Module = None, **kwargs
    ) -> None:
        if args.fp16:
            return
        gradients = [parameter.grad for parameter in model.parameters() if parameter.grad is not None]
        if not gradients:
            return
        norm = torch.nn.utils.get_total_norm(gradients)
        if not torch.isfinite(norm):
            raise TrainingDiverged(
                f"training stopped at step {state.global_step + 1}: the loss or its gradients are {norm.item()}, so "
                "training on would turn the weights into nan; the weights were not updated at that step. Lower "
                f"trainer.lr (it is {args.learning_rate:g}), raise trainer.warmup, or check the data."
            )
