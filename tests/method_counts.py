"""What every method in conf/method/ trains, one formula per method over the shapes of a tiny
test model: the one table the count audits check peftlab against, on the tiny BERT
(test_methods.py, test_sequence_classification.py) and on the tiny Llama
(test_decoder_methods.py). The formulas use no peftlab or peft code, only the papers' shapes; a
new conf/method file fails the audits, saying where to add its row, until it has one."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from omegaconf import DictConfig

from tests.conftest import TINY_DECODER


@dataclass(frozen=True)
class Shapes:
    """A tiny backbone as the formulas see it."""

    hidden: int
    layers: int
    key_value_width: int  # the width of keys and values: hidden, or less with grouped-query attention
    slots: dict[str, list[tuple[int, int]]]  # slot -> (in, out) of each linear layer it names in one block
    norm_parameters: int  # one layer norm: weight and bias (LayerNorm), or weight only (RMSNorm)
    biases: int  # every bias of the body: what BitFit trains

    def linears(self, slots: list[str] | str) -> list[tuple[str, int, int]]:
        """(slot, in, out) of each linear layer the slots name in one block; `all_linear` is every slot."""
        chosen = list(self.slots) if slots == "all_linear" else slots
        return [(slot, fan_in, fan_out) for slot in chosen for fan_in, fan_out in self.slots[slot]]


H, FFN, LAYERS = 32, 64, 2  # the tiny BERT of conftest.py
TINY_BERT = Shapes(
    hidden=H,
    layers=LAYERS,
    key_value_width=H,
    slots={"attn_q": [(H, H)], "attn_k": [(H, H)], "attn_v": [(H, H)], "attn_out": [(H, H)],
           "ffn_in": [(H, FFN)], "ffn_out": [(FFN, H)]},
    norm_parameters=2 * H,
    biases=H + LAYERS * (4 * H + H + FFN + H + H),  # embedding LN; q k v o, LN, ffn in and out, LN
)

D_H, D_FFN = TINY_DECODER["hidden_size"], TINY_DECODER["intermediate_size"]
KV = D_H // TINY_DECODER["num_attention_heads"] * TINY_DECODER["num_key_value_heads"]
TINY_LLAMA = Shapes(
    hidden=D_H,
    layers=TINY_DECODER["num_hidden_layers"],
    key_value_width=KV,
    # q, o: H -> H; k, v: H -> KV; gate and up (ffn_in): H -> FFN; down (ffn_out): FFN -> H
    slots={"attn_q": [(D_H, D_H)], "attn_k": [(D_H, KV)], "attn_v": [(D_H, KV)], "attn_out": [(D_H, D_H)],
           "ffn_in": [(D_H, D_FFN), (D_H, D_FFN)], "ffn_out": [(D_FFN, D_H)]},
    norm_parameters=D_H,
    biases=0,  # Llama has none: BitFit trains nothing and is refused
)


def lora(m: DictConfig, s: Shapes) -> int:
    """B A per layer (r x in + out x r); DoRA adds one magnitude per output feature."""
    return s.layers * sum(m.r * (fan_in + fan_out) + (fan_out if m.use_dora else 0) for _, fan_in, fan_out in s.linears(m.targets))


def ia3(m: DictConfig, s: Shapes) -> int:
    """One vector per target: over its input for feed-forward targets, its output otherwise."""
    return s.layers * sum(fan_in if slot in m.feedforward else fan_out for slot, fan_in, fan_out in s.linears(m.targets))


def loha(m: DictConfig, s: Shapes) -> int:
    """Two rank-r pairs per layer, (W1a W1b) * (W2a W2b) elementwise: 2 r (in + out)."""
    return s.layers * sum(2 * m.r * (fan_in + fan_out) for _, fan_in, fan_out in s.linears(m.targets))


def vera(m: DictConfig, s: Shapes) -> int:
    """Two vectors per layer, d (r) and b (out); the random projections A and B are frozen buffers."""
    return s.layers * sum(m.r + fan_out for _, fan_in, fan_out in s.linears(m.targets))


def adapter(m: DictConfig, s: Shapes) -> int:
    """Down (out x b + b) and up (b x out + out) after each placement, and the trained norms."""
    bottleneck = m.bottleneck or s.hidden // m.reduction_factor
    adapters = sum(2 * fan_out * bottleneck + bottleneck + fan_out for _, _, fan_out in s.linears(m.placement))
    return s.layers * (adapters + s.norm_parameters * len(m.train_norms))


FORMULAS = {
    "full": lambda m, s, body: body,
    "head_only": lambda m, s, body: 0,
    "bitfit": lambda m, s, body: s.biases,
    "lora": lambda m, s, body: lora(m, s),
    "dora": lambda m, s, body: lora(m, s),
    "ia3": lambda m, s, body: ia3(m, s),
    "loha": lambda m, s, body: loha(m, s),
    "vera": lambda m, s, body: vera(m, s),
    "adapter": lambda m, s, body: adapter(m, s),
    "adapter_pfeiffer": lambda m, s, body: adapter(m, s),
    "prompt_tuning": lambda m, s, body: m.num_virtual_tokens * s.hidden,
    "prefix_tuning": lambda m, s, body: m.num_virtual_tokens * s.layers * 2 * s.key_value_width,  # keys and values
    "in_context": lambda m, s, body: 0,  # demonstrations in the prompt, no parameter
}


def expected_method_parameters(method: DictConfig, shapes: Shapes, body_parameters: int) -> int:
    """`params.method` for `method` on a tiny model: 0 where it trains nothing there (the run
    then refuses it unless the task has a head of its own)."""
    if method.name not in FORMULAS:
        pytest.fail(f"conf/method/{method.name}.yaml has no parameter formula: add one to FORMULAS in tests/method_counts.py")
    return FORMULAS[method.name](method, shapes, body_parameters)
