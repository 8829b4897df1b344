"""Task kinds. A task config names its kind's class (`task.kind: module.Class`); the class
loads and encodes the data, attaches the head, evaluates and computes the metrics."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from hydra.utils import get_class
from omegaconf import DictConfig
from transformers import PreTrainedTokenizerBase, Trainer

from peftlab.errors import ConfigError


@dataclass(frozen=True)
class InputLayout:
    """What a collator must know about the method in front of the model, and nothing more: how
    many virtual tokens it puts before every input (prompt tuning, P-tuning), which take
    sequence positions that per-token labels must skip. The applied method says it
    (`AppliedMethod.input_layout`); the task never asks the method library."""

    prepended_positions: int = 0


PLAIN_INPUT = InputLayout()  # nothing in front of the input: the layout without a prompt method


class Task:
    """What the shared trainer asks of every task kind. Subclasses fill in the data, the head
    and the metric; evaluation through `Trainer.evaluate` suits every kind that scores the
    model's logits, and a kind that must generate text overrides `evaluate`."""

    primary_metric: str
    peft_task_type: str  # peft.TaskType name

    def __init__(self, task: DictConfig) -> None:
        self.config = task
        self.notes: list[str] = []  # what prepare_data did that a reader of result.json must know

    def prepare_data(self) -> dict[str, list[dict]]:
        """{"train", "validation"[, "test"]: examples}. A missing test split is allowed: the run
        then reports validation only and says so. `peftlab.data.sources.arrange_splits` applies
        the rule every kind shares (validation carved from train when missing)."""
        raise NotImplementedError

    def build_model(self, backbone: DictConfig, quant: DictConfig) -> torch.nn.Module:
        raise NotImplementedError

    def head_modules(self, model: torch.nn.Module) -> list[str]:
        """Top-level modules outside the pretrained body that have weights: the task head. The
        run adds the modules inside the body that the head reads (`backbone.head_in_body`)."""
        return [
            name
            for name, child in model.named_children()
            if name != model.base_model_prefix and any(True for _ in child.parameters())
        ]

    def encode(self, splits: dict[str, list[dict]], tokenizer: PreTrainedTokenizerBase) -> dict[str, Any]:
        raise NotImplementedError

    def collator(self, tokenizer: PreTrainedTokenizerBase, layout: InputLayout = PLAIN_INPUT) -> Any:
        raise NotImplementedError

    def compute_metrics(self, eval_prediction: Any) -> dict[str, float]:
        raise NotImplementedError

    @staticmethod
    def logits_to_predictions(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Argmax on the device, so evaluation keeps ids instead of every logit in memory."""
        return logits.argmax(dim=-1)

    def evaluate(self, trainer: Trainer, dataset: Any, split: str) -> dict[str, float]:
        """Metrics on one split, keys prefixed with the split name (`validation_f1`)."""
        return trainer.evaluate(dataset, metric_key_prefix=split)


def build_task(task: DictConfig) -> Task:
    try:
        kind = get_class(task.kind)
    except Exception as error:
        raise ConfigError(f"task {task.name!r}: task.kind={task.kind!r} is not an importable class ({error}).") from error
    return kind(task)
