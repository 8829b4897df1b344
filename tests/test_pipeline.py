"""The shared pipeline on a tiny model: what trains, what stays frozen, what is counted,
and what result.json says."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from peftlab.run import execute, make_trainer, prepare

EXPECTED_RESULT_KEYS = {
    "status", "error", "task", "dataset", "dataset_fingerprint", "method", "backbone", "quant", "seed", "params",
    "primary_metric", "metrics", "data_sizes", "history", "timing", "memory", "checkpoint", "selection", "config",
    "versions", "git_sha", "notes", "forgetting",
}


def base_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The pretrained body's weights, whatever wrapper the method put around it."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return {name: p.detach().clone() for name, p in inner.bert.named_parameters() if "lora_" not in name}


def train_steps(cfg, tmp_path: Path, steps: int = 3):
    cfg.trainer.max_steps = steps
    prepared = prepare(cfg)
    before = base_weights(prepared.model)
    trainable_before = {n: p.detach().clone() for n, p in prepared.model.named_parameters() if p.requires_grad}
    make_trainer(cfg, prepared, tmp_path / "trainer").train()
    return prepared, before, trainable_before


@pytest.mark.parametrize("method", ["lora", "head_only"])
def test_frozen_methods_leave_every_base_weight_bit_identical(method, tiny_config, tmp_path):
    prepared, before, trainable_before = train_steps(tiny_config(f"method={method}", "trainer.lr=1e-2"), tmp_path)
    after = base_weights(prepared.model)
    assert before.keys() == after.keys() and len(before) > 0
    changed_base = [name for name in before if not torch.equal(before[name], after[name])]
    assert changed_base == []
    trained = dict(prepared.model.named_parameters())
    moved = [name for name, value in trainable_before.items() if not torch.equal(value, trained[name].detach())]
    assert moved, "no trainable parameter changed: the optimizer did not step"


def test_full_fine_tuning_changes_base_weights(tiny_config, tmp_path):
    prepared, before, _ = train_steps(tiny_config("method=full", "trainer.lr=1e-2"), tmp_path)
    after = base_weights(prepared.model)
    changed = [name for name in before if not torch.equal(before[name], after[name])]
    assert len(changed) > len(before) // 2


def test_lora_parameter_count_matches_the_formula(tiny_config):
    cfg = tiny_config("method=lora", "method.r=4")
    prepared = prepare(cfg)
    hidden, inner, layers, r = 32, 64, 2, 4
    labels = len(prepared.task.labels)
    # q, k, v, attention-output: hidden -> hidden; ffn-in: hidden -> inner; ffn-out: inner -> hidden
    lora_per_layer = 4 * r * (hidden + hidden) + r * (hidden + inner) + r * (inner + hidden)
    head = hidden * labels + labels
    params = prepared.params
    assert params.method == layers * lora_per_layer
    assert params.head == head
    assert params.trainable == layers * lora_per_layer + head
    base_model = prepared.model.get_base_model().bert
    assert params.base_total == sum(p.numel() for n, p in base_model.named_parameters() if "lora_" not in n)


def test_lora_targets_choose_the_wrapped_layers(tiny_config):
    prepared = prepare(tiny_config("method=lora", "method.r=2", "method.targets=[attn_q,attn_v]"))
    wrapped = {name for name, _ in prepared.model.named_modules() if name.endswith(".lora_A")}
    assert len(wrapped) == 2 * 2  # two slots in each of two layers
    assert all(".query." in name or ".value." in name for name in wrapped)
    assert prepared.params.method == 2 * 2 * 2 * (32 + 32)


def test_full_and_head_only_counts(tiny_config):
    full = prepare(tiny_config("method=full")).params
    head_only = prepare(tiny_config("method=head_only")).params
    assert full.method == full.base_total and full.trainable_pct == pytest.approx(100.0)
    assert head_only.method == 0 and head_only.trainable == head_only.head == full.head
    assert head_only.base_total == full.base_total


def test_the_same_seed_gives_the_same_initial_adapter_and_head(tiny_config):
    first = prepare(tiny_config("method=lora", "seed=3")).model.state_dict()
    second = prepare(tiny_config("method=lora", "seed=3")).model.state_dict()
    other = prepare(tiny_config("method=lora", "seed=4")).model.state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert any(not torch.equal(first[k], other[k]) for k in first if "lora_A" in k)


def test_result_json_has_every_field_with_sane_values(tiny_config, tmp_path):
    cfg = tiny_config(
        "method=lora", "trainer.max_steps=6", "trainer.eval_strategy=steps", "trainer.eval_steps=3",
        "task.max_train_samples=12", "task.max_eval_samples=10",
    )
    execute(cfg, tmp_path)
    result = json.loads((tmp_path / "result.json").read_text())
    assert set(result) == EXPECTED_RESULT_KEYS
    assert result["forgetting"] == {}  # forgetting.texts is null by default: nothing measured
    assert result["status"] == "ok" and result["error"] is None
    assert (result["task"], result["method"], result["backbone"], result["quant"], result["seed"]) == (
        "conll2003", "lora", "minilm", "none", 0,
    )
    assert result["dataset"] == "tiny_ner" and result["dataset_fingerprint"].startswith("sha256:")
    assert result["data_sizes"] == {"train": 12, "validation": 10, "test": 10}  # after the subsample
    params = result["params"]
    assert params["trainable"] == params["method"] + params["head"] and 0 < params["trainable_pct"] < 100
    assert result["primary_metric"] == "f1"
    for split in ("validation", "test"):
        metrics = result["metrics"][split]
        assert 0.0 <= metrics["f1"] <= 1.0 and metrics["loss"] > 0
        assert {"precision", "recall"} <= metrics.keys()
    timing = result["timing"]
    assert timing["train_seconds"] > 0 and timing["train_samples_per_second"] > 0
    assert timing["train_tokens_per_second"] > timing["train_samples_per_second"]
    assert result["memory"]["peak_rss_mb"] > 50
    assert [point["step"] for point in result["history"] if "validation_f1" in point] == [3, 6]
    checkpoint = Path(result["checkpoint"]["path"])
    assert (checkpoint / "adapter_model.safetensors").exists()
    assert result["checkpoint"]["size_bytes"] == sum(f.stat().st_size for f in checkpoint.rglob("*") if f.is_file())
    assert result["config"]["method"]["r"] == 8 and result["versions"]["torch"] == torch.__version__


def test_a_failed_run_still_writes_result_json(tiny_config, tmp_path):
    cfg = tiny_config("method=lora", "method.r=0")
    with pytest.raises(Exception, match="method.r=0"):
        execute(cfg, tmp_path)
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["status"] == "failed" and "method.r=0" in result["error"]
    assert result["method"] == "lora" and result["metrics"] == {}
    assert result["dataset"] == "tiny_ner" and result["dataset_fingerprint"].startswith("sha256:")
