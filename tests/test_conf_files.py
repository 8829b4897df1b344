"""Every file under conf/ is tested because it is there, not because a list names it: each
backbone, method, task, quant, trainer, experiment and hparams_search file composes and resolves,
and names itself as its file does (that name lands in result.json); every value an experiment
sweeps composes; every backbone's slot map finds its layers in each block of a tiny model of its
architecture, built from a config without downloading anything."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf
from transformers import (
    BertConfig,
    BertModel,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    RobertaConfig,
    RobertaModel,
)

from peftlab.__main__ import config_dir
from peftlab.continual import REGIMES
from tests.conftest import TINY_DECODER, compose_config

GROUPS = ("backbone", "method", "task", "quant", "trainer", "experiment", "hparams_search")
NAMED = ("backbone", "method", "task", "quant")  # groups whose `name` is written into result.json
LAYERS = 2


def conf_files(group: str) -> list[str]:
    return sorted(path.stem for path in (Path(config_dir()) / group).glob("*.yaml"))


@pytest.mark.parametrize(("group", "name"), [(group, name) for group in GROUPS for name in conf_files(group)])
def test_every_conf_file_composes_resolves_and_names_itself(group, name):
    cfg = compose_config([f"{group}={name}"])
    resolved = OmegaConf.to_container(cfg, resolve=True)  # a broken ${...} raises here
    if group in NAMED:
        assert resolved[group]["name"] == name, f"conf/{group}/{name}.yaml says name: {resolved[group]['name']}"


def sweep_values(experiment: str) -> dict[str, list[str]]:
    """hydra.sweeper.params of an experiment: each key and the values it sweeps; for a protocol
    experiment (`python -m peftlab.protocol`), the methods and seeds it runs; for a continual one
    (`python -m peftlab.continual`), its tasks and its regimes' methods."""
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"experiment={experiment}"], return_hydra_config=True)
    if cfg.get("protocol") is not None:
        return {"method": list(cfg.protocol.methods), "seed": [str(seed) for seed in cfg.protocol.seeds]}
    if cfg.get("continual") is not None:
        methods = sorted({REGIMES[regime].method for regime in cfg.continual.regimes})
        return {"task": [stage.task for stage in cfg.continual.tasks], "method": methods}
    params = OmegaConf.to_container(cfg.hydra.sweeper.params)
    overrides = OverridesParser.create().parse_overrides([f"{key}={value}" for key, value in params.items()])
    return {
        override.key_or_group: list(override.sweep_string_iterator()) if override.is_sweep_override()
        else [override.get_value_element_as_str()]
        for override in overrides
    }


@pytest.mark.parametrize("experiment", conf_files("experiment"))
def test_every_value_an_experiment_sweeps_composes(experiment):
    """A typo in a swept method, or a swept key the config lacks, fails here, not an hour into
    the sweep."""
    swept = sweep_values(experiment)
    assert swept, f"conf/experiment/{experiment}.yaml sweeps nothing"
    for key, values in swept.items():
        for value in values:
            cfg = compose_config([f"experiment={experiment}", f"{key}={value}"])
            if key in NAMED:
                assert cfg[key].name == value


def tiny_bert() -> BertModel:
    return BertModel(BertConfig(vocab_size=40, hidden_size=32, num_hidden_layers=LAYERS, num_attention_heads=2,
                                intermediate_size=64, max_position_embeddings=64))


def tiny_roberta() -> RobertaModel:
    return RobertaModel(RobertaConfig(vocab_size=40, hidden_size=32, num_hidden_layers=LAYERS, num_attention_heads=2,
                                      intermediate_size=64, max_position_embeddings=66))


def tiny_llama() -> LlamaForCausalLM:
    return LlamaForCausalLM(LlamaConfig(vocab_size=40, max_position_embeddings=64, **TINY_DECODER))


def tiny_qwen2() -> Qwen2ForCausalLM:
    return Qwen2ForCausalLM(Qwen2Config(vocab_size=40, max_position_embeddings=64, **TINY_DECODER))


def tiny_gpt2() -> GPT2LMHeadModel:
    return GPT2LMHeadModel(GPT2Config(vocab_size=40, n_embd=32, n_inner=64, n_layer=LAYERS, n_head=4, n_positions=64))


# backbone file -> a tiny model of its architecture (RoBERTa and BERT-base share BERT's module
# names in their files, and are checked on their own architectures here)
FAMILIES = {
    "minilm": tiny_bert, "bert-base-cased": tiny_bert, "roberta-base": tiny_roberta,
    "smollm2": tiny_llama, "llama-3.2-1b": tiny_llama, "qwen2.5-0.5b": tiny_qwen2, "gpt2": tiny_gpt2,
}


def test_every_backbone_file_has_a_family_to_check_its_slots_on():
    assert set(conf_files("backbone")) == set(FAMILIES), "add the new backbone's architecture to FAMILIES"


@pytest.mark.parametrize("backbone", sorted(FAMILIES))
def test_each_slot_names_a_layer_in_every_block(backbone):
    """A slot is a regular expression matched against the end of a dotted module name
    (peftlab.methods); one that matches nothing, or only some blocks, would adapt the wrong
    layers or none."""
    slots = compose_config([f"backbone={backbone}"]).backbone.slots
    names = [name for name, _ in FAMILIES[backbone]().named_modules()]
    for slot, pattern in slots.items():
        matched = [name for name in names if re.search(rf"(^|\.){pattern}$", name)]
        blocks = {re.search(r"\.(\d+)\.", name).group(1) for name in matched}
        assert blocks == {str(block) for block in range(LAYERS)}, (slot, matched)
