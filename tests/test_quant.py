"""Quantized bases (8-bit LLM.int8() and 4-bit NF4, i.e. QLoRA with method=lora) on the tiny
BERT, on CPU: the base is quantized at load time and stays frozen and bit-identical while the
method and the float head train; counts equal the float model's; the checkpoint restores the
trained model on a fresh quantized base; merging gives a float model that computes the same;
methods that update base weights and mistyped options are refused before anything loads."""

from __future__ import annotations

import functools
import json
import logging
import re
import sys

import pytest
import torch
import transformers
from omegaconf import OmegaConf
from peft import PeftModel

from peftlab.checkpoint import load_trained, save_trained
from peftlab.errors import ConfigError, Unsupported
from peftlab.export import merge_to_float
from peftlab.quant import quantization_constants
from peftlab.quant.loading import head_module_names
from peftlab.run import make_trainer, prepare
from tests.conftest import compose_config, method_names
from tests.helpers import assert_clean_error, peftlab
from tests.method_counts import LAYERS
from tests.model_helpers import body_parameters, fixed_batch, logits, optimizer_steps

bnb = pytest.importorskip("bitsandbytes", reason="the quant extra: pip install 'peftlab[quant]'")

QUANTIZED = {"int8": bnb.nn.Linear8bitLt, "nf4": bnb.nn.Linear4bit}
LINEARS_PER_LAYER = 6  # q k v o, ffn in, ffn out: every linear layer of the body


@functools.cache
def composed(group: str, name: str):
    return compose_config([f"{group}={name}"])[group]


def method_and_quant_pairs(allowed: bool) -> list[tuple[str, str]]:
    """(method, quant) pairs whose conf/method file allows (or refuses) that quantized base:
    read from the files, not listed here."""
    return [
        (method, quant)
        for method in method_names()
        for quant in QUANTIZED
        if (composed("quant", quant).bits in composed("method", method).quantized_base) == allowed
    ]


def quantized_layers(model: torch.nn.Module) -> dict[str, torch.nn.Module]:
    return {name: module for name, module in model.named_modules() if isinstance(module, tuple(QUANTIZED.values()))}


def stored_base(model: torch.nn.Module) -> dict[str, list[torch.Tensor]]:
    """Every quantized weight as stored: its packed data and the constants beside it."""
    return {
        name: [layer.weight.data.clone(), *(c.clone() for c in quantization_constants(layer))]
        for name, layer in quantized_layers(model).items()
    }


@pytest.mark.parametrize("quant", sorted(QUANTIZED))
def test_lora_trains_beside_a_frozen_quantized_base_and_the_float_head(quant, tiny_config):
    prepared = prepare(tiny_config("method=lora", f"quant={quant}"))
    model = prepared.model
    layers = quantized_layers(model)
    assert len(layers) == LAYERS * LINEARS_PER_LAYER
    assert all(type(layer) is QUANTIZED[quant] for layer in layers.values())
    assert not any("classifier" in name for name in layers)
    head = model.get_base_model().classifier.modules_to_save["default"]
    assert type(head) is torch.nn.Linear and head.weight.dtype == torch.float32
    before = stored_base(model)
    head_before = head.weight.detach().clone()

    batch = fixed_batch(prepared)
    logits(model, batch)  # an evaluation pass first: it must not repack or alter the base either
    losses = optimizer_steps(prepared, batch, lr=1e-2, steps=8)

    assert losses[-1] < losses[0] * 0.9, losses
    after = stored_base(model)
    assert set(after) == set(before), "a quantized layer was replaced"
    assert all(
        all(torch.equal(old, new) for old, new in zip(before[name], after[name], strict=True)) for name in before
    ), "a quantized base weight or its constants changed"
    assert not any(layer.weight.requires_grad for layer in quantized_layers(model).values())
    assert not torch.equal(head_before, head.weight)


@pytest.mark.parametrize("method", ["lora", "ia3", "adapter", "head_only"])
def test_counts_of_a_quantized_base_equal_the_float_base(method, tiny_config):
    counted = {quant: prepare(tiny_config(f"method={method}", f"quant={quant}")).params for quant in ("none", "int8", "nf4")}
    assert counted["int8"] == counted["none"] == counted["nf4"]
    assert counted["nf4"].base_total == body_parameters(tiny_config())


def test_model_bytes_shrink_with_the_bits(tiny_config):
    """Measured on the tiny BERT: none 87,972 B, int8 40,612, nf4 32,428 without double
    quantization and 43,988 with it (0.500 of none): double quantization keeps a 1 KB code book
    per layer, more than it saves on 32-wide layers. The float embeddings and head are about
    21 KB of every variant."""
    measured = {
        quant: prepare(tiny_config("method=lora", f"quant={quant}", *extra)).model_bytes
        for quant, extra in (("none", []), ("int8", []), ("nf4", ["quant.double_quant=false"]))
    }
    assert measured["nf4"] < measured["int8"] < measured["none"]
    assert measured["nf4"] <= 0.5 * measured["none"]
    linear_weights = LAYERS * (4 * 32 * 32 + 2 * 32 * 64)
    layers = LAYERS * LINEARS_PER_LAYER
    # 4-bit: two codes a byte, one fp32 scale per block of 64, a 16-value fp32 code book per layer
    assert measured["none"] - measured["nf4"] == linear_weights * 4 - (linear_weights // 2 + linear_weights // 64 * 4 + layers * 16 * 4)
    # 8-bit: one byte a value, one fp32 scale per output row
    rows = LAYERS * (4 * 32 + 64 + 32)
    assert measured["none"] - measured["int8"] == linear_weights * 4 - (linear_weights + rows * 4)


@pytest.mark.parametrize("quant", sorted(QUANTIZED))
def test_checkpoint_restores_the_trained_model_on_a_fresh_quantized_base(quant, tiny_config, tmp_path):
    cfg = tiny_config("method=lora", f"quant={quant}")
    prepared = prepare(cfg)
    batch = fixed_batch(prepared)
    optimizer_steps(prepared, batch, lr=1e-2, steps=3)
    save_trained(prepared.model, tmp_path / "checkpoint")

    restored = load_trained(prepare(cfg).model, tmp_path / "checkpoint")
    assert torch.equal(logits(prepared.model, batch), logits(restored, batch))


MERGE_TOLERANCE = {"nf4": 1e-5, "int8": 1e-3}


@pytest.mark.parametrize("method, quant", [("lora", "nf4"), ("lora", "int8"), ("dora", "nf4"), ("ia3", "int8")])
def test_merging_gives_a_float_model_that_computes_what_the_quantized_one_did(method, quant, tiny_config, caplog, tmp_path):
    """4-bit layers compute with the dequantized weight, as the merged model does: equal to
    float rounding. 8-bit layers in evaluation also round the activations to int8 (LLM.int8()),
    which the float model does not: equal to that rounding."""
    prepared = prepare(tiny_config(f"method={method}", f"quant={quant}"))
    batch = fixed_batch(prepared)
    optimizer_steps(prepared, batch, lr=1e-2, steps=3)
    trained = logits(prepared.model, batch)

    with caplog.at_level(logging.WARNING, logger="peftlab"):
        merged = merge_to_float(prepared.model)

    assert not isinstance(merged, PeftModel) and not quantized_layers(merged)
    assert {p.dtype for p in merged.parameters()} == {torch.float32}
    assert not getattr(merged, "is_quantized", False) and "quantization_config" not in merged.config.to_dict()
    assert "float32" in caplog.text and "not re-quantized" in caplog.text
    assert torch.allclose(logits(merged, batch), trained, atol=MERGE_TOLERANCE[quant])

    merged.save_pretrained(tmp_path / "merged")
    reloaded = transformers.AutoModelForTokenClassification.from_pretrained(tmp_path / "merged")
    assert not quantized_layers(reloaded) and torch.equal(logits(reloaded, batch), logits(merged, batch))


@pytest.mark.parametrize("method, quant", method_and_quant_pairs(allowed=False))
def test_refused_pairs_are_refused_before_anything_loads_saying_what_to_use(method, quant, tiny_config, monkeypatch):
    def no_loading(*args, **kwargs):
        raise AssertionError("something loaded before the refusal")

    monkeypatch.setattr("peftlab.backbones.from_pretrained_or_explain", no_loading)
    with pytest.raises(ConfigError) as refused:
        prepare(tiny_config(f"method={method}", f"quant={quant}"))
    message = str(refused.value)
    assert f"method={method} cannot use quant={quant}" in message
    assert re.search(r"use (method|quant)=\w+", message), message  # what to use instead


def test_full_and_bitfit_are_refused_on_every_quantized_base():
    refused = method_and_quant_pairs(allowed=False)
    assert {(method, quant) for method in ("full", "bitfit") for quant in QUANTIZED} <= set(refused)


def test_every_method_says_which_quantized_bases_it_trains_on():
    for name in method_names():
        method = composed("method", name)
        assert set(method.get("quantized_base", [None])) <= {8, 4}, f"conf/method/{name}.yaml: quantized_base"
        if set(method.quantized_base) != {8, 4}:
            assert method.quantized_base_refusal.strip(), f"conf/method/{name}.yaml: say why in quantized_base_refusal"


def test_base_weights_chosen_by_train_params_on_a_quantized_base_are_refused(tiny_config):
    with pytest.raises(ConfigError, match=r"attention\.self\.query\.weight.*quant=none"):
        prepare(tiny_config("method=head_only", "quant=int8", "method.train_params=[query]"))


@pytest.mark.parametrize(
    "overrides, named",
    [
        (["quant=nf4", "+quant.double_qaunt=true"], ["quant.double_qaunt", "double_quant", "compute_dtype"]),
        (["quant=int8", "+quant.double_quant=true"], ["quant.double_quant", "outlier_threshold"]),
        (["quant=none", "+quant.compute_dtype=float32"], ["quant.compute_dtype", "bits"]),
        (["quant=int8", "quant.outlier_threshold=-1"], ["quant.outlier_threshold=-1", ">= 0"]),
        (["quant=int8", "quant.bits=4"], ["quant.bits=4", "quant=int8", "quant=nf4 (4)"]),
        (["quant=nf4", "quant.bits=3"], ["quant.bits=3", "quant=none (null)", "quant=int8 (8)", "quant=nf4 (4)"]),
    ],
)
def test_mistyped_quant_options_are_refused_before_loading_naming_the_key_and_the_valid_ones(
    overrides, named, tiny_config, monkeypatch
):
    """Options of the wrong type or value are refused while the config composes (tests/test_config.py)."""
    monkeypatch.setattr("peftlab.backbones.from_pretrained_or_explain", pytest.fail)
    with pytest.raises(ConfigError) as refused:
        prepare(tiny_config("method=lora", *overrides))
    assert all(fragment in str(refused.value) for fragment in named), str(refused.value)


def test_an_unknown_quant_key_without_plus_is_refused_by_hydra():
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match="double_qaunt"):
        compose_config(["quant=nf4", "quant.double_qaunt=true"])


def test_missing_bitsandbytes_names_the_extra_to_install(tiny_config, monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # `import bitsandbytes` now fails
    with pytest.raises(ConfigError, match=r"quant=nf4 needs bitsandbytes.*pip install 'peftlab\[quant\]'"):
        prepare(tiny_config("method=lora", "quant=nf4"))


def test_bitsandbytes_without_kernels_for_the_device_is_explained(tiny_config, monkeypatch):
    def no_kernel(*args, **kwargs):
        raise NotImplementedError("no 4-bit kernel registered for this device")

    monkeypatch.setattr(bnb.functional, "quantize_4bit", no_kernel)
    with pytest.raises(ConfigError, match=r"cannot quantize to 4 bits on this device \(cpu\).*quant=none"):
        prepare(tiny_config("method=lora", "quant=nf4"))


def test_a_head_of_several_modules_is_kept_in_float_whole():
    """RoBERTa's classification head is classifier.dense + classifier.out_proj: both stay float,
    where transformers' default (the last module) would quantize classifier.dense."""
    config = transformers.RobertaConfig(
        vocab_size=50, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, num_labels=3
    )
    assert head_module_names(transformers.AutoModelForSequenceClassification, config) == ["classifier"]
    assert head_module_names(transformers.AutoModelForTokenClassification, transformers.BertConfig()) == ["classifier"]


def test_only_peft_adapters_merge(tiny_config):
    with pytest.raises(TypeError, match="nothing to merge"):
        merge_to_float(prepare(tiny_config("method=adapter", "quant=nf4")).model)
    with pytest.raises(Unsupported, match="nothing to merge"):
        merge_to_float(prepare(tiny_config("method=prompt_tuning", "quant=nf4")).model)


def test_compute_dtype_auto_is_float32_on_cpu(tiny_config):
    model = prepare(tiny_config("method=lora", "quant=nf4")).model
    assert {layer.compute_dtype for layer in quantized_layers(model).values()} == {torch.float32}


def test_gradient_checkpointing_trains_a_quantized_base(tiny_config, tmp_path):
    cfg = tiny_config("method=lora", "quant=nf4", "trainer.gradient_checkpointing=true", "trainer.max_steps=2")
    prepared = prepare(cfg)
    lora_before = {n: p.detach().clone() for n, p in prepared.model.named_parameters() if "lora_B" in n}
    make_trainer(cfg, prepared, tmp_path).train()
    now = dict(prepared.model.named_parameters())
    assert all(not torch.equal(before, now[n]) for n, before in lora_before.items())


@pytest.mark.parametrize("method", ["adapter", "head_only"])
def test_trainer_trains_our_own_methods_beside_a_quantized_base_and_says_it_is_quantized(method, tiny_config, tmp_path):
    """transformers' Trainer refuses a quantized model that peft does not wrap; PeftlabTrainer
    takes one of which something trains, and leaves the model marked quantized as it came."""
    cfg = tiny_config(f"method={method}", "quant=int8", "trainer.max_steps=2", "trainer.lr=1e-2")
    prepared = prepare(cfg)
    trainable = {n: p.detach().clone() for n, p in prepared.model.named_parameters() if p.requires_grad}
    trainer = make_trainer(cfg, prepared, tmp_path)
    assert prepared.model.is_quantized is True
    trainer.train()
    now = dict(prepared.model.named_parameters())
    assert any(not torch.equal(before, now[name]) for name, before in trainable.items())


def test_trainer_still_refuses_a_quantized_base_of_which_nothing_trains(tiny_config, tmp_path):
    cfg = tiny_config("method=head_only", "quant=int8")
    prepared = prepare(cfg)
    for parameter in prepared.model.parameters():
        parameter.requires_grad_(False)
    with pytest.raises(ValueError, match="nothing in this quantized model trains"):
        make_trainer(cfg, prepared, tmp_path)
    assert prepared.model.is_quantized


@pytest.mark.slow
def test_cli_qlora_run_writes_model_bytes_and_the_quant_settings(tiny_backbone, tiny_ner_dir, tmp_path):
    run_dir = tmp_path / "run"
    completed = peftlab(
        "task=conll2003", f"task.data.path={tiny_ner_dir}", f"backbone.pretrained={tiny_backbone}",
        "quant=nf4", "method=lora", "trainer=smoke", f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
    )
    assert completed.returncode == 0, completed.stderr
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "ok" and result["quant"] == "nf4"
    assert result["config"]["quant"]["bits"] == 4 and result["config"]["quant"]["double_quant"] is True
    assert isinstance(result["memory"]["model_bytes"], int) and result["memory"]["model_bytes"] > 0


@pytest.mark.slow
def test_cli_refusal_is_one_clean_paragraph(tmp_path):
    assert_clean_error(peftlab("quant=nf4", "method=full", cwd=tmp_path), "method=full", "method=lora")


@pytest.mark.slow
@pytest.mark.parametrize("method, quant", method_and_quant_pairs(allowed=True))
def test_every_method_trains_on_the_quantized_bases_it_allows(method, quant, tiny_config, tmp_path):
    cfg = tiny_config(f"method={method}", f"quant={quant}", "trainer.max_steps=2")
    prepared = prepare(cfg)
    before = stored_base(prepared.model)
    trained = make_trainer(cfg, prepared, tmp_path / "trainer").train()
    assert torch.isfinite(torch.tensor(trained.training_loss))
    after = stored_base(prepared.model)
    assert set(after) == set(before)
    assert all(all(torch.equal(a, b) for a, b in zip(before[n], after[n], strict=True)) for n in before)

    save_trained(prepared.model, tmp_path / "checkpoint")
    restored = load_trained(prepare(cfg).model, tmp_path / "checkpoint")
    batch = fixed_batch(prepared)
    assert torch.equal(logits(prepared.model, batch), logits(restored, batch))


def test_a_quant_file_without_a_schema_is_refused_saying_how_to_start_it():
    from peftlab.quant.options import check_kind

    with pytest.raises(ConfigError, match=r"conf/quant/mine.yaml.*/schema/quant/KIND@_here_"):
        check_kind(OmegaConf.create({"name": "mine", "bits": 4, "quant_type": "nf4"}))
