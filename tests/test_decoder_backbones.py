"""The decoder backbone configs: they compose without downloading anything, and each slot map
names the right layers of its family, checked on tiny models of the same architecture made
with `from_config`. GPT-2's Conv1D layers are adapted like linear layers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from peftlab.methods import ALL_LINEAR, LINEAR_LAYERS, MethodContext
from peftlab.errors import ConfigError
from peftlab.run import prepare
from tests.conftest import GEN_WORDS, TINY_DECODER, compose_config, tiny_word_tokenizer
from tests.model_helpers import optimizer_steps

ROOT = Path(__file__).resolve().parents[1]
H, FFN, LAYERS = TINY_DECODER["hidden_size"], TINY_DECODER["intermediate_size"], TINY_DECODER["num_hidden_layers"]
GPT2_TINY = dict(n_embd=H, n_inner=FFN, n_layer=LAYERS, n_head=4, n_positions=64)


def tiny_llama() -> torch.nn.Module:
    return LlamaForCausalLM(LlamaConfig(vocab_size=40, max_position_embeddings=64, **TINY_DECODER))


def tiny_qwen2() -> torch.nn.Module:
    return Qwen2ForCausalLM(Qwen2Config(vocab_size=40, max_position_embeddings=64, **TINY_DECODER))


def tiny_gpt2_model() -> torch.nn.Module:
    return GPT2LMHeadModel(GPT2Config(vocab_size=40, **GPT2_TINY))


# Llama and Qwen2 split the FFN input into gate and up projections; GPT-2 fuses q, k and v in c_attn
LLAMA_BLOCK = {"attn_q": 1, "attn_k": 1, "attn_v": 1, "attn_out": 1, "ffn_in": 2, "ffn_out": 1, "attn_norm": 1, "ffn_norm": 1}
GPT2_BLOCK = {**LLAMA_BLOCK, "ffn_in": 1}
# backbone -> (a tiny model of its architecture, layers per block each slot must find, linear layers per block)
DECODER_BACKBONES = {
    "smollm2": (tiny_llama, LLAMA_BLOCK, 7),
    "llama-3.2-1b": (tiny_llama, LLAMA_BLOCK, 7),
    "qwen2.5-0.5b": (tiny_qwen2, LLAMA_BLOCK, 7),
    "gpt2": (tiny_gpt2_model, GPT2_BLOCK, 4),
}


@pytest.mark.parametrize("backbone", sorted(DECODER_BACKBONES))
def test_each_slot_names_the_right_layers_of_the_family(backbone):
    cfg = compose_config([f"backbone={backbone}", "task=jsonl_gen"])
    context = MethodContext(
        backbone_name=backbone, pretrained=cfg.backbone.pretrained, slots=dict(cfg.backbone.slots), head_modules=[],
        peft_task_type="CAUSAL_LM", hidden_size=H, max_positions=64, max_length=32,
    )
    build, per_block, linear_per_block = DECODER_BACKBONES[backbone]
    model = build()
    assert set(cfg.backbone.slots) == set(per_block)
    for slot, count in per_block.items():
        kinds = None if slot.endswith("_norm") else LINEAR_LAYERS
        names = context.modules_for(model, [slot], "test", kinds=kinds)
        assert len(names) == LAYERS * count, (slot, names)
    linear = context.modules_for(model, ALL_LINEAR, "test")
    assert "lm_head" not in linear and len(linear) == LAYERS * linear_per_block


@pytest.mark.parametrize("backbone", ["gpt2", "qwen2.5-0.5b", "llama-3.2-1b"])
def test_hub_decoders_compose_from_the_command_line_without_downloading(backbone, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    completed = subprocess.run(
        [sys.executable, "-m", "peftlab", f"backbone={backbone}", "task=banking77_gen", "method=lora", "--cfg", "job"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    assert f"name: {backbone}" in completed.stdout and "gguf_file: null" in completed.stdout


@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tiny_gpt2")
    tokenizer = tiny_word_tokenizer(GEN_WORDS)
    torch.manual_seed(1234)
    config = GPT2Config(vocab_size=len(tokenizer), eos_token_id=tokenizer.eos_token_id, initializer_range=0.2, **GPT2_TINY)
    GPT2LMHeadModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("method", ["lora", "dora"])
def test_lora_and_dora_adapt_gpt2_conv1d_layers_and_learn(method, tiny_gen_config, tiny_gpt2):
    cfg = tiny_gen_config("backbone=gpt2", f"backbone.pretrained={tiny_gpt2}", f"method={method}", "method.r=2")
    prepared = prepare(cfg)
    # c_attn: H -> 3H (q, k and v once), attn c_proj: H -> H, c_fc: H -> FFN, mlp c_proj: FFN -> H
    magnitudes = 3 * H + H + FFN + H if method == "dora" else 0
    assert prepared.params.method == LAYERS * (2 * ((H + 3 * H) + (H + H) + (H + FFN) + (FFN + H)) + magnitudes)
    batch = prepared.task.collator(prepared.tokenizer)([prepared.encoded["train"][i] for i in range(8)])
    losses = optimizer_steps(prepared, batch, lr=1e-2, steps=6)
    assert losses[-1] < losses[0] * 0.9, losses


def test_adapters_hang_off_gpt2_conv1d_layers(tiny_gen_config, tiny_gpt2):
    cfg = tiny_gen_config("backbone=gpt2", f"backbone.pretrained={tiny_gpt2}", "method=adapter_pfeiffer")
    prepared = prepare(cfg)
    bottleneck = H // cfg.method.reduction_factor
    assert prepared.params.method == LAYERS * (2 * H * bottleneck + bottleneck + H)


def test_vera_adapts_gpt2_conv1d_layers_and_learns(tiny_gen_config, tiny_gpt2):
    cfg = tiny_gen_config("backbone=gpt2", f"backbone.pretrained={tiny_gpt2}", "method=vera", "method.r=4")
    prepared = prepare(cfg)
    # r + out per adapted layer: c_attn (q, k and v once, 3H wide), attn c_proj, c_fc, mlp c_proj
    assert prepared.params.method == LAYERS * (4 * cfg.method.r + 3 * H + H + FFN + H)
    batch = prepared.task.collator(prepared.tokenizer)([prepared.encoded["train"][i] for i in range(8)])
    losses = optimizer_steps(prepared, batch, lr=5e-2, steps=8)  # only vectors train: a larger step
    assert losses[-1] < losses[0] * 0.9, losses


def test_a_tuner_peft_cannot_fit_to_the_layers_is_refused_naming_method_and_backbone(tiny_gen_config, tiny_gpt2):
    """peft 0.21's LoHa wraps torch Linear layers only, not GPT-2's Conv1D."""
    cfg = tiny_gen_config("backbone=gpt2", f"backbone.pretrained={tiny_gpt2}", "method=loha")
    with pytest.raises(ConfigError, match=r"method=loha: peft could not apply LoHaConfig to backbone 'gpt2'.*Conv1D"):
        prepare(cfg)
