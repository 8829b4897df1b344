"""Task kinds. A task config names its kind's class (`task.kind: module.Class`); the class
loads and encodes the data, attaches the head, evaluates and computes the metrics.

Every kind goes through the same steps, written once in `Task` (the template): load the splits
(`task.data`), `check` them, arrange them (validation carved from train when missing, test
optional, subsamples), load the backbone with the kind's head (`auto_model`), `encode`. A new
kind writes only what differs: its `auto_model`, what `check` refuses (and the label set it
fixes on the full training split), `tokenize`, `collator` and `compute_metrics`.

A trained run also answers new inputs (`python -m peftlab.predict`): the kind reads an input
line (`read_input`) and answers a batch of them (`predict`) with the encoding its training
used, and takes its label set from the trained model's config instead of the training data
(`use_trained_labels`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from hydra.utils import get_class
from omegaconf import DictConfig
from transformers import PreTrainedTokenizerBase, Trainer

from peftlab.backbones import load_model
from peftlab.data.few_shot import ShotRule
from peftlab.data.sources import Splits, arrange_splits, load_splits
from peftlab.errors import ConfigError, DataError
from peftlab.heads import head_modules

IGNORED = -100  # the label id torch's cross-entropy skips: padding, prompts, later sub-tokens


@dataclass(frozen=True)
class InputLayout:
    """What the task must know about the method in front of the model, and nothing more: how
    many virtual tokens it puts before every input (prompt tuning, P-tuning), which take
    sequence positions that per-token labels must skip; and the demonstrations, (prompt,
    completion) pairs, written before every prompt (in-context prompting), which a generation
    task formats as it formats its own examples. The applied method says it
    (`AppliedMethod.input_layout`); the task never asks the method library."""

    prepended_positions: int = 0
    demonstrations: tuple[tuple[str, str], ...] = ()


PLAIN_INPUT = InputLayout()  # nothing in front of the input: the layout without a prompt method


class Task:
    """What the shared trainer asks of every task kind, and the steps they share. Evaluation
    through `Trainer.evaluate` suits every kind that scores the model's logits; a kind that must
    generate text overrides `evaluate`."""

    primary_metric: str
    peft_task_type: str  # peft.TaskType name
    auto_model: type  # the transformers Auto class that builds the backbone with this kind's head
    # Whether the loss of the model `auto_model` builds is divided by the number of targets in the
    # whole accumulated batch, which Trainer counts and hands it (`num_items_in_batch`), as
    # transformers' causal-LM loss is. Otherwise it is the mean over each micro-batch, and Trainer
    # must divide it by `trainer.grad_accum` (`PeftlabTrainer.compute_loss`). Read only with
    # `trainer.target_weighted_loss=false`: weighted, every task's micro-batch mean is weighed.
    loss_spans_accumulation: bool = False

    def __init__(self, task: DictConfig) -> None:
        self.config = task
        self.notes: list[str] = []  # what prepare_data did that a reader of result.json must know

    def prepare_data(self) -> Splits:
        """{"train", "validation"[, "test"]: examples}: loaded, checked in full (before any
        subsample, so a label set is read from all of train), then arranged. A missing test
        split is allowed: the run then reports validation only and says so."""
        splits = self.check(load_splits(self.config.data))
        arranged, self.notes = arrange_splits(splits, self.config, self.shot_rule())
        return arranged

    def check(self, splits: Splits) -> Splits:
        """Refuse what this kind cannot train on, naming the split and the fix; return the splits
        in the shape `encode` takes."""
        return splits

    def shot_rule(self) -> ShotRule | None:
        """How `task.shots_per_class` draws K of each class (peftlab/data/few_shot.py), after
        `check` has fixed the label set; None for a kind without classes."""
        return None

    def build_model(self, backbone: DictConfig, quant: DictConfig) -> torch.nn.Module:
        return load_model(self.auto_model, backbone, quant, **self.model_kwargs())

    def model_kwargs(self) -> dict[str, Any]:
        """What `auto_model` needs to size the head (the labels)."""
        return {}

    def head_modules(self, model: torch.nn.Module, head_in_body: list[str]) -> list[str]:
        """The modules that train in full with every method (`peftlab.heads`)."""
        return head_modules(model, head_in_body)

    def encode(
        self, splits: Splits, tokenizer: PreTrainedTokenizerBase, layout: InputLayout = PLAIN_INPUT
    ) -> dict[str, Any]:
        """Each split as a `datasets.Dataset` holding only the model inputs `tokenize` makes;
        truncated at `task.max_length`, padded per batch by the collator. The method's `layout`
        matters to a kind that writes what the method puts before its text (demonstrations)."""
        import datasets

        encoded = {}
        for split, examples in splits.items():
            dataset = datasets.Dataset.from_list(examples)
            encoded[split] = dataset.map(
                lambda batch: self.tokenize(batch, tokenizer), batched=True, remove_columns=dataset.column_names
            )
        return encoded

    def tokenize(self, batch: dict[str, list], tokenizer: PreTrainedTokenizerBase) -> dict[str, list]:
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

    def use_trained_labels(self, model_config: dict[str, Any]) -> None:
        """For predict, which has no training data: take the label set from the trained model's
        config (checkpoint/config.json). A kind without labels has nothing to take."""

    def read_input(self, line: str, tokenizer: PreTrainedTokenizerBase, pre_split: bool) -> dict[str, Any]:
        """One line of input as the example `predict` takes; `pre_split`: the line is words
        separated by spaces, for kinds that label words."""
        raise NotImplementedError

    def predict(
        self, model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, examples: list[dict], layout: InputLayout
    ) -> list[Any]:
        """The trained model's answer to each example, as the data writes answers (a tag per
        word, a label, a completion), encoded as in training and in evaluation mode."""
        raise NotImplementedError

    def data_source(self) -> str:
        """Where the data comes from, as error messages name it."""
        data = self.config.data
        if data.path is not None:
            return f"task.data.path={data.path}"
        if data.hub_id is not None:
            return f"the hub dataset {data.hub_id!r}"
        return f"task.data (format {data.format!r})"


def label_head(labels: list[str]) -> dict[str, Any]:
    """`from_pretrained` arguments for a head with one output per label, its names in the config."""
    return dict(
        num_labels=len(labels), id2label=dict(enumerate(labels)), label2id={label: i for i, label in enumerate(labels)}
    )


def trained_labels(model_config: dict[str, Any]) -> list[str]:
    """The label names of a trained head in id order, from its saved config: the inverse of
    `label_head` (JSON keys are strings)."""
    id2label = model_config["id2label"]
    return [id2label[str(i)] for i in range(len(id2label))]


def refuse_pre_split(task: Task, pre_split: bool) -> None:
    if pre_split:
        raise DataError(
            f"task {task.config.name!r} reads plain text, and words given one by one (predict --words) are for token "
            "classification only: give each input as a line of text."
        )


def logits_of(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """The model's logits for one padded batch, on the model's device, without gradients."""
    device = next(model.parameters()).device
    with torch.inference_mode():
        return model(**{name: tensor.to(device) for name, tensor in inputs.items()}).logits


def build_task(task: DictConfig) -> Task:
    try:
        kind = get_class(task.kind)
    except Exception as error:
        raise ConfigError(f"task {task.name!r}: task.kind={task.kind!r} is not an importable class ({error}).") from error
    return kind(task)
