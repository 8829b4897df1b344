"""Tiny runs trained once per test module, as `python -m peftlab` would leave them, for the tests
of predict and export; and task kinds that record what the run's evaluation scored.

The recording kinds are the shipped kinds with one addition: they keep the answers the
evaluation of each split compared with the gold ones (the last is the test split), in the
order the split was read. Runs here evaluate in stored order (`trainer.group_by_length=false`),
so those answers line up with the test file's lines."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from peftlab.run import execute
from peftlab.tasks import IGNORED
from peftlab.tasks.generation import Generation
from peftlab.tasks.sequence_classification import SequenceClassification
from peftlab.tasks.token_classification import TokenClassification
from tests.conftest import GEN_PAIRS, TINY_CLASSIFIED, TINY_SENTENCES, tiny_composer, write_conll, write_csv

EVALUATED: list[list[Any]] = []  # the answers each evaluation scored, in the order evaluations ran


class RecordingTokenClassification(TokenClassification):
    def compute_metrics(self, eval_prediction: Any) -> dict[str, float]:
        predicted, gold = np.asarray(eval_prediction.predictions), np.asarray(eval_prediction.label_ids)
        EVALUATED.append([[self.labels[i] for i in row[kept != IGNORED]] for row, kept in zip(predicted, gold)])
        return super().compute_metrics(eval_prediction)


class RecordingSequenceClassification(SequenceClassification):
    def compute_metrics(self, eval_prediction: Any) -> dict[str, float]:
        EVALUATED.append([self.labels[i] for i in np.asarray(eval_prediction.predictions).reshape(-1)])
        return super().compute_metrics(eval_prediction)


class RecordingGeneration(Generation):
    def score(self, predictions: list[str], references: list[str]) -> dict[str, float]:
        EVALUATED.append(list(predictions))
        return super().score(predictions, references)


@dataclass
class TrainedRun:
    directory: Path
    test_inputs: list[str]  # the test split's inputs, one a line, as predict reads them
    evaluated_test: list[Any]  # what the run's evaluation of the test split scored

    @property
    def result(self) -> dict[str, Any]:
        return json.loads((self.directory / "result.json").read_text())


def write_gen_jsonl(folder: Path) -> Path:
    folder.mkdir()
    for name in ("train.jsonl", "dev.jsonl", "test.jsonl"):
        rows = [json.dumps({"prompt": prompt, "completion": completion}) for prompt, completion in GEN_PAIRS]
        (folder / name).write_text("\n".join(rows) + "\n")
    return folder


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, tiny_backbone: Path, tiny_decoder: Path) -> Callable[..., TrainedRun]:
    """train(kind, name, *overrides) -> the run, trained on first use and kept for the module.
    kind: ner, classification or generation, each on its tiny data with its tiny backbone."""
    root = tmp_path_factory.mktemp("runs")
    ner_dir, cls_dir = root / "ner_data", root / "cls_data"
    ner_dir.mkdir()
    cls_dir.mkdir()
    for split in ("train", "dev", "test"):
        write_conll(ner_dir / f"{split}.txt", TINY_SENTENCES)
        write_csv(cls_dir / f"{split}.csv", ["text", "label"], TINY_CLASSIFIED)
    gen_dir = write_gen_jsonl(root / "gen_data")
    kinds = {
        "ner": (
            tiny_composer("conll2003", ner_dir, tiny_backbone),
            RecordingTokenClassification, [text for text, _ in TINY_SENTENCES],
            ["trainer.lr=2e-2", "trainer.max_steps=24"],
        ),
        "classification": (
            tiny_composer("classification", cls_dir, tiny_backbone),
            RecordingSequenceClassification, [text for text, _ in TINY_CLASSIFIED],
            ["trainer.lr=2e-2", "trainer.max_steps=24"],
        ),
        "generation": (
            tiny_composer("jsonl_gen", gen_dir, tiny_decoder),
            RecordingGeneration, [prompt for prompt, _ in GEN_PAIRS],
            ["backbone=smollm2", "backbone.gguf_file=null", "task.max_new_tokens=2", "trainer.lr=2e-2",
             "trainer.batch_size=8"],
        ),
    }
    runs: dict[str, TrainedRun] = {}

    def train(kind: str, name: str, *overrides: str) -> TrainedRun:
        if name not in runs:
            compose, recording, inputs, defaults = kinds[kind]
            kind_class = f"{recording.__module__}.{recording.__name__}"
            cfg = compose(
                "trainer.max_steps=12", "trainer.group_by_length=false", f"task.kind={kind_class}", *defaults, *overrides
            )
            EVALUATED.clear()
            execute(cfg, root / name)
            runs[name] = TrainedRun(root / name, inputs, EVALUATED[-1])
        return runs[name]

    return train
