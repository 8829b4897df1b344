"""Forgetting of a decoder: its language-model loss on text it was not fine-tuned on, before and
after training (`forgetting.texts`; result.json `forgetting`). The measure peft's
method_comparison reports for LLMs: fine-tuning on a task may make the model worse at language
in general, and a method that changes fewer weights is expected to drift less.

The loss is the mean cross-entropy, in nats, of every predicted token of every text: each text
tokenized as the backbone's tokenizer does (with the BOS it adds), cut at `forgetting.max_length`
tokens, each token after the first predicted from the ones before. Token-weighted (the summed
loss over the count of predicted tokens), so it depends neither on the batches nor on padding.

"Before" is the pretrained model, measured before training with the method switched off
(`AppliedMethod.as_pretrained`: peft's `disable_adapter`, so prompt tuning's virtual tokens do
not count). "After" is the model the run scores on test. A method that trains nothing
(in-context prompting, whose demonstrations go only before the task's prompts) changes nothing."""

from __future__ import annotations

import hashlib
import json
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig
from transformers import PreTrainedTokenizerBase

from peftlab.errors import ConfigError, DataError
from peftlab.result import Forgetting
from peftlab.tasks import IGNORED, Task
from peftlab.tasks.generation import evaluation_mode

TEXT_FORMATS = {".txt": "one text a line", ".jsonl": 'one JSON object a line with a "text" field'}


@dataclass(frozen=True)
class HeldOutText:
    """The texts of `forgetting.texts`, and what names the file in result.json."""

    name: str
    sha256: str
    texts: list[str]


@dataclass(frozen=True)
class LanguageModelLoss:
    nats: float  # summed over every predicted token
    tokens: int  # predicted tokens

    @property
    def mean(self) -> float:
        return self.nats / self.tokens


def read_held_out(forgetting: DictConfig, task: Task) -> HeldOutText | None:
    """The held-out texts, None when `forgetting.texts` is null; refused, naming the key, for a
    task whose model is not a causal LM, and for a file that is missing, empty or malformed."""
    if forgetting.texts is None:
        return None
    if task.peft_task_type != "CAUSAL_LM":
        raise ConfigError(
            f"forgetting.texts={forgetting.texts} measures a causal LM's loss on held-out text, and task="
            f"{task.config.name} (task.kind={task.config.kind}) trains a model with a task head, which predicts no "
            "text. Set forgetting.texts=null, or use a generation task (e.g. task=banking77_gen backbone=smollm2)."
        )
    path = Path(forgetting.texts)
    if path.suffix not in TEXT_FORMATS:
        formats = " or ".join(f"{suffix} file ({what})" for suffix, what in TEXT_FORMATS.items())
        raise ConfigError(f"forgetting.texts={path} must be a {formats}.")
    if not path.is_file():
        raise DataError(
            f"forgetting.texts={path}: no such file (relative paths are from the directory you run in). Point "
            "forgetting.texts at the held-out text, or set it to null."
        )
    data = path.read_bytes()
    try:
        lines = data.decode("utf-8-sig").splitlines()
    except UnicodeDecodeError as error:
        raise DataError(f"forgetting.texts={path} is not UTF-8 ({error.reason}): save it as UTF-8.") from error
    texts = _jsonl_texts(path, lines) if path.suffix == ".jsonl" else [line for line in lines if line.strip()]
    if not texts:
        raise DataError(f"forgetting.texts={path} holds no text ({TEXT_FORMATS[path.suffix]}, blank lines skipped).")
    return HeldOutText(path.name, hashlib.sha256(data).hexdigest(), texts[: forgetting.max_texts])


def _jsonl_texts(path: Path, lines: list[str]) -> list[str]:
    texts = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(f"{path}:{number}: not valid JSON ({error.msg}); fix or remove that line.") from error
        if not isinstance(row, dict) or not isinstance(row.get("text"), str):
            raise DataError(
                f'{path}:{number}: forgetting.texts reads a "text" string from each line, and this line holds '
                f"{line.strip()[:60]!r}. Write each line as {{\"text\": \"...\"}}, or remove it."
            )
        texts.append(row["text"])
    return texts


class HeldOutLoss:
    """The held-out texts tokenized once for a run, scored on its model before and after training."""

    def __init__(self, held_out: HeldOutText, tokenizer: PreTrainedTokenizerBase, forgetting: DictConfig) -> None:
        self.held_out = held_out
        self.batch_size = forgetting.batch_size
        self.token_ids = tokenizer(held_out.texts, truncation=True, max_length=forgetting.max_length)["input_ids"]
        if not any(len(ids) > 1 for ids in self.token_ids):
            raise DataError(
                f"forgetting.texts={held_out.name}: no text has two tokens, so none predicts a token; give longer texts."
            )

    def score(self, model: torch.nn.Module, view: AbstractContextManager = nullcontext()) -> LanguageModelLoss:
        """The model's loss on the texts, inside `view` (`AppliedMethod.as_pretrained` for "before")."""
        with view:
            return language_model_loss(model, self.token_ids, self.batch_size)

    def record(self, before: LanguageModelLoss, after: LanguageModelLoss) -> Forgetting:
        return Forgetting(
            texts=self.held_out.name,
            sha256=self.held_out.sha256,
            texts_used=len(self.held_out.texts),
            tokens=after.tokens,
            lm_loss_before=before.mean,
            lm_loss_after=after.mean,
            lm_loss_change=after.mean - before.mean,
        )


def language_model_loss(model: torch.nn.Module, token_ids: list[list[int]], batch_size: int) -> LanguageModelLoss:
    """Summed next-token cross-entropy of the sequences and the count of predicted tokens, in
    evaluation mode without gradients. Batches of similar lengths, padded on the right; the loss
    is taken from the logits of the sequences' own positions (the last ones: a prompt method's
    peft forward puts its virtual tokens first), so every model predicts the same tokens."""
    device = next(model.parameters()).device
    order = sorted(range(len(token_ids)), key=lambda index: len(token_ids[index]))
    nats, tokens = 0.0, 0
    with evaluation_mode(model), torch.no_grad():
        for start in range(0, len(order), batch_size):
            batch = [token_ids[index] for index in order[start : start + batch_size]]
            width = max(len(ids) for ids in batch)
            if width < 2:
                continue
            targets = torch.tensor([ids + [IGNORED] * (width - len(ids)) for ids in batch], device=device)
            attention_mask = (targets != IGNORED).long()
            logits = model(input_ids=targets.clamp(min=0), attention_mask=attention_mask).logits[:, -width:]
            nats += torch.nn.functional.cross_entropy(
                logits[:, :-1].float().transpose(1, 2), targets[:, 1:], ignore_index=IGNORED, reduction="sum"
            ).item()
            tokens += int((targets[:, 1:] != IGNORED).sum())
    return LanguageModelLoss(nats, tokens)
