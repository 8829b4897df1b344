"""Every method in conf/method/, audited on a tiny BERT: what it trains (counted against a
formula), that the base stays bit-identical, that it learns, that its checkpoint restores it,
that merging changes nothing, and that zero-initialised methods start at the frozen model."""

from __future__ import annotations

import pytest
import torch
import transformers

from peftlab.errors import ConfigError, Unsupported
from peftlab.run import make_trainer, prepare
from tests.conftest import TOKEN_CLASSIFICATION, method_names
from tests.model_helpers import adds_context, assert_zero_init_is_identity, audit_training, body_parameters, fixed_batch, logits
from tests.method_counts import FFN, FORMULAS, H, LAYERS, TINY_BERT, expected_method_parameters










@pytest.mark.parametrize("method", method_names())
def test_every_method_file_has_a_parameter_formula(method):
    assert method in FORMULAS, f"conf/method/{method}.yaml has no parameter formula: add one to FORMULAS in tests/method_counts.py"


@pytest.mark.parametrize("method", method_names(TOKEN_CLASSIFICATION))
def test_trainable_count_matches_an_independent_formula(method, tiny_config):
    cfg = tiny_config(f"method={method}")
    prepared = prepare(cfg)
    labels = len(prepared.task.labels)
    assert prepared.params.head == H * labels + labels
    assert prepared.params.method == expected_method_parameters(cfg.method, TINY_BERT, body_parameters(cfg))
    assert prepared.params.base_total == body_parameters(cfg)








@pytest.mark.parametrize("method", method_names(TOKEN_CLASSIFICATION))
def test_training_moves_only_what_the_method_owns_and_the_loss_falls(method, tiny_config, tmp_path):
    cfg = tiny_config(f"method={method}")
    prepared, batch, trained_logits = audit_training(cfg, tmp_path / "checkpoint")
    if adds_context(cfg.method) or cfg.method.apply == "peftlab.methods.adapter.apply":
        with pytest.raises(Unsupported, match="nothing to merge"):
            prepared.method.merge()
    else:
        merged = prepared.method.merge()
        assert not hasattr(merged, "peft_config")  # a plain transformers model, loadable without peft
        assert torch.allclose(trained_logits, logits(merged, batch), atol=1e-5)


@pytest.mark.parametrize("method", method_names(TOKEN_CLASSIFICATION))
def test_methods_that_start_at_zero_change_nothing_before_the_first_step(method, tiny_config):
    assert_zero_init_is_identity(tiny_config(f"method={method}"))


def test_prompt_tuning_keeps_labels_and_predictions_on_the_real_tokens(tiny_config, tmp_path):
    cfg = tiny_config("method=prompt_tuning", "method.num_virtual_tokens=5")
    prepared = prepare(cfg)
    plain = prepared.task.collator(prepared.tokenizer)([prepared.encoded["test"][i] for i in range(4)])
    shifted = fixed_batch(prepared, 4)
    assert prepared.method.input_layout.prepended_positions == 5
    assert (shifted["labels"][:, :5] == -100).all()
    assert torch.equal(shifted["labels"][:, 5:], plain["labels"])
    assert logits(prepared.model, shifted).shape[1] == shifted["labels"].shape[1]

    trainer = make_trainer(cfg, prepared, tmp_path)
    reported = trainer.evaluate(prepared.encoded["test"])["eval_f1"]
    # the same metric computed by hand on the real tokens only
    from seqeval.metrics import f1_score
    from seqeval.scheme import IOB2

    collate = prepared.task.collator(prepared.tokenizer)
    gold, predicted = [], []
    for example in prepared.encoded["test"]:
        real = collate([example])
        real_labels = real.pop("labels")[0]
        shifted_logits = logits(prepared.model, fixed_batch_of(prepared, example))[0, 5:]
        kept = real_labels != -100
        gold.append([prepared.task.labels[i] for i in real_labels[kept]])
        predicted.append([prepared.task.labels[i] for i in shifted_logits.argmax(-1)[kept]])
    assert reported == pytest.approx(f1_score(gold, predicted, mode="strict", scheme=IOB2, zero_division=0))


def fixed_batch_of(prepared, example) -> dict[str, torch.Tensor]:
    return prepared.task.collator(prepared.tokenizer, prepared.method.input_layout)([example])


def test_prefix_tuning_needs_no_shift_and_its_prefix_reaches_the_logits(tiny_config):
    prepared = prepare(tiny_config("method=prefix_tuning"))
    assert prepared.method.input_layout.prepended_positions == 0
    batch = fixed_batch(prepared)
    before = logits(prepared.model, batch)
    with torch.no_grad():
        prepared.model.prompt_encoder["default"].embedding.weight.mul_(3.0)
    assert before.shape[1] == batch["input_ids"].shape[1]
    assert not torch.allclose(before, logits(prepared.model, batch), atol=1e-4)


def test_a_peft_field_without_a_knob_is_one_override_away_and_slots_become_module_names(tiny_config):
    prepared = prepare(tiny_config("method=loha", "+method.peft.rank_dropout=0.25", "method.targets=[attn_v]"))
    config = prepared.model.active_peft_config
    assert config.rank_dropout == 0.25
    assert config.target_modules == {f"bert.encoder.layer.{i}.attention.self.value" for i in range(LAYERS)}
    assert config.task_type == "TOKEN_CLS" and "classifier" in config.modules_to_save  # peft adds its own guesses


def test_lora_all_linear_wraps_every_body_linear_but_never_the_head(tiny_config):
    prepared = prepare(tiny_config("method=lora", "method.targets=all_linear", "method.r=2"))
    wrapped = {name.rsplit(".lora_A", 1)[0] for name, _ in prepared.model.named_modules() if name.endswith(".lora_A")}
    assert len(wrapped) == LAYERS * 6
    assert not any("classifier" in name for name in wrapped)


@pytest.mark.parametrize(
    "overrides, key, allowed",
    [
        (["method=lora", "method.r=0"], "method.r=0", ">= 1"),
        (["method=dora", "method.dropout=-0.1"], "method.dropout=-0.1", "in [0.0, 0.999]"),
        (["method=adapter", f"method.bottleneck={H + 1}"], f"method.bottleneck={H + 1}", f"in [1, {H}]"),
        (["method=adapter", "method.bottleneck=null", "method.reduction_factor=0"], "method.reduction_factor=0", "in [1,"),
        (["method=prompt_tuning", "method.num_virtual_tokens=40"], "method.num_virtual_tokens=40", "in [1, 32]"),
        (["method=prefix_tuning", "method.num_virtual_tokens=0"], "method.num_virtual_tokens=0", "in [1,"),
        (["method=lora", "method.targets=[attn_x]"], "attn_x", "attn_q"),
        (["method=ia3", "method.feedforward=[attn_q]"], "method.feedforward", "method.targets"),
        (["method=prompt_tuning", "method.init=TEXT"], "method.init_text", "method.init=TEXT"),
        (["method=prompt_tuning", "method.init_text=find names"], "method.init_text", "method.init=TEXT"),
        (["method=prompt_tuning", "method.init=vocab"], "method.init='vocab'", "SAMPLE_VOCAB"),
        (["method=loha", "method.alpha=0"], "method.alpha=0", ">= 1e-12"),
        (["method=vera", "method.dropout=1.0"], "method.dropout=1.0", "in [0.0, 0.999]"),
        (["method=lora", "+method.peft.task_type=CAUSAL_LM"], "method.peft.task_type", "the run sets itself"),
        (["method=lora", "+method.peft.lora_alhpa=4"], "lora_alhpa", "LoraConfig"),
        (["method=lora", "method.peft._target_=peft.NoSuchConfig"], "peft.NoSuchConfig", "peft.LoraConfig"),
    ],
)
def test_out_of_range_hyperparameters_are_refused_before_training(overrides, key, allowed, tiny_config):
    with pytest.raises(ConfigError) as refused:
        prepare(tiny_config(*overrides))
    assert key in str(refused.value) and allowed in str(refused.value)


def test_prefix_tuning_refuses_an_encoder_without_past_key_values_before_training():
    """DistilBERT's forward has never taken `past_key_values` (BERT's lost the name in
    transformers 5.24): the refusal names the versions and the fix instead of failing in peft."""
    from peftlab.methods.peft_method import require_past_key_values

    config = transformers.DistilBertConfig(vocab_size=50, dim=H, n_layers=1, n_heads=2, hidden_dim=FFN, num_labels=3)
    distilbert = transformers.DistilBertForTokenClassification(config)
    with pytest.raises(ConfigError) as refused:
        require_past_key_values(distilbert, "prefix_tuning", "distilbert")
    message = str(refused.value)
    for named in ("method=prefix_tuning", "past_key_values", transformers.__version__, "make install", "method=lora"):
        assert named in message
    bert = transformers.BertForTokenClassification(transformers.BertConfig(
        vocab_size=50, hidden_size=H, num_hidden_layers=1, num_attention_heads=2, intermediate_size=FFN))
    require_past_key_values(bert, "prefix_tuning", "bert")  # the locked transformers: BERT takes the prefix
