"""Sequence classification on the tiny BERT: every method trains the head (pooler + classifier)
and only what it owns, counts match formulas, metrics match hand-computed values, sentence
pairs reach the model as two segments, and prompt methods need no label shift."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from transformers import EvalPrediction

from peftlab.checkpoint import TRAINABLE_FILE
from peftlab.run import make_trainer, prepare
from peftlab.tasks.sequence_classification import classification_metrics
from tests.conftest import SEQUENCE_CLASSIFICATION, TINY_CLASSIFIED, method_names, write_csv
from tests.method_counts import H, TINY_BERT, expected_method_parameters
from tests.model_helpers import (
    assert_zero_init_is_identity,
    audit_training,
    body_parameters,
    fixed_batch,
    logits,
)

LABELS = 2  # person / other
POOLER = H * H + H  # BERT's pooler: dense H -> H, read by the classifier and counted as head
HEAD = POOLER + H * LABELS + LABELS


def head_names(model: torch.nn.Module) -> list[str]:
    return [name for name, _ in model.named_parameters() if "pooler" in name or "classifier" in name]


def body_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The pretrained body without the pooler (which is head), whatever wraps it."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return {
        name: p.detach().clone()
        for name, p in inner.bert.named_parameters()
        if not name.startswith("pooler.") and "lora_" not in name
    }


@pytest.mark.parametrize("method", method_names(SEQUENCE_CLASSIFICATION))
def test_head_is_pooler_plus_classifier_and_method_counts_match_the_formulas(method, tiny_cls_config):
    cfg = tiny_cls_config(f"method={method}")
    prepared = prepare(cfg)
    assert prepared.task.labels == ["other", "person"]
    assert prepared.params.head == HEAD
    assert prepared.params.method == expected_method_parameters(cfg.method, TINY_BERT, body_parameters(cfg))
    assert prepared.params.base_total == body_parameters(cfg)  # the body without its pooler
    assert prepared.params.trainable == prepared.params.method + HEAD


@pytest.mark.parametrize("method", method_names(SEQUENCE_CLASSIFICATION))
def test_every_method_moves_only_what_it_owns_and_restores_from_its_checkpoint(method, tiny_cls_config, tmp_path):
    audit_training(tiny_cls_config(f"method={method}"), tmp_path / "checkpoint", batch_size=8)


# what of the body (pooler excluded) each method trains in place
BODY_TRAINED_BY = {"full": r".", "bitfit": r"\.bias$", "lora": None, "head_only": None, "prompt_tuning": None}


@pytest.mark.parametrize("method", sorted(BODY_TRAINED_BY))
def test_trainer_steps_train_the_head_and_leave_the_rest_of_the_body_bit_identical(method, tiny_cls_config, tmp_path):
    cfg = tiny_cls_config(f"method={method}", "trainer.lr=1e-2", "trainer.max_steps=3")
    prepared = prepare(cfg)
    body_before = body_weights(prepared.model)
    head_before = {n: p.detach().clone() for n, p in prepared.model.named_parameters() if p.requires_grad}
    make_trainer(cfg, prepared, tmp_path).train()

    body_after = body_weights(prepared.model)
    changed = {name for name in body_before if not torch.equal(body_before[name], body_after[name])}
    owned = BODY_TRAINED_BY[method]
    expected = {name for name in body_before if owned and re.search(owned, name)}
    assert changed == expected and len(body_before) > 0
    now = dict(prepared.model.named_parameters())
    trained_head = [n for n in head_names(prepared.model) if n in head_before]
    assert any("pooler" in n for n in trained_head) and any("classifier" in n for n in trained_head)
    assert [n for n in trained_head if torch.equal(head_before[n], now[n].detach())] == []


def test_head_only_checkpoint_holds_exactly_pooler_and_classifier(tiny_cls_config, tmp_path):
    from safetensors.torch import load_file

    prepared = prepare(tiny_cls_config("method=head_only"))
    prepared.method.save(tmp_path)
    saved = load_file(tmp_path / TRAINABLE_FILE)
    assert set(saved) == {"bert.pooler.dense.weight", "bert.pooler.dense.bias", "classifier.weight", "classifier.bias"}
    assert sum(t.numel() for t in saved.values()) == HEAD


@pytest.mark.parametrize("method", method_names(SEQUENCE_CLASSIFICATION))
def test_methods_that_start_at_zero_change_nothing_before_the_first_step(method, tiny_cls_config):
    assert_zero_init_is_identity(tiny_cls_config(f"method={method}"))


# --- metrics -----------------------------------------------------------------------------------

def test_accuracy_and_macro_f1_match_values_computed_by_hand():
    gold = np.array([0, 0, 1, 1, 2])
    predicted = np.array([0, 1, 1, 1, 0])
    # class 0: P 1/2 R 1/2 F1 .5; class 1: P 2/3 R 1 F1 .8; class 2: never predicted, F1 0;
    # a fourth class in neither gold nor predictions has no F1 and is not averaged in
    metrics = classification_metrics(gold, predicted)
    assert metrics == {"accuracy": pytest.approx(3 / 5), "f1_macro": pytest.approx((0.5 + 0.8 + 0.0) / 3)}


def test_the_task_scores_argmax_ids_as_trainer_hands_them_over(tiny_cls_config):
    task = prepare(tiny_cls_config("method=head_only")).task
    scores = task.compute_metrics(EvalPrediction(predictions=np.array([1, 1, 0, 0]), label_ids=np.array([1, 0, 0, 0])))
    assert scores["accuracy"] == pytest.approx(0.75)
    assert scores["f1_macro"] == pytest.approx((0.8 + 2 / 3) / 2)  # class 0: P 1 R 2/3; class 1: P 1/2 R 1


@pytest.mark.parametrize("method", ["prompt_tuning", "lora"])
def test_reported_accuracy_is_the_argmax_of_the_model_on_each_example(method, tiny_cls_config, tmp_path):
    cfg = tiny_cls_config(f"method={method}", "method.num_virtual_tokens=5" if method == "prompt_tuning" else "seed=0")
    prepared = prepare(cfg)
    trainer = make_trainer(cfg, prepared, tmp_path)
    reported = trainer.evaluate(prepared.encoded["test"])
    collate = prepared.task.collator(prepared.tokenizer, prepared.method.input_layout)
    gold, predicted = [], []
    for example in prepared.encoded["test"]:
        batch = collate([example])
        gold.append(int(batch.pop("labels")[0]))
        predicted.append(int(logits(prepared.model, batch)[0].argmax()))
    assert reported["eval_accuracy"] == pytest.approx(np.mean(np.array(gold) == np.array(predicted)))
    assert gold == [prepared.task.labels.index(label) for _, label in TINY_CLASSIFIED]


# --- inputs ------------------------------------------------------------------------------------

def test_prompt_tuning_needs_no_label_shift_and_logits_are_per_sequence(tiny_cls_config):
    prepared = prepare(tiny_cls_config("method=prompt_tuning", "method.num_virtual_tokens=5"))
    assert prepared.method.input_layout.prepended_positions == 5
    batch = fixed_batch(prepared, 4)
    assert batch["labels"].shape == (4,)
    assert logits(prepared.model, batch).shape == (4, LABELS)


def test_prefix_tuning_prefix_reaches_the_logits(tiny_cls_config):
    prepared = prepare(tiny_cls_config("method=prefix_tuning"))
    batch = fixed_batch(prepared)
    before = logits(prepared.model, batch)
    with torch.no_grad():
        prepared.model.prompt_encoder["default"].embedding.weight.mul_(3.0)
    assert not torch.allclose(before, logits(prepared.model, batch), atol=1e-4)


def test_sentence_pairs_are_encoded_as_two_segments(tiny_cls_config, tmp_path):
    rows = [("anna visited paris", "anna was in paris", "yes"), ("omar left acme", "the river is big", "no")] * 4
    for name in ("train.csv", "test.csv"):
        write_csv(tmp_path / name, ["premise", "hypothesis", "gold"], rows)
    columns = "{text: premise, text_pair: hypothesis, label: gold}"
    prepared = prepare(tiny_cls_config(f"task.data.path={tmp_path}", f"task.data.columns={columns}", "method=lora"))
    example = prepared.encoded["test"][0]
    tokens = prepared.tokenizer.convert_ids_to_tokens(example["input_ids"])
    assert tokens == ["[CLS]", "anna", "visited", "paris", "[SEP]", "anna", "was", "in", "paris", "[SEP]"]
    assert example["token_type_ids"] == [0] * 5 + [1] * 5
    assert fixed_batch(prepared, 4)["token_type_ids"].max() == 1


def test_mrpc_config_reads_glue_tsv_pairs(tiny_cls_config, tmp_path):
    header = "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
    lines = ['1\t1\t2\t"anna" visited paris .\tanna was in paris .\n', "0\t3\t4\tomar left acme .\tthe river is big .\n"]
    (tmp_path / "train.tsv").write_text(header + "".join(lines * 5))
    (tmp_path / "dev.tsv").write_text(header + "".join(lines))
    prepared = prepare(tiny_cls_config("task=mrpc", f"task.data.path={tmp_path}", "method=head_only"))
    assert prepared.task.labels == ["0", "1"] and "test" not in prepared.encoded
    assert set(prepared.encoded["validation"][0]["token_type_ids"]) == {0, 1}


def test_long_texts_are_truncated_at_max_length(tiny_cls_config, tmp_path):
    write_csv(tmp_path / "train.csv", ["text", "label"], [("anna " * 100, "a"), ("paris " * 3, "b")] * 5)
    prepared = prepare(tiny_cls_config(f"task.data.path={tmp_path}", "task.max_length=16", "method=head_only"))
    assert max(len(e["input_ids"]) for e in prepared.encoded["train"]) == 16


def test_primary_metric_comes_from_the_config():
    """One the task does not report is refused while the config composes (tests/test_config.py)."""
    from peftlab.tasks import build_task
    from tests.conftest import compose_config

    task = build_task(compose_config(["task=banking77", "task.primary_metric=f1_macro"]).task)
    assert task.primary_metric == "f1_macro" and type(task.primary_metric) is str
