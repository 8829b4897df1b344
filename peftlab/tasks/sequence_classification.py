"""Sequence classification: one label per text or per pair of texts (sentiment, intent, topic;
NLI and paraphrase with `task.data.columns.text_pair`). Scored by accuracy and macro-F1.

The head is the one `AutoModelForSequenceClassification` builds for the family. BERT's reads
the *pooler* (dense + tanh over [CLS]), which lives inside the body (`bert.pooler`), not beside
it. all-MiniLM-L6-v2, the offline default, ships pooler weights that were never trained: the
biases are all zero, and the model was trained to mean-pool, never to read that layer. Frozen,
the pooler would put the same untrained projection in front of every method, and a
method would be judged through it. So the pooler is part of the classification head: the
backbone config names it (`backbone.head_in_body: [pooler]`), the run trains it in full with
every method, counts it under `params.head` (once), and peft methods keep it in
`modules_to_save`. Families whose classifier has its own dense layer (RoBERTa) build no pooler,
and the name is then skipped.

Prompt tuning puts its virtual tokens in front of the sequence; the label is one per sequence,
so nothing shifts, but BERT's pooler then reads the first virtual token instead of [CLS] (peft
does this for SEQ_CLS): the prompt learns to play [CLS]'s role. Prefix tuning leaves [CLS] first.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from sklearn.metrics import accuracy_score, f1_score
from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding, PreTrainedTokenizerBase

from peftlab.data.columns import Example
from peftlab.data.few_shot import PerLabel
from peftlab.data.labels import label_names, pinned_label_names
from peftlab.data.sources import Splits
from peftlab.errors import DataError
from peftlab.tasks import PLAIN_INPUT, InputLayout, Task, label_head, logits_of, refuse_pre_split, trained_labels

TEXT_KEYS = ("text", "text_pair")
REQUIRED_KEYS = ("text", "label")


def classification_metrics(gold: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """Accuracy and macro-F1. The macro average runs over the classes present in the gold labels
    or the predictions: a class that is in neither (common when a 77-class test set is
    subsampled) has no defined F1, and counting it as 0 would punish the model for it. A gold
    class the model never predicts counts, with F1 0."""
    return {
        "accuracy": float(accuracy_score(gold, predicted)),
        "f1_macro": float(f1_score(gold, predicted, average="macro", zero_division=0)),
    }


class SequenceClassification(Task):
    peft_task_type = "SEQ_CLS"
    auto_model = AutoModelForSequenceClassification

    def __init__(self, task: DictConfig) -> None:
        super().__init__(task)
        self.primary_metric = str(task.primary_metric)  # one of the schema's ClassificationMetric
        self.labels: list[str] = []

    def check(self, splits: Splits) -> Splits:
        """Check the texts, then fix the label set on the full training split (or the pinned
        names) and name every example's label in it."""
        for split, examples in splits.items():
            self._check_examples(split, examples)
        self.labels = label_names(splits, pinned_label_names(self.config), self.data_source())
        return splits

    def shot_rule(self) -> PerLabel:
        return PerLabel(self.labels)

    def model_kwargs(self) -> dict[str, Any]:
        return {**label_head(self.labels), "problem_type": "single_label_classification"}

    def use_trained_labels(self, model_config: dict[str, Any]) -> None:
        self.labels = trained_labels(model_config)

    def tokenize(self, batch: dict[str, list], tokenizer: PreTrainedTokenizerBase) -> dict[str, list]:
        """Both texts of a pair in one sequence (BERT-style segments), and the label ids."""
        label_ids = {label: i for i, label in enumerate(self.labels)}
        encoded = self._tokenize_texts(batch, tokenizer)
        encoded["labels"] = [label_ids[label] for label in batch["label"]]
        return encoded

    def read_input(self, line: str, tokenizer: PreTrainedTokenizerBase, pre_split: bool) -> dict[str, Any]:
        """A text, or for a task on pairs (`task.data.columns.text_pair` set) two texts with a tab between."""
        refuse_pre_split(self, pre_split)
        if (self.config.data.columns or {}).get("text_pair") is None:
            return {"text": line}
        text, tab, text_pair = line.partition("\t")
        if not tab:
            raise DataError(
                f"task {self.config.name!r} classifies pairs of texts (task.data.columns.text_pair is set): give each "
                f"input as the two texts with a tab between them; this line has no tab: {line[:80]!r}."
            )
        return {"text": text, "text_pair": text_pair}

    def predict(
        self, model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, examples: list[dict], layout: InputLayout
    ) -> list[str]:
        batch = {key: [example[key] for example in examples] for key in TEXT_KEYS if key in examples[0]}
        encoded = self._tokenize_texts(batch, tokenizer, padding=True, return_tensors="pt")
        return [self.labels[i] for i in logits_of(model, dict(encoded)).argmax(dim=-1).tolist()]

    def _tokenize_texts(self, batch: dict[str, list], tokenizer: PreTrainedTokenizerBase, **padding: Any) -> Any:
        return tokenizer(batch["text"], batch.get("text_pair"), truncation=True, max_length=self.config.max_length, **padding)

    def collator(self, tokenizer: PreTrainedTokenizerBase, layout: InputLayout = PLAIN_INPUT) -> DataCollatorWithPadding:
        """Dynamic padding. Virtual tokens need no label shift here: the label is per sequence."""
        return DataCollatorWithPadding(tokenizer)

    def compute_metrics(self, eval_prediction: Any) -> dict[str, float]:
        predicted = np.asarray(eval_prediction.predictions).reshape(-1)
        gold = np.asarray(eval_prediction.label_ids).reshape(-1)
        return classification_metrics(gold, predicted)

    def _check_examples(self, split: str, examples: list[Example]) -> None:
        """Texts must be strings; labels strings or integers, kept as strings from here on."""
        for index, example in enumerate(examples):
            for key in REQUIRED_KEYS:
                if key not in example:
                    raise DataError(
                        f"the {split!r} split of {self.data_source()} has no {key}: task.data.columns.{key} is null. "
                        f"Set it to the column that holds the {key}."
                    )
            for key in TEXT_KEYS:
                if key in example and not isinstance(example[key], str):
                    raise self._value_error(split, index, key, example[key], "a string")
            label = example["label"]
            if isinstance(label, bool) or not isinstance(label, (str, int)):
                raise self._value_error(split, index, "label", label, "a string or an integer")
            example["label"] = str(label)

    def _value_error(self, split: str, index: int, key: str, value: Any, wanted: str) -> DataError:
        return DataError(
            f"example {index + 1} of the {split!r} split of {self.data_source()} has {key} {value!r}, which is not "
            f"{wanted}. Check task.data.columns.{key} (it should name the {key} column) or fix the data."
        )
