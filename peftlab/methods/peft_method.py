"""Any peft tuner, built from its yaml: LoRA, DoRA, (IA)^3, LoHa, VeRA, prompt and prefix tuning
are each a `conf/method/*.yaml` whose `peft:` block is the peft config, `_target_` naming its
class and every other key one of its fields, usually `${..knob}` so that the method's
short knobs (`method.r`, `method.targets`) set it:

    peft:
      _target_: peft.LoraConfig
      r: ${..r}
      target_modules: ${..targets}

The run fills in what belongs to the run: the fields that name modules (`SLOT_FIELDS`) take
generic slots, mapped to this backbone's module names; `task_type` comes from the task kind and
`modules_to_save` is the task head, so both are refused in the yaml; a tokenizer for a prompt
initialised from text is the backbone's.

Trap (prefix tuning): for encoders (token and sequence classification) peft hands the prefix to
the model as `past_key_values` and first checks that name in the forward signature.
transformers 5.24 renamed it `cache` in BERT-family models, so peft 0.21.2 refuses them
mid-training; `require_past_key_values` says so before anything trains."""

from __future__ import annotations

import dataclasses
import enum
import inspect
import re
import typing
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import peft
import torch
import transformers
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf
from peft import PeftConfig, PeftModel, PeftType, PromptTuningInit, get_peft_model

from peftlab.backbones import BaseReference
from peftlab.checkpoint import load_adapter, save_adapter
from peftlab.errors import ConfigError
from peftlab.methods import AppliedMethod, MethodContext, check_range
from peftlab.export import merge_to_float
from peftlab.tasks import InputLayout

# peft fields that name modules: they take slots (or all_linear) in the yaml
SLOT_FIELDS = ("target_modules", "feedforward_modules", "exclude_modules")
# peft fields the run sets, never the yaml
RUN_FIELDS = ("task_type", "modules_to_save")
# peft fields that peft reads only when another field has a given value, and ignores in silence
# otherwise: set one without the other and the run is refused
USED_ONLY_WITH = {"prompt_tuning_init_text": ("prompt_tuning_init", PromptTuningInit.TEXT)}
# `${..knob}`: a peft field set by one of the method's own keys
KNOB = re.compile(r"\$\{\.\.([\w.]+)\}")


class PeftMethod(AppliedMethod):
    """A peft tuner on the model: saved in peft's format (loadable with `PeftModel.from_pretrained`),
    merged through peft (in float, on a quantized base too)."""

    model: PeftModel

    @property
    def input_layout(self) -> InputLayout:
        return InputLayout(prepended_positions(self.model.active_peft_config))

    def save(self, directory: Path, base: BaseReference | None = None) -> int:
        return save_adapter(self.model, directory, base)

    def load(self, directory: Path) -> None:
        load_adapter(self.model, directory)

    def merge(self) -> torch.nn.Module:
        return merge_to_float(self.model)

    def as_pretrained(self) -> AbstractContextManager:
        """peft's switch for the base model alone: LoRA's deltas off, and for a prompt method the
        virtual tokens or prefix gone, which are there before any training."""
        return self.model.disable_adapter()


def apply(model: torch.nn.Module, method: DictConfig, context: MethodContext) -> PeftMethod:
    config = peft_config(model, method, context)
    if passes_prefix_as_past_key_values(config) and context.peft_task_type != "CAUSAL_LM":
        require_past_key_values(model, method.name, context.backbone_name)
    try:
        return PeftMethod(get_peft_model(model, config))
    except (ValueError, TypeError) as error:  # peft refusing this model, e.g. a layer type the tuner lacks
        raise ConfigError(
            f"method={method.name}: peft could not apply {type(config).__name__} to backbone "
            f"{context.backbone_name!r}: {error}.{_knobs_note(method)}"
        ) from error


def peft_config(model: torch.nn.Module, method: DictConfig, context: MethodContext) -> PeftConfig:
    """The peft config the yaml describes, with slots resolved and the run's fields filled in,
    every setting checked before any layer is touched."""
    config_class = _config_class(method)
    fields = _fields_for_run(model, method, context, config_class)
    _check_choices(config_class, fields, method)
    _check_used_together(fields, method)
    try:
        config = config_class(**fields)
    except (TypeError, ValueError) as error:
        raise ConfigError(
            f"method={method.name}: peft's {config_class.__name__} refused its settings: {error}.{_knobs_note(method)}"
        ) from error
    _check_ranges(config, method, context)
    return config


def _fields_for_run(
    model: torch.nn.Module, method: DictConfig, context: MethodContext, config_class: type[PeftConfig]
) -> dict[str, Any]:
    """The yaml's fields, slots turned into this model's module names, and the run's own."""
    fields = OmegaConf.to_container(method.peft, resolve=True)
    del fields["_target_"]
    set_by_run = [f"method.peft.{field}" for field in RUN_FIELDS if field in fields]
    if set_by_run:
        raise ConfigError(
            f"conf/method/{method.name}.yaml sets {', '.join(set_by_run)}, which the run sets itself (the task "
            "kind's task type, the task head): remove them."
        )
    for field in SLOT_FIELDS:
        if fields.get(field) is not None:
            fields[field] = context.modules_for(model, fields[field], knob(method, field))
    fields.update(task_type=context.peft_task_type, modules_to_save=context.modules_to_save)
    if "tokenizer_name_or_path" in _field_names(config_class) and fields.get("tokenizer_name_or_path") is None:
        fields["tokenizer_name_or_path"] = context.pretrained  # a prompt initialised from text tokenizes it
    return fields


def prepended_positions(config: PeftConfig) -> int:
    """Virtual tokens a prompt method puts in front of the input sequence (prompt tuning,
    P-tuning). Token-level labels must be shifted by as many positions; peft does not do it
    for token classification. Prefix tuning puts its prefix in the attention keys only."""
    if not config.is_prompt_learning or passes_prefix_as_past_key_values(config):
        return 0
    return config.num_virtual_tokens


def passes_prefix_as_past_key_values(config: PeftConfig) -> bool:
    """Prefix tuning (Li & Liang 2021; P-tuning v2 for encoders): peft feeds its key/value
    prefixes to every attention layer through the model's `past_key_values`."""
    return config.peft_type == PeftType.PREFIX_TUNING


def require_past_key_values(model: torch.nn.Module, method_name: str, backbone_name: str) -> None:
    """Refuse, with the versions and the fix, an encoder whose forward no longer takes
    `past_key_values`: peft (which feeds the prefix through it) would fail at the first step."""
    body = getattr(model, model.base_model_prefix, model)
    if any("past_key_values" in inspect.signature(module.forward).parameters for module in (model, body)):
        return
    raise ConfigError(
        f"method={method_name} cannot run on backbone {backbone_name!r} with transformers "
        f"{transformers.__version__} and peft {peft.__version__}: the model's forward takes no "
        "`past_key_values`, the argument peft passes the prefix through (BERT-family models renamed it "
        "`cache` in transformers 5.24). Install the tested versions (`make install`, from requirements.lock; "
        "pyproject.toml allows transformers<5.24), or use another method such as method=prompt_tuning "
        "or method=lora."
    )


def knob(method: DictConfig, field: str) -> str:
    """The config key that sets a peft field: `method.r` where the yaml says `r: ${..r}`,
    `method.peft.FIELD` where the field is set in the block itself."""
    raw = OmegaConf.to_container(method.peft, resolve=False).get(field)
    match = KNOB.fullmatch(raw) if isinstance(raw, str) else None
    return f"method.{match.group(1)}" if match else f"method.peft.{field}"


def _config_class(method: DictConfig) -> type[PeftConfig]:
    target = OmegaConf.select(method, "peft._target_")
    try:
        config_class = get_class(target)
    except Exception as error:
        raise ConfigError(
            f"method.peft._target_={target!r} in conf/method/{method.name}.yaml is not an importable class "
            f"({error}); name a peft config class, e.g. peft.LoraConfig."
        ) from error
    if not issubclass(config_class, PeftConfig):
        raise ConfigError(
            f"method.peft._target_={target!r} in conf/method/{method.name}.yaml is not a peft config class "
            "(a subclass of peft.PeftConfig), e.g. peft.LoraConfig."
        )
    return config_class


def _field_names(config_class: type[PeftConfig]) -> set[str]:
    return {field.name for field in dataclasses.fields(config_class)}


def _check_choices(config_class: type[PeftConfig], fields: dict[str, Any], method: DictConfig) -> None:
    """A field typed by one of peft's enums takes one of its values: peft compares, say,
    `prompt_tuning_init` with each value in turn and falls back to random initialisation for
    anything else, so a misspelt choice would train silently with the wrong one."""
    hints = typing.get_type_hints(config_class)
    for field, value in fields.items():
        for choices in _enums(hints.get(field)) if value is not None else ():
            if value not in [choice.value for choice in choices]:
                allowed = ", ".join(choice.value for choice in choices)
                raise ConfigError(
                    f"{knob(method, field)}={value!r} is not one of peft's {choices.__name__} values for method "
                    f"{method.name!r}: use one of {allowed}."
                )


def _enums(hint: Any) -> list[type[enum.Enum]]:
    return [arg for arg in (typing.get_args(hint) or (hint,)) if isinstance(arg, type) and issubclass(arg, enum.Enum)]


def _check_used_together(fields: dict[str, Any], method: DictConfig) -> None:
    for field, (other, value) in USED_ONLY_WITH.items():
        if field in fields and (fields.get(other) == value) != (fields[field] is not None):
            raise ConfigError(
                f"{knob(method, field)} is used with {knob(method, other)}={value.value}, and only then: set both "
                f"or neither (method {method.name!r})."
            )


def _check_ranges(config: PeftConfig, method: DictConfig, context: MethodContext) -> None:
    """Ranges peft checks late (mid-surgery, or at the first step) or never, by peft's field
    names, so every tuner that has the field is checked: a rank below 1, a scale of 0 (an adapter
    that never moves), a dropout of 1 or more, more virtual tokens than the positions left."""
    for field in _field_names(type(config)):
        value = getattr(config, field)
        if value is None:
            continue
        if field == "r" or field == "encoder_hidden_size":
            check_range(method.name, knob(method, field), value, 1)
        elif field.endswith("alpha"):
            check_range(method.name, knob(method, field), value, 1e-12)
        elif field.endswith("dropout"):
            check_range(method.name, knob(method, field), value, 0.0, 0.999)
    if config.is_prompt_learning:
        budget = context.max_positions - (context.max_length if prepended_positions(config) else 0)
        check_range(method.name, knob(method, "num_virtual_tokens"), config.num_virtual_tokens, 1, budget)


def _knobs_note(method: DictConfig) -> str:
    """Which of the method's own keys set which peft fields, for peft's messages that name fields."""
    fields = OmegaConf.to_container(method.peft, resolve=False)
    pairs = [f"{knob(method, field)} sets {field}" for field in fields if KNOB.fullmatch(str(fields[field]))]
    return f" (in conf/method/{method.name}.yaml, {', '.join(pairs)})" if pairs else ""
