"""The embedded demo NER data: deterministic, valid IOB2, and a fair test of generalisation
(validation/test names mostly unseen in train, test sentences not copies of train ones)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from peftlab.data.demo_ner import DEMO_SPLIT_SIZES, ENTITY_TYPES, make_demo_ner

Splits = dict[str, list[dict]]


@pytest.fixture(scope="module")
def demo() -> Splits:
    return make_demo_ner()


def entities(sentence: dict) -> list[tuple[str, str]]:
    """(type, surface string) of every IOB2 span in one sentence."""
    spans: list[tuple[str, list[str]]] = []
    for token, tag in zip(sentence["tokens"], sentence["tags"]):
        if tag.startswith("B-"):
            spans.append((tag[2:], [token]))
        elif tag.startswith("I-"):
            spans[-1][1].append(token)
    return [(entity_type, " ".join(tokens)) for entity_type, tokens in spans]


def surfaces(sentences: list[dict]) -> list[str]:
    return [surface for sentence in sentences for _, surface in entities(sentence)]


def test_split_sizes(demo: Splits):
    assert {split: len(sentences) for split, sentences in demo.items()} == DEMO_SPLIT_SIZES
    assert DEMO_SPLIT_SIZES["train"] >= 1000
    assert DEMO_SPLIT_SIZES["validation"] >= 200 and DEMO_SPLIT_SIZES["test"] >= 200


def test_same_seed_same_data_other_seed_other_data(demo: Splits):
    assert make_demo_ner(0) == demo
    assert make_demo_ner(1) != demo


def test_same_data_in_a_fresh_process_with_another_hash_seed(demo: Splits):
    code = "from peftlab.data.demo_ner import make_demo_ner; print(repr(make_demo_ner()))"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    root = Path(__file__).resolve().parents[1]
    printed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=root, check=True
    )
    assert printed.stdout.strip() == repr(demo)


def test_tokens_and_tags_are_well_formed(demo: Splits):
    for sentences in demo.values():
        for sentence in sentences:
            tokens, tags = sentence["tokens"], sentence["tags"]
            assert len(tokens) == len(tags) > 0
            assert all(isinstance(token, str) and token and not any(c.isspace() for c in token) for token in tokens)


def test_tags_are_valid_iob2_over_the_entity_types(demo: Splits):
    for sentences in demo.values():
        for sentence in sentences:
            previous = "O"
            for tag in sentence["tags"]:
                if tag != "O":
                    prefix, entity_type = tag.split("-", 1)
                    assert prefix in ("B", "I") and entity_type in ENTITY_TYPES, tag
                    if prefix == "I":
                        assert previous in (f"B-{entity_type}", f"I-{entity_type}"), sentence
                previous = tag


def test_every_type_in_every_split_and_train_has_every_label(demo: Splits):
    for sentences in demo.values():
        assert {entity_type for sentence in sentences for entity_type, _ in entities(sentence)} == set(ENTITY_TYPES)
    # the task reads its label set from train: every B- and I- must be there, and cover eval tags
    train_tags = {tag for sentence in demo["train"] for tag in sentence["tags"]}
    assert train_tags == {"O"} | {f"{prefix}-{entity_type}" for prefix in "BI" for entity_type in ENTITY_TYPES}
    assert {tag for sentence in demo["validation"] + demo["test"] for tag in sentence["tags"]} <= train_tags


def test_entity_types_roughly_balanced(demo: Splits):
    counts = Counter(entity_type for sentence in demo["train"] for entity_type, _ in entities(sentence))
    assert max(counts.values()) <= 2 * min(counts.values()), counts


def test_multi_token_entities_are_common(demo: Splits):
    names = surfaces(demo["train"])
    assert sum(" " in name for name in names) >= 0.4 * len(names)


@pytest.mark.parametrize("split", ["validation", "test"])
def test_most_eval_entities_never_occur_in_train(demo: Splits, split: str):
    seen = set(surfaces(demo["train"]))
    names = surfaces(demo[split])
    unseen = [name for name in names if name not in seen]
    assert len(unseen) >= 0.7 * len(names)
    assert len(set(unseen)) >= 0.7 * len(set(names))
    assert len(unseen) < len(names)  # a few repeats, as in real test sets


@pytest.mark.parametrize("split", ["validation", "test"])
def test_eval_sentences_are_not_copies_of_train(demo: Splits, split: str):
    train = {tuple(sentence["tokens"]) for sentence in demo["train"]}
    copies = sum(tuple(sentence["tokens"]) in train for sentence in demo[split])
    assert copies <= 0.1 * len(demo[split])


def test_eval_splits_have_sentence_shapes_train_never_shows(demo: Splits):
    train_openings = {tuple(sentence["tokens"][:2]) for sentence in demo["train"]}
    assert any(sentence["tokens"][:2] == ["A", "spokesman"] for sentence in demo["test"] + demo["validation"])
    assert ("A", "spokesman") not in train_openings


def test_sentences_without_entities_and_with_three_or_more(demo: Splits):
    for sentences in demo.values():
        counts = [len(entities(sentence)) for sentence in sentences]
        assert counts.count(0) >= 0.03 * len(sentences)
        assert sum(count >= 3 for count in counts) >= 0.1 * len(sentences)


def test_same_surface_string_takes_different_types_by_context(demo: Splits):
    sentences = demo["train"]
    places = {name for sentence in sentences for entity_type, name in entities(sentence) if entity_type == "LOC"}
    orgs = [name for sentence in sentences for entity_type, name in entities(sentence) if entity_type == "ORG"]
    assert any(word in places for org in orgs for word in org.split())
    # capitalised sentence openers that are names elsewhere are O here
    openers = {sentence["tokens"][0] for sentence in sentences if sentence["tags"][0] == "O"}
    assert {"Lake", "North", "Summer"} <= openers


def test_fast():
    start = time.perf_counter()
    make_demo_ner()
    assert time.perf_counter() - start < 0.5
