"""PEFT methods. `conf/method/*.yaml` is the registry: each file names the function that
applies it (`apply: module.function`), and that function gets the model, the method's own
config and a `MethodContext`, and returns an `AppliedMethod`: the model to train, and what the
run asks of the method afterwards. Shared code never branches on a method's name.

Every peft tuner is one yaml for `peftlab.methods.peft_method.apply` (its `peft:` block names
the peft config class); modules here are only for peftlab's own methods."""

from __future__ import annotations

import re
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from hydra.utils import get_class, get_method
from omegaconf import DictConfig
from transformers.pytorch_utils import Conv1D

from peftlab.backbones import BaseReference
from peftlab.checkpoint import load_trainable, save_trainable
from peftlab.errors import ConfigError
from peftlab.params import in_modules
from peftlab.tasks import PLAIN_INPUT, InputLayout, Task


ALL_LINEAR = "all_linear"  # a `targets` value: every linear layer of the body, never the head
# Layers peft wraps as linear: torch's Linear, and transformers' Conv1D (GPT-2), a linear layer
# that stores its weight transposed (peft sets fan_in_fan_out for it).
LINEAR_LAYERS: tuple[type[torch.nn.Module], ...] = (torch.nn.Linear, Conv1D)


def output_features(layer: torch.nn.Module) -> int:
    """Width of a linear layer's output, whichever of LINEAR_LAYERS it is."""
    return layer.nf if isinstance(layer, Conv1D) else layer.out_features


@dataclass(frozen=True)
class MethodContext:
    """What a method needs to know about the backbone and the task, and nothing else."""

    backbone_name: str
    pretrained: str  # resolved folder or hub id (prompt tuning initialises from its tokenizer)
    slots: dict[str, str]  # generic slot -> regex over the end of a module name
    head_modules: list[str]  # modules of the task head (`classifier`, `bert.pooler`; none for a causal LM)
    peft_task_type: str  # peft.TaskType name for the task kind, e.g. TOKEN_CLS
    hidden_size: int
    max_positions: int  # position embeddings of the backbone
    max_length: int  # longest tokenized input the task feeds it
    # The training split as the task checked it, for a method that draws from it (in-context
    # prompting's demonstrations); empty where a finished run is rebuilt (predict), whose method
    # loads what it drew from its checkpoint.
    demonstration_pool: Sequence[dict] = ()
    data_seed: int | None = None  # task.data_seed: what draws from the data, the same for every training seed

    @property
    def modules_to_save(self) -> list[str] | None:
        """The head for peft's `modules_to_save`; None, peft's own "nothing", when there is none."""
        return list(self.head_modules) or None

    def modules_for(
        self,
        model: torch.nn.Module,
        slot_names: list[str] | str,
        config_key: str,
        kinds: tuple[type[torch.nn.Module], ...] | None = LINEAR_LAYERS,
    ) -> list[str]:
        """Full names of the body's modules in the given slots (never the task head), each once:
        GPT-2 maps the q, k and v slots to its one fused layer.

        `kinds` filters by module type: linear layers for adapters and LoRA, None (any) for norms.
        `all_linear` leaves out the output embeddings too: a causal LM has no separate head, and
        its LM head (often tied to the input embeddings) is not a body layer to adapt."""
        if slot_names == ALL_LINEAR:
            output_embeddings = model.get_output_embeddings()
            return [
                name
                for name, module in model.named_modules()
                if isinstance(module, LINEAR_LAYERS) and module is not output_embeddings and not self.in_head(name)
            ]
        names: dict[str, None] = {}
        for slot in slot_names:
            pattern = self._slot_pattern(slot, config_key)
            matched = [
                name
                for name, module in model.named_modules()
                if (kinds is None or isinstance(module, kinds)) and pattern.search(name) and not self.in_head(name)
            ]
            if not matched:
                kind_names = "/".join(kind.__name__ for kind in kinds) if kinds else "module"
                raise ConfigError(
                    f"{config_key}: slot {slot!r} maps to {self.slots[slot]!r} in backbone "
                    f"{self.backbone_name!r}, which matches no {kind_names} of the "
                    f"model. Fix the slot map in conf/backbone/{self.backbone_name}.yaml."
                )
            names.update(dict.fromkeys(matched))
        return list(names)

    def in_head(self, module_name: str) -> bool:
        return in_modules(module_name, self.head_modules)

    def _slot_pattern(self, slot: str, config_key: str) -> re.Pattern[str]:
        if slot not in self.slots:
            raise ConfigError(
                f"{config_key} names slot {slot!r}, but backbone {self.backbone_name!r} maps only "
                f"{sorted(self.slots)}. Use one of those (or {ALL_LINEAR!r} where a method takes "
                f"linear layers), or add {slot!r} to the slots of conf/backbone/{self.backbone_name}.yaml."
            )
        return re.compile(rf"(^|\.){self.slots[slot]}$")


class AppliedMethod:
    """A method applied to one model: `model` is what trains, and the method answers what the
    rest of the run needs from it. This base is peftlab's own kind, which trains tensors of the
    model in place (full, BitFit, head-only) or in modules it added: its checkpoint is exactly
    the tensors that train (`checkpoint.save_trainable`), and nothing goes before the input.

    `trains` is False for a method that trains nothing by design (in-context prompting): the run
    evaluates the model as loaded. A method that means to train but finds nothing to train on a
    backbone (BitFit without biases) is refused instead."""

    trains = True

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model

    @property
    def input_layout(self) -> InputLayout:
        """What the task's collator must know: positions the method puts before every input."""
        return PLAIN_INPUT

    def save(self, directory: Path, base: BaseReference | None = None) -> int:
        """Write what trained into `directory`, with the model's config (the head's label names);
        return the bytes written. `base` is how the checkpoint names its base model where the
        format has a place for it (peft's); None leaves the folder the base was loaded from."""
        return save_trainable(self.model, directory)

    def load(self, directory: Path) -> None:
        """Put what `save` wrote back into this model (a fresh one built by the same config),
        refusing a checkpoint with weights the model lacks."""
        load_trainable(self.model, directory)

    def merge(self) -> torch.nn.Module:
        """A plain model, loadable without peftlab, that computes what the trained one does.
        Here the trained weights are the model's own, so it is the model itself."""
        return self.model

    def as_pretrained(self) -> AbstractContextManager:
        """Inside it, `model` computes what the pretrained model does: what forgetting is measured
        from (peftlab/forgetting.py). Here, before training, that is the model as it is: full and
        BitFit train the pretrained weights in place, and a bottleneck adapter's up-projection
        starts at zero, so it adds exactly nothing until it trains."""
        return nullcontext()


def apply_method(model: torch.nn.Module, method: DictConfig, context: MethodContext) -> AppliedMethod:
    """Let the configured method make its parameters trainable on a frozen model."""
    try:
        apply = get_method(method.apply)
    except Exception as error:
        raise ConfigError(
            f"method {method.name!r}: method.apply={method.apply!r} is not an importable function ({error})."
        ) from error
    return apply(model, method, context)


def check_task_kind(method: DictConfig, task: Task) -> None:
    """`method.task_kinds` lists the task kinds a method serves (absent: every kind); a task of
    any other kind is refused before anything loads, with the method's own `task_kinds_refusal`."""
    if not serves(method, type(task)):
        raise ConfigError(
            f"method={method.name} cannot run task={task.config.name} (task.kind={task.config.kind}): "
            f"{method.task_kinds_refusal}."
        )


def serves(method: DictConfig, task_kind: type[Task]) -> bool:
    """Whether the method runs on tasks of `task_kind`: one of its `task_kinds`, or a subclass."""
    kinds = method.get("task_kinds")
    return kinds is None or any(issubclass(task_kind, get_class(kind)) for kind in kinds)


def require_range(method: DictConfig, key: str, low: float, high: float | None = None) -> None:
    """Refuse a hyperparameter outside [low, high] before any training starts."""
    check_range(method.name, f"method.{key}", method[key], low, high)


def check_range(method_name: str, key: str, value: object, low: float, high: float | None = None) -> None:
    """Refuse `value`, set by the config key `key`, outside [low, high], naming both."""
    upper = float("inf") if high is None else high
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= upper:
        allowed = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ConfigError(
            f"{key}={value!r} is out of range for method {method_name!r}: it must be {allowed} "
            f"(set in conf/method/{method_name}.yaml or on the command line)."
        )
