"""Every method in conf/method/, audited on the tiny Llama as a causal LM (the audits of
test_methods.py run on the tiny BERT): each either trains what a formula says and nothing else,
learns, generates through its wrapper and restores from its checkpoint, or, where it would
train nothing on this backbone, is refused with a message that names it and offers another."""

from __future__ import annotations

import pytest
import torch
from transformers import GenerationConfig, LlamaForCausalLM

from peftlab.checkpoint import load_trained, save_trained
from peftlab.errors import ConfigError
from peftlab.run import prepare
from peftlab.tasks.generation import generate_completions
from tests.conftest import TINY_DECODER, method_names
from tests.test_methods import logits, optimizer_steps

H, FFN, LAYERS = TINY_DECODER["hidden_size"], TINY_DECODER["intermediate_size"], TINY_DECODER["num_hidden_layers"]
KV = H // TINY_DECODER["num_attention_heads"] * TINY_DECODER["num_key_value_heads"]  # grouped-query k/v width


def decoder_parameters(cfg) -> int:
    """Counted on a plain LlamaForCausalLM; the tied LM head is the embedding matrix, once."""
    return sum(p.numel() for p in LlamaForCausalLM.from_pretrained(cfg.backbone.pretrained).parameters())


def lora_count(m) -> int:
    # q, o: H -> H; k, v: H -> KV; gate, up (ffn_in): H -> FFN; down (ffn_out): FFN -> H
    per_layer = m.r * (2 * (H + H) + 2 * (H + KV) + 2 * (H + FFN) + (FFN + H))
    magnitudes = 2 * H + 2 * KV + 2 * FFN + H if m.use_dora else 0
    return LAYERS * (per_layer + magnitudes)


def adapter_count(m) -> int:
    bottleneck = m.bottleneck or H // m.reduction_factor
    one = 2 * H * bottleneck + bottleneck + H
    return LAYERS * (len(m.placement) * one + H * len(m.train_norms))  # RMSNorm: a weight, no bias


# Methods with nothing to train on a Llama causal LM, and why: they must be refused.
REFUSED = {"head_only": "a causal LM has no task head", "bitfit": "Llama has no biases"}
EXPECTED_METHOD_PARAMETERS = {
    "full": lambda m, cfg: decoder_parameters(cfg),
    "lora": lambda m, cfg: lora_count(m),
    "dora": lambda m, cfg: lora_count(m),
    "ia3": lambda m, cfg: LAYERS * (KV + KV + FFN),  # key and value outputs, down-projection input
    "adapter": lambda m, cfg: adapter_count(m),
    "adapter_pfeiffer": lambda m, cfg: adapter_count(m),
    "prompt_tuning": lambda m, cfg: m.num_virtual_tokens * H,
    "prefix_tuning": lambda m, cfg: m.num_virtual_tokens * LAYERS * 2 * KV,  # keys and values per layer
}


def fixed_batch(prepared, size: int = 8) -> dict[str, torch.Tensor]:
    return prepared.task.collator(prepared.tokenizer)([prepared.encoded["train"][i] for i in range(size)])


@pytest.mark.parametrize("method", method_names())
def test_each_method_trains_its_formula_on_the_decoder_or_is_refused(method, tiny_gen_config):
    assert method in EXPECTED_METHOD_PARAMETERS.keys() | REFUSED.keys(), f"add a decoder formula for {method!r}"
    cfg = tiny_gen_config(f"method={method}")
    if method in REFUSED:
        with pytest.raises(ConfigError) as refused:
            prepare(cfg)
        message = str(refused.value)
        assert f"method {method!r} made 0 parameters trainable on backbone 'smollm2'" in message
        assert "method=lora" in message
        return
    prepared = prepare(cfg)
    assert prepared.params.head == 0
    assert prepared.params.method == prepared.params.trainable == EXPECTED_METHOD_PARAMETERS[method](cfg.method, cfg)
    assert prepared.params.base_total == decoder_parameters(cfg)


@pytest.mark.parametrize("method", [m for m in method_names() if m not in REFUSED])
def test_each_method_learns_generates_and_restores_on_the_decoder(method, tiny_gen_config, tmp_path):
    cfg = tiny_gen_config(f"method={method}")
    prepared = prepare(cfg)
    batch = fixed_batch(prepared)
    frozen = {n: p.detach().clone() for n, p in prepared.model.named_parameters() if not p.requires_grad}

    losses = optimizer_steps(prepared, batch, lr=1e-2, steps=8)

    assert losses[-1] < losses[0] * 0.9, losses
    now = dict(prepared.model.named_parameters())
    assert [n for n, before in frozen.items() if not torch.equal(before, now[n])] == []

    prompts = [prepared.encoded["test"][i]["input_ids"][: prepared.encoded["test"][i]["prompt_length"]] for i in range(3)]
    generation = GenerationConfig(max_new_tokens=3, do_sample=False, pad_token_id=1, eos_token_id=1)
    completions = generate_completions(prepared.model, prompts, generation, max_tokens=12)
    assert len(completions) == 3 and all(len(c) <= 3 for c in completions)

    trained_logits = logits(prepared.model, batch)
    save_trained(prepared.model, tmp_path / "checkpoint")
    restored = load_trained(prepare(cfg).model, tmp_path / "checkpoint")
    assert torch.allclose(trained_logits, logits(restored, batch), atol=1e-6)
