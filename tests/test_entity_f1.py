"""NER's primary metric, checked against a case scored by hand: entity-level F1 in seqeval's
strict IOB2 mode, on word-level labels (sub-token positions, -100, are left out)."""

from __future__ import annotations

import numpy as np
import pytest
from transformers import EvalPrediction

from peftlab.run import prepare
from peftlab.tasks.token_classification import IGNORED

LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-MISC", "I-MISC"]
# word-level gold and predicted tags; None is a sub-token (-100), where the prediction is noise
GOLD = [
    ["B-PER", "I-PER", None, "O", "O", "B-LOC", "I-LOC"],  # John Smi ##th lives in New York
    ["B-ORG", "I-ORG", "O", "B-PER"],                      # Acme Corp hired Mary
    ["O", "O"],                                            # it rained
]
PREDICTED = [
    ["B-PER", "I-PER", "B-MISC", "O", "O", "B-LOC", "O"],
    ["I-ORG", "I-ORG", "O", "B-LOC"],
    ["B-MISC", "O"],
]


def as_ids(rows: list[list[str | None]], width: int) -> np.ndarray:
    """One row per sentence, padded with -100 like the collator pads labels."""
    ids = np.full((len(rows), width), IGNORED)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = [IGNORED if tag is None else LABELS.index(tag) for tag in row]
    return ids


def test_entity_f1_is_strict_iob2_over_words_as_computed_by_hand(tiny_config):
    """Gold entities: PER John Smith, LOC New York, ORG Acme Corp, PER Mary (4).
    Predicted, strict IOB2: PER John Smith; LOC New (a wrong end); LOC Mary (a wrong type);
    MISC "it". "I-ORG I-ORG" opens no entity in strict IOB2 (it does in conlleval's lenient
    mode, where it would match Acme Corp), and the B-MISC on "##th" sits on an ignored
    sub-token: neither counts. So 4 predicted, 1 correct:
    precision 1/4, recall 1/4, F1 0.25 (lenient mode would give 2/5, 2/4, F1 0.444; token
    accuracy with O, 8/12). Per type: PER P 1/1 R 1/2 F1 2/3; LOC P 0/2 F1 0; ORG R 0/1 F1 0."""
    task = prepare(tiny_config("method=head_only", f"task.labels=[{','.join(LABELS)}]")).task
    assert list(task.labels) == LABELS
    predictions = as_ids(PREDICTED, 8)
    predictions[predictions == IGNORED] = LABELS.index("B-PER")  # padding predictions must not count either
    scores = task.compute_metrics(EvalPrediction(predictions=predictions, label_ids=as_ids(GOLD, 8)))
    assert scores["precision"] == pytest.approx(1 / 4)
    assert scores["recall"] == pytest.approx(1 / 4)
    assert scores["f1"] == pytest.approx(0.25)
    assert scores["f1_PER"] == pytest.approx(2 / 3)
    assert scores["f1_LOC"] == scores["f1_ORG"] == 0.0
