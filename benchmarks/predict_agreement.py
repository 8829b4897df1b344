"""Does `python -m peftlab.predict` answer what a run's evaluation scored, on real data?

Reads the run's test split as the run chose it (its data files, its subsample), answers every
input through predict's own loading and batching (peftlab/trained.py), scores the answers with
the task's metric, and prints that beside the test metrics the run recorded in result.json.
Equal answers give equal scores (tests/test_predict.py compares the answers themselves on tiny
runs); exit code 1 when a score differs.

    python benchmarks/predict_agreement.py RUN_DIR [--batch-size N]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from seqeval.metrics import classification_report
from seqeval.scheme import IOB2

from peftlab.result import RESULT_FILE, Result
from peftlab.tasks import Task
from peftlab.tasks.generation import Generation
from peftlab.tasks.sequence_classification import SequenceClassification, classification_metrics
from peftlab.tasks.token_classification import TokenClassification
from peftlab.trained import read_run, serve, tokenizer_for


def agreement(run_dir: Path, batch_size: int | None = None) -> tuple[dict[str, float], dict[str, float]]:
    """(the run's recorded test metrics, the same metrics computed from predict's answers)."""
    recorded = Result.read(run_dir / RESULT_FILE).metrics["test"]
    run = read_run(run_dir)
    test = run.task.prepare_data()["test"]  # the files and subsample the run used
    served = serve([run], tokenizer_for(run))
    examples, gold = _inputs_and_gold(run.task, test)
    size = batch_size or run.config.trainer.eval_batch_size
    answers = [answer for start in range(0, len(examples), size) for answer in served.answer(0, examples[start : start + size])]
    return recorded, _scores(run.task, answers, gold)


def _inputs_and_gold(task: Task, test: list[dict]) -> tuple[list[dict], list[Any]]:
    if isinstance(task, TokenClassification):
        return [{"words": sentence["tokens"]} for sentence in test], [sentence["tags"] for sentence in test]
    if isinstance(task, SequenceClassification):
        keys = [key for key in ("text", "text_pair") if key in test[0]]
        return [{key: row[key] for key in keys} for row in test], [row["label"] for row in test]
    return [{"prompt": row["prompt"]} for row in test], [row["completion"] for row in test]


def _scores(task: Task, answers: list[Any], gold: list[Any]) -> dict[str, float]:
    """The task's own metrics. NER leaves out the words beyond task.max_length, as evaluation does."""
    if isinstance(task, TokenClassification):
        kept = [[(g, p) for g, p in zip(tags, predicted) if p is not None] for tags, predicted in zip(gold, answers)]
        report = classification_report(
            [[g for g, _ in pairs] for pairs in kept], [[p for _, p in pairs] for pairs in kept],
            mode="strict", scheme=IOB2, output_dict=True, zero_division=0,
        )
        return {"f1": report["micro avg"]["f1-score"]}
    if isinstance(task, Generation):
        return task.score(answers, gold)
    return classification_metrics(gold, answers)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--batch-size", type=int)
    arguments = parser.parse_args()
    recorded, predicted = agreement(arguments.run_dir, arguments.batch_size)
    print("| metric | run's evaluation (result.json) | predict's answers |\n|---|---|---|")
    for metric, value in predicted.items():
        print(f"| {metric} | {recorded[metric]:.6f} | {value:.6f} |")
    return 0 if all(abs(recorded[metric] - value) < 1e-9 for metric, value in predicted.items()) else 1


if __name__ == "__main__":
    sys.exit(main())
