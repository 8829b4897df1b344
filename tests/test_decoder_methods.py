"""Every method in conf/method/, audited on the tiny Llama as a causal LM (the audits of
test_methods.py run on the tiny BERT): each either trains what a formula says and nothing else,
learns, generates through its wrapper and restores from its checkpoint, or, where it would
train nothing on this backbone, is refused with a message that names it and offers another."""

from __future__ import annotations

import pytest
import torch
from transformers import GenerationConfig, LlamaForCausalLM

from peftlab.errors import ConfigError
from peftlab.run import prepare
from peftlab.tasks.generation import generate_completions
from tests.conftest import GENERATION, method_names
from tests.method_counts import TINY_LLAMA, expected_method_parameters
from tests.model_helpers import logits, optimizer_steps


def decoder_parameters(cfg) -> int:
    """Counted on a plain LlamaForCausalLM; the tied LM head is the embedding matrix, once."""
    return sum(p.numel() for p in LlamaForCausalLM.from_pretrained(cfg.backbone.pretrained).parameters())


def expected_on_the_decoder(cfg) -> int:
    return expected_method_parameters(cfg.method, TINY_LLAMA, decoder_parameters(cfg))


def fixed_batch(prepared, size: int = 8) -> dict[str, torch.Tensor]:
    return prepared.task.collator(prepared.tokenizer)([prepared.encoded["train"][i] for i in range(size)])


@pytest.mark.parametrize("method", method_names(GENERATION))
def test_each_method_trains_its_formula_on_the_decoder_or_is_refused(method, tiny_gen_config):
    """A causal LM has no task head, so a method whose formula is 0 here (head-only; BitFit,
    as Llama has no biases) would train nothing and must be refused, unless it trains nothing by
    design (in-context prompting), and is then evaluated as loaded. At task.max_length=40 the
    4 demonstrations in_context puts before each prompt fit (35 tokens), and so do prompt
    tuning's 20 virtual tokens within the 64 positions."""
    cfg = tiny_gen_config(f"method={method}", "task.max_length=40")
    expected = expected_on_the_decoder(cfg)
    if expected == 0:
        try:
            prepared = prepare(cfg)
        except ConfigError as refused:
            message = str(refused)
            assert f"method {method!r} made 0 parameters trainable on backbone 'smollm2'" in message
            assert "method=lora" in message
            return
        assert not prepared.method.trains, f"{method} made nothing trainable and was not refused"
        assert prepared.params.trainable == prepared.params.head == 0
        return
    prepared = prepare(cfg)
    assert prepared.params.head == 0
    assert prepared.params.method == prepared.params.trainable == expected
    assert prepared.params.base_total == decoder_parameters(cfg)


@pytest.mark.parametrize("method", method_names(GENERATION))
def test_each_method_learns_generates_and_restores_on_the_decoder(method, tiny_gen_config, tmp_path):
    cfg = tiny_gen_config(f"method={method}")
    if expected_on_the_decoder(cfg) == 0:
        pytest.skip(f"{method} trains nothing on a causal LM: refused or evaluated only (the test above)")
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
    prepared.method.save(tmp_path / "checkpoint")
    restored = prepare(cfg)
    restored.method.load(tmp_path / "checkpoint")
    assert torch.allclose(trained_logits, logits(restored.model, batch), atol=1e-6)
