"""Task kinds. A task config names its kind's class (`task.kind: module.Class`); the class
loads and encodes the data, attaches the head and computes the metrics."""

from __future__ import annotations

from typing import Any, Protocol

import torch
from hydra.utils import get_class
from omegaconf import DictConfig
from transformers import PreTrainedTokenizerBase

from peftlab.errors import ConfigError


class Task(Protocol):
    """What the shared trainer asks of every task kind."""

    primary_metric: str
    peft_task_type: str  # peft.TaskType name

    def prepare_data(self) -> dict[str, list[dict]]: ...
    def build_model(self, backbone: DictConfig) -> torch.nn.Module: ...
    def head_modules(self, model: torch.nn.Module) -> list[str]: ...
    def encode(self, splits: dict[str, list[dict]], tokenizer: PreTrainedTokenizerBase) -> dict[str, Any]: ...
    def collator(self, tokenizer: PreTrainedTokenizerBase, prepended_positions: int = 0) -> Any: ...
    def compute_metrics(self, eval_prediction: Any) -> dict[str, float]: ...


def build_task(task: DictConfig) -> Task:
    try:
        kind = get_class(task.kind)
    except Exception as error:
        raise ConfigError(f"task {task.name!r}: task.kind={task.kind!r} is not an importable class ({error}).") from error
    return kind(task)
