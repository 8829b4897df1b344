"""What a run saves is what it trained: loading the checkpoint onto a fresh base gives back
the trained model's outputs, and the checkpoint holds only what the method trains."""

from __future__ import annotations

import pytest
import torch

from peftlab.checkpoint import TRAINABLE_FILE, load_trained, save_trained
from peftlab.run import make_trainer, prepare


def logits(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(**batch).logits


@pytest.mark.parametrize("method", ["lora", "head_only", "full"])
def test_save_then_load_onto_a_fresh_base_gives_identical_logits(method, tiny_config, tmp_path):
    cfg = tiny_config(f"method={method}", "trainer.max_steps=3", "trainer.lr=1e-2")
    prepared = prepare(cfg)
    make_trainer(cfg, prepared, tmp_path / "trainer").train()
    size = save_trained(prepared.model, tmp_path / "checkpoint")

    batch = prepared.task.collator(prepared.tokenizer)([prepared.encoded["test"][i] for i in range(4)])
    batch.pop("labels")
    restored = load_trained(prepare(cfg).model, tmp_path / "checkpoint")
    assert torch.allclose(logits(prepared.model, batch), logits(restored, batch), atol=1e-6)
    untrained = prepared.task.build_model(cfg.backbone, cfg.quant)
    assert not torch.allclose(logits(untrained, batch), logits(restored, batch), atol=1e-4)
    assert size > 0


def test_in_place_methods_save_exactly_the_trainable_tensors(tiny_config, tmp_path):
    from safetensors.torch import load_file

    prepared = prepare(tiny_config("method=head_only"))
    save_trained(prepared.model, tmp_path)
    saved = load_file(tmp_path / TRAINABLE_FILE)
    assert set(saved) == {"classifier.weight", "classifier.bias"}
    assert sum(t.numel() for t in saved.values()) == prepared.params.trainable


def test_loading_a_checkpoint_with_foreign_weights_is_refused(tiny_config, tmp_path):
    from safetensors.torch import save_file

    save_file({"not_a_layer.weight": torch.zeros(2)}, tmp_path / TRAINABLE_FILE)
    prepared = prepare(tiny_config("method=head_only"))
    with pytest.raises(ValueError, match="not_a_layer.weight"):
        load_trained(prepared.model, tmp_path)
