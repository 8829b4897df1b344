"""Typed configs (peftlab/config.py): a value of the wrong type or a key the schema lacks is
refused while the config composes, naming the key; what types cannot say (a key added with `+`,
a number below its minimum) is refused by `check_config` in one paragraph before anything
loads; every shipped task and quant file fills its schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from peftlab.config import check_config, config_dir, resolved
from peftlab.errors import ConfigError
from tests.conftest import compose_config


def shipped(group: str) -> list[str]:
    return sorted(path.stem for path in (Path(config_dir()) / group).glob("*.yaml"))


@pytest.mark.parametrize(
    "overrides, named",
    [
        (["trainer.batch_size=abc"], ["trainer.batch_size", "Integer"]),
        (["trainer.group_by_length=sometimes"], ["trainer.group_by_length"]),
        (["trainer.batch_sise=8"], ["trainer.batch_sise", "TrainerConfig"]),
        (["seed=first"], ["seed"]),
        (["quant=nf4", "quant.compute_dtype=bf16"], ["quant.compute_dtype", "bfloat16"]),
        (["quant=nf4", "quant.quant_storage=int4"], ["quant.quant_storage", "uint8"]),
        (["quant=nf4", "quant.double_quant=maybe"], ["quant.double_quant"]),
        (["quant=nf4", "quant.double_qaunt=true"], ["quant.double_qaunt"]),
        (["quant=int8", "quant.skip_modules=bert.pooler"], ["quant.skip_modules"]),
        (["task=sst2", "task.primary_metric=f1"], ["task.primary_metric", "accuracy, f1_macro"]),
        (["task=jsonl_gen", "task.normalize=[strip,lowercase]"], ["task.normalize", "lowercase", "squash_spaces"]),
        (["task=jsonl_gen", "task.max_new_tokens=many"], ["task.max_new_tokens"]),
        (["task=wnut17", "task.data.validation_fraction=most"], ["task.data.validation_fraction"]),
        (["task=banking77_gen", "task.template.answer=x"], ["task.template.answer"]),
    ],
)
def test_a_wrong_type_or_an_unknown_key_is_refused_while_the_config_composes(overrides, named):
    with pytest.raises(ConfigCompositionException) as refused:
        compose_config(overrides)
    message = f"{refused.value} {refused.value.__cause__}"  # what Hydra prints
    assert all(fragment in message for fragment in named), message


@pytest.mark.parametrize(
    "overrides, named",
    [
        (["trainer.batch_size=0"], ["trainer.batch_size=0 must be >= 1"]),
        (["trainer.lr=0"], ["trainer.lr=0.0 must be > 0"]),
        (["trainer.grad_accum=0", "trainer.eval_batch_size=0"], ["trainer.grad_accum=0", "trainer.eval_batch_size=0"]),
        (["trainer.epochs=0"], ["trainer.epochs=0 must be > 0", "trainer.max_steps"]),
        (["+trainer.batch_sise=8"], ["trainer.batch_sise is not a setting of trainer", "did you mean trainer.batch_size"]),
        (["quant=nf4", "+quant.double_qaunt=true"], ["quant.double_qaunt", "quant.double_quant", "compute_dtype"]),
        (["quant=int8", "+quant.double_quant=true"], ["quant.double_quant", "outlier_threshold"]),
        (["quant=none", "+quant.compute_dtype=float32"], ["quant.compute_dtype", "bits"]),
        (["quant=int8", "quant.outlier_threshold=-1"], ["quant.outlier_threshold=-1.0 must be >= 0"]),
        (["+task.data.hub_colums={}"], ["task.data.hub_colums", "did you mean task.data.hub_columns"]),
        (["task.max_train_samples=0"], ["task.max_train_samples=0 must be >= 1"]),
        (["task=jsonl_gen", "task.max_new_tokens=0"], ["task.max_new_tokens=0 must be >= 1"]),
        (["task=jsonl_gen", "task.loss_batch_tokens=0"], ["task.loss_batch_tokens=0 must be >= 1"]),
    ],
)
def test_what_types_let_through_is_refused_in_one_paragraph_naming_the_keys(overrides, named):
    with pytest.raises(ConfigError) as refused:
        check_config(compose_config(overrides))
    message = str(refused.value)
    assert all(fragment in message for fragment in named), message
    assert "\n" not in message


def test_epochs_do_not_matter_when_max_steps_bounds_training():
    check_config(compose_config(["trainer.epochs=0", "trainer.max_steps=10"]))


def test_trainer_extra_stays_free_for_training_arguments():
    cfg = compose_config(["+trainer.extra.optim=adafactor", "+trainer.extra.max_grad_norm=0.5"])
    check_config(cfg)
    assert dict(cfg.trainer.extra) == {"optim": "adafactor", "max_grad_norm": 0.5}


def test_a_value_that_does_not_resolve_is_refused_naming_its_key():
    with pytest.raises(ConfigError, match=r"task.data.format.*Missing mandatory value"):
        resolved(compose_config(["task=jsonl_gen", "task.data.format=???"]))


@pytest.mark.parametrize("task", shipped("task"))
def test_every_task_file_fills_the_schema_of_its_kind(task):
    node = compose_config([f"task={task}"]).task
    assert OmegaConf.get_type(node).__module__ == "peftlab.config"
    assert OmegaConf.missing_keys(node) == set(), f"conf/task/{task}.yaml leaves keys unset"


@pytest.mark.parametrize("quant", shipped("quant"))
def test_every_quant_file_fills_the_schema_of_its_bits(quant):
    from peftlab.config import QUANT_KINDS

    node = compose_config([f"quant={quant}"]).quant
    assert QUANT_KINDS[OmegaConf.get_type(node)] == node.bits
    assert OmegaConf.missing_keys(node) == set(), f"conf/quant/{quant}.yaml leaves keys unset"


def test_choices_reach_result_json_as_the_strings_the_files_say():
    config = resolved(compose_config(["quant=nf4", "task=jsonl_gen"]))
    assert config["quant"]["quant_type"] == "nf4" and config["quant"]["compute_dtype"] == "auto"
    assert config["task"]["normalize"] == ["strip", "casefold"] and config["task"]["primary_metric"] == "rouge_l"
    assert json.loads(json.dumps(config)) == config
