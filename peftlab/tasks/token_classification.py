"""Token classification (NER): one label per word, scored as entities.

Labels go on the first sub-token of each word; later sub-tokens and special tokens get -100,
so the loss and the metric see each word once. The metric is entity-level F1 (seqeval, strict
IOB2): a predicted entity counts only if its type and both boundaries are right, and `O` never
inflates the score.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from seqeval.metrics import classification_report
from seqeval.scheme import IOB2
from transformers import AutoModelForTokenClassification, DataCollatorForTokenClassification, PreTrainedTokenizerBase

from peftlab.data.few_shot import EntityCover
from peftlab.data.sources import Splits
from peftlab.errors import DataError
from peftlab.tasks import IGNORED, PLAIN_INPUT, InputLayout, Task, label_head, logits_of, trained_labels


def align_labels(word_ids: list[int | None], word_label_ids: list[int]) -> list[int]:
    """Label ids per sub-token: the word's label on its first sub-token, -100 elsewhere."""
    aligned = []
    previous = None
    for word_id in word_ids:
        aligned.append(IGNORED if word_id is None or word_id == previous else word_label_ids[word_id])
        previous = word_id
    return aligned


def split_words(text: str, tokenizer: PreTrainedTokenizerBase) -> list[str]:
    """The words of a line of plain text, cut where the backbone's tokenizer cuts words before
    splitting them into pieces (BERT: at spaces and punctuation, so `Paris.` is `Paris` and `.`,
    as CoNLL files write it); at spaces for a tokenizer without a pre-tokenizer."""
    pre_tokenizer = tokenizer.backend_tokenizer.pre_tokenizer
    if pre_tokenizer is None:
        return text.split()
    pieces = (text[start:end].strip() for _, (start, end) in pre_tokenizer.pre_tokenize_str(text))
    return [piece for piece in pieces if piece]


def label_set(train: list[dict]) -> list[str]:
    """`O` first, then each type's B- before its I-: stable ids whatever the file order."""
    tags = {tag for sentence in train for tag in sentence["tags"]}
    return sorted(tags, key=lambda tag: (tag != "O", tag[2:], tag[:2]))


@dataclass
class AlignedCollator:
    """Pads each batch to its own longest sequence (labels with -100), then puts -100 in front
    of the labels for the virtual tokens a prompt method prepends, so that labels, logits and
    the metric stay on the real tokens."""

    pad: DataCollatorForTokenClassification
    layout: InputLayout = PLAIN_INPUT

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        batch = self.pad(features)
        if self.layout.prepended_positions:
            labels = batch["labels"]
            shift = labels.new_full((labels.shape[0], self.layout.prepended_positions), IGNORED)
            batch["labels"] = torch.cat([shift, labels], dim=1)
        return batch


class TokenClassification(Task):
    primary_metric = "f1"
    peft_task_type = "TOKEN_CLS"
    auto_model = AutoModelForTokenClassification

    def __init__(self, task: DictConfig) -> None:
        super().__init__(task)
        self.labels: list[str] = []

    def check(self, splits: Splits) -> Splits:
        """Fix the label set on the full training split (or `task.labels`); every split's tags
        must be in it."""
        self.labels = list(self.config.labels) if self.config.labels is not None else label_set(splits["train"])
        for split, sentences in splits.items():
            self._check_tags(split, sentences)
        return splits

    def shot_rule(self) -> EntityCover:
        return EntityCover(self.labels)

    def model_kwargs(self) -> dict[str, Any]:
        return label_head(self.labels)

    def use_trained_labels(self, model_config: dict[str, Any]) -> None:
        self.labels = trained_labels(model_config)

    def tokenize(self, batch: dict[str, list], tokenizer: PreTrainedTokenizerBase) -> dict[str, list]:
        label_ids = {label: i for i, label in enumerate(self.labels)}
        encoded = self._tokenize_words(batch["tokens"], tokenizer)
        encoded["labels"] = [
            align_labels(encoded.word_ids(i), [label_ids[tag] for tag in tags]) for i, tags in enumerate(batch["tags"])
        ]
        return encoded

    def read_input(self, line: str, tokenizer: PreTrainedTokenizerBase, pre_split: bool) -> dict[str, Any]:
        return {"words": line.split() if pre_split else split_words(line, tokenizer)}

    def predict(
        self, model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, examples: list[dict], layout: InputLayout
    ) -> list[list[str | None]]:
        """A tag per word, read where training put the word's label: on its first sub-token
        (after the positions a prompt method prepends). A word cut off by `task.max_length` gets
        None: the model never saw it."""
        words = [example["words"] for example in examples]
        encoded = self._tokenize_words(words, tokenizer, padding=True, return_tensors="pt")
        predicted = logits_of(model, dict(encoded))[:, layout.prepended_positions :].argmax(dim=-1).tolist()
        tagged = []
        for row, sentence in enumerate(words):
            tags: list[str | None] = [None] * len(sentence)
            first_pieces = align_labels(encoded.word_ids(row), list(range(len(sentence))))
            for position, word in enumerate(first_pieces):
                if word != IGNORED:
                    tags[word] = self.labels[predicted[row][position]]
            tagged.append(tags)
        return tagged

    def _tokenize_words(self, words: list[list[str]], tokenizer: PreTrainedTokenizerBase, **padding: Any) -> Any:
        return tokenizer(words, is_split_into_words=True, truncation=True, max_length=self.config.max_length, **padding)

    def collator(self, tokenizer: PreTrainedTokenizerBase, layout: InputLayout = PLAIN_INPUT) -> "AlignedCollator":
        return AlignedCollator(DataCollatorForTokenClassification(tokenizer, label_pad_token_id=IGNORED), layout)

    def compute_metrics(self, eval_prediction: Any) -> dict[str, float]:
        predictions, label_ids = eval_prediction.predictions, eval_prediction.label_ids
        gold, predicted = [], []
        for predicted_row, label_row in zip(np.asarray(predictions), np.asarray(label_ids)):
            kept = label_row != IGNORED
            gold.append([self.labels[i] for i in label_row[kept]])
            predicted.append([self.labels[i] for i in predicted_row[kept]])
        report = classification_report(
            gold, predicted, mode="strict", scheme=IOB2, output_dict=True, zero_division=0
        )
        scores = report["micro avg"]
        metrics = {"f1": scores["f1-score"], "precision": scores["precision"], "recall": scores["recall"]}
        metrics.update({f"f1_{kind}": values["f1-score"] for kind, values in report.items() if " " not in kind})
        return metrics

    def _check_tags(self, split: str, sentences: list[dict]) -> None:
        unknown = sorted({tag for sentence in sentences for tag in sentence["tags"]} - set(self.labels))
        if unknown:
            origin = "task.labels" if self.config.labels is not None else "the training split"
            raise DataError(
                f"the {split!r} split of {self.data_source()} has tags {unknown} that {origin} does not "
                "have. Pin the full label set with task.labels=[...] or fix the data."
            )
