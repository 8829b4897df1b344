"""A GGUF backbone is converted once and read from the cache after; a changed file is
converted again; an interrupted conversion leaves nothing that looks like a cache. On a tiny
GGUF Llama the test writes, quantized and tied like SmolLM2's file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, GgufConfig

import peftlab.backbones
from peftlab.backbones import load_model, load_tokenizer, model_source
from peftlab.errors import ConfigError
from tests.conftest import compose_config, write_tiny_gguf

pytest.importorskip("gguf")
GGUF_NAME = "tiny.Q8_0.gguf"


@pytest.fixture
def gguf_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A config whose smollm2 backbone points at a tiny GGUF file, with a cache of its own."""
    folder = tmp_path / "package"
    folder.mkdir()
    write_tiny_gguf(folder / GGUF_NAME)
    monkeypatch.setenv("PEFTLAB_CACHE", str(tmp_path / "cache"))
    return compose_config(["backbone=smollm2", f"backbone.pretrained={folder}", f"backbone.gguf_file={GGUF_NAME}"])


@pytest.fixture
def conversions(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Records every real conversion's source file."""
    calls: list[Path] = []
    convert = peftlab.backbones.convert_gguf

    def counting(gguf: Path, destination: Path) -> None:
        calls.append(gguf)
        convert(gguf, destination)

    monkeypatch.setattr(peftlab.backbones, "convert_gguf", counting)
    return calls


def cached_folders(tmp_path: Path) -> list[str]:
    return sorted(path.name for path in (tmp_path / "cache" / "gguf").iterdir())


def test_the_first_load_converts_and_every_later_load_reads_the_cache(gguf_run, conversions, tmp_path):
    tokenizer = load_tokenizer(gguf_run.backbone)
    model = load_model(AutoModelForCausalLM, gguf_run.backbone, gguf_run.quant)
    later = load_model(AutoModelForCausalLM, gguf_run.backbone, gguf_run.quant)  # the next run, from the cache
    assert len(conversions) == 1
    assert later.state_dict().keys() == model.state_dict().keys()
    assert all(torch.equal(later.state_dict()[name], weight) for name, weight in model.state_dict().items())
    folder = Path(model_source(gguf_run.backbone))
    assert folder.parent == tmp_path / "cache" / "gguf" and folder.name.startswith("tiny.Q8_0-")
    assert (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()
    assert cached_folders(tmp_path) == [folder.name]  # no staging folder left behind

    assert model.lm_head.weight is model.model.embed_tokens.weight  # still tied after the round trip
    source = Path(gguf_run.backbone.pretrained)
    fresh = AutoModelForCausalLM.from_pretrained(
        source, gguf_file=GGUF_NAME, dtype=torch.float32, quantization_config=GgufConfig(dequantize=True)
    )
    ids = tokenizer("abc cab", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.equal(model(ids).logits, fresh(ids).logits)


def test_a_changed_file_is_converted_again(gguf_run, conversions, tmp_path):
    first = model_source(gguf_run.backbone)
    gguf = Path(gguf_run.backbone.pretrained) / GGUF_NAME
    write_tiny_gguf(gguf, seed=1)
    os.utime(gguf, ns=(gguf.stat().st_atime_ns, gguf.stat().st_mtime_ns + 10**9))
    second = model_source(gguf_run.backbone)
    assert first != second and len(conversions) == 2
    assert cached_folders(tmp_path) == sorted([Path(first).name, Path(second).name])


def test_an_interrupted_conversion_leaves_no_cache(gguf_run, monkeypatch, tmp_path):
    def interrupted(gguf: Path, destination: Path) -> None:
        (destination / "config.json").write_text("{}")  # half written, then the user presses Ctrl-C
        raise KeyboardInterrupt

    monkeypatch.setattr(peftlab.backbones, "convert_gguf", interrupted)
    with pytest.raises(KeyboardInterrupt):
        model_source(gguf_run.backbone)
    assert cached_folders(tmp_path) == []

    monkeypatch.undo()  # the next run converts for real
    monkeypatch.setenv("PEFTLAB_CACHE", str(tmp_path / "cache"))
    assert (Path(model_source(gguf_run.backbone)) / "model.safetensors").is_file()


def test_a_gguf_file_that_is_not_there_is_named(gguf_run):
    gguf_run.backbone.gguf_file = "missing.gguf"
    with pytest.raises(ConfigError, match="backbone.gguf_file='missing.gguf' is not a file"):
        model_source(gguf_run.backbone)
