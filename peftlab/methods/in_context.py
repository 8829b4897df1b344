"""In-context prompting (Brown et al. 2020, "Language Models are Few-Shot Learners"): no
parameter trains. Every prompt the decoder sees is `method.shots` worked examples of the task,
each written with the task's own prompt/completion template, followed by the example's prompt;
`shots: 0` is zero-shot, the task's prompt alone. It is the baseline a fine-tuning method has
to beat: what the pretrained model does when it is only shown the task.

The demonstrations are one fixed set, drawn from the training split only (never validation or
test), seeded by `task.data_seed` and not by `seed`, so every training seed of a comparison
prompts with the same examples and another data seed draws another set (the spread over sets
is the method's variance). They are what this method "learns": the checkpoint holds them
(`demonstrations.json`), so predict prompts exactly as evaluation did without the training data.

Trap: the demonstrations make every prompt several times longer. A prompt that no longer fits
`task.max_length` is refused, with the numbers, before anything is evaluated
(`peftlab.tasks.generation`), rather than losing its first demonstrations, or its
instruction, to the usual left truncation: a run either shows every example K demonstrations,
or does not run."""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch
from omegaconf import DictConfig
from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

from peftlab.backbones import BaseReference
from peftlab.checkpoint import save_trainable
from peftlab.errors import ConfigError, RunError, Unsupported
from peftlab.methods import AppliedMethod, MethodContext, require_range
from peftlab.tasks import InputLayout

DEMONSTRATIONS_FILE = "demonstrations.json"


class InContextPrompting(AppliedMethod):
    """The frozen model and the demonstrations put before every prompt. Nothing trains, so the
    run evaluates the model as loaded (`AppliedMethod.trains`)."""

    trains = False

    def __init__(self, model: torch.nn.Module, demonstrations: tuple[tuple[str, str], ...]) -> None:
        super().__init__(model)
        self.demonstrations = demonstrations

    @property
    def input_layout(self) -> InputLayout:
        return InputLayout(demonstrations=self.demonstrations)

    def save(self, directory: Path, base: BaseReference | None = None) -> int:
        """peftlab's own format (no tensor trains, so `trainable.safetensors` is empty) and the
        demonstrations, as the prompts' text."""
        pairs = [{"prompt": prompt, "completion": completion} for prompt, completion in self.demonstrations]
        directory.mkdir(parents=True, exist_ok=True)
        text = json.dumps({"demonstrations": pairs}, indent=2) + "\n"
        (directory / DEMONSTRATIONS_FILE).write_text(text, encoding="utf-8")
        return save_trainable(self.model, directory)

    def load(self, directory: Path) -> None:
        path = directory / DEMONSTRATIONS_FILE
        if not path.is_file():
            raise RunError(f"{directory} has no {DEMONSTRATIONS_FILE}, which an in_context run saves: run it again.")
        pairs = json.loads(path.read_text(encoding="utf-8"))["demonstrations"]
        self.demonstrations = tuple((pair["prompt"], pair["completion"]) for pair in pairs)

    def merge(self) -> torch.nn.Module:
        raise Unsupported(
            "method=in_context adds demonstrations to the prompt, not weights: there is nothing to merge, and the "
            f"base alone does not answer as the run did. Serve the run with python -m peftlab.predict, or put the "
            f"prompts of checkpoint/{DEMONSTRATIONS_FILE} before your own."
        )


def apply(model: torch.nn.Module, method: DictConfig, context: MethodContext) -> InContextPrompting:
    """Draw the demonstrations from the training split; a finished run rebuilt for predict has
    no training split here (`context.demonstration_pool` is empty) and loads them instead."""
    require_range(method, "shots", 0)
    _require_decoder(model, context)
    pool = context.demonstration_pool
    if not pool:
        return InContextPrompting(model, ())
    if method.shots > len(pool):
        raise ConfigError(
            f"method.shots={method.shots} demonstrations cannot be drawn from a training split of {len(pool)} "
            "examples: lower method.shots, or raise task.max_train_samples."
        )
    chosen = random.Random(f"in_context:{context.data_seed}").sample(range(len(pool)), method.shots)
    return InContextPrompting(model, tuple((pool[i]["prompt"], pool[i]["completion"]) for i in chosen))


def _require_decoder(model: torch.nn.Module, context: MethodContext) -> None:
    """A model family that has a masked-LM head in transformers is an encoder (BERT, RoBERTa):
    it reads the sequence in both directions and was never trained to continue a prompt, though
    transformers can build it as a causal LM."""
    if model.config.model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        raise ConfigError(
            f"method=in_context prompts a decoder, and backbone={context.backbone_name} is an encoder "
            f"({model.config.model_type}), which was never trained to continue a prompt. Use a decoder backbone "
            "(backbone=smollm2, gpt2, qwen2.5-0.5b or llama-3.2-1b) with a generation task."
        )
