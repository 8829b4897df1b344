"""result.json keeps its shape: the report, the benchmarks and users' own scripts read it, so
a tiny run must write exactly the keys, in the order and with the value types, that runs wrote
before the measured sections became typed records (recorded from commit 9da73cd), plus what
model selection on validation added since (the `selection` record and its trainer keys),
`config.protocol` and `config.continual` (null: a run records neither; protocol.json and
continual.json do), the held-out LM loss of a decoder (the `forgetting` record, empty unless
`forgetting.texts` is set, and its config keys), the resume keys
(`resume`, `overwrite`, `trainer.save_every`, `trainer.keep_checkpoints`), the data file
encoding and the backbone's `hub_id` and `trust_remote_code`. The method's own
settings (`config.method`) are left out: they are the method file's, not this schema's."""

from __future__ import annotations

import json
from typing import Any

import pytest

from peftlab.result import ADDED_CONFIG_KEYS, ADDED_KEYS, Result, ResultFileError, upgrade_result_json
from peftlab.run import execute
from tests.helpers import result

NUMBERS = {"base_total": "int", "trainable": "int", "method": "int", "head": "int", "trainable_pct": "float"}
NER_SCORES = {name: "float" for name in ("f1", "precision", "recall", "f1_LOC", "f1_MISC", "f1_ORG", "f1_PER")}
SHAPE_OF_A_TINY_RUN = {
    "status": "str", "task": "str", "dataset": "str", "method": "str", "backbone": "str", "quant": "str", "seed": "int",
    "error": "NoneType", "dataset_fingerprint": "str",
    "params": NUMBERS,
    "primary_metric": "str",
    "metrics": {"validation": {"loss": "float", **NER_SCORES}, "test": {"loss": "float", **NER_SCORES}},
    "data_sizes": {"train": "int", "validation": "int", "test": "int"},
    "history": [{"step": "int", "epoch": "float", "validation_loss": "float",
                 **{f"validation_{name}": kind for name, kind in NER_SCORES.items()}}],
    "timing": {"train_seconds": "float", "train_samples_per_second": "float", "train_tokens_per_second": "float",
               "eval_seconds": "float", "torch_threads": "int"},
    "memory": {"peak_rss_mb": "float", "peak_cuda_mb": "NoneType", "model_bytes": "int"},
    "checkpoint": {"path": "str", "size_bytes": "int"},
    "selection": {"metric": "str", "best_step": "int", "best_value": "float", "selected_step": "int", "last_step": "int",
                  "budget_steps": "int", "early_stopped": "bool"},
    "forgetting": {},  # measured only with forgetting.texts (tests/test_forgetting.py has its keys)
    "config": {
        "backbone": {"name": "str", "pretrained": "str", "hub_id": "str", "gguf_file": "NoneType", "revision": "NoneType",
                     "trust_remote_code": "bool", "tokenizer_kwargs": {}, "slots": {slot: "str" for slot in (
                         "attn_q", "attn_k", "attn_v", "attn_out", "ffn_in", "ffn_out", "attn_norm", "ffn_norm")},
                     "head_in_body": ["str"]},
        "task": {"name": "str", "kind": "str",
                 "data": {"format": "str", "path": "str", "hub_id": "str", "hub_config": "NoneType", "encoding": "str",
                          "columns": {"tokens": "str", "tags": "str"}, "hub_columns": "NoneType",
                          "validation_fraction": "float"},
                 "labels": "NoneType", "max_length": "int", "max_train_samples": "int", "max_eval_samples": "int",
                 "shots_per_class": "NoneType", "data_seed": "int"},
        "quant": {"name": "str", "bits": "NoneType"},
        "trainer": {"epochs": "int", "max_steps": "int", "batch_size": "int", "eval_batch_size": "int", "lr": "float",
                    "weight_decay": "float", "warmup": "float", "scheduler": "str", "grad_accum": "int",
                    "group_by_length": "bool", "shuffle_grouped_batches": "bool", "target_weighted_loss": "bool", "eval_strategy": "str", "eval_steps": "int", "logging_steps": "int",
                    "gradient_checkpointing": "bool", "progress_bar": "bool", "threads": "NoneType",
                    "select_best": "bool", "early_stopping_patience": "NoneType", "save_every": "int",
                    "keep_checkpoints": "int", "extra": {"use_cpu": "bool"}},
        "seed": "int",
        "protocol": "NoneType",
        "continual": "NoneType",
        "forgetting": {"texts": "NoneType", "max_texts": "int", "max_length": "int", "batch_size": "int"},
        "resume": "bool",
        "overwrite": "bool",
    },
    "versions": "dict", "git_sha": "str or None", "notes": [],
}
RECORDS = ("params", "timing", "memory", "checkpoint", "selection", "forgetting")


def shape(value: Any) -> Any:
    """Keys in order and value types, lists by their first element."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return type(value).__name__


def shape_of_result(written: dict) -> dict:
    found = shape(written)
    del found["config"]["method"]
    found["versions"] = "dict"
    found["git_sha"] = "str or None" if found["git_sha"] in ("str", "NoneType") else found["git_sha"]
    return found


@pytest.fixture
def tiny_run(tiny_config, tmp_path) -> dict:
    cfg = tiny_config(
        "method=lora", "trainer.max_steps=2", "trainer.eval_strategy=steps", "trainer.eval_steps=1",
        "trainer.select_best=true", "task.max_train_samples=8", "task.max_eval_samples=4",
    )
    execute(cfg, tmp_path)
    return json.loads((tmp_path / "result.json").read_text())


def test_a_tiny_run_writes_result_json_of_the_same_shape_as_before(tiny_run):
    assert shape_of_result(tiny_run) == SHAPE_OF_A_TINY_RUN
    assert list(tiny_run) == list(SHAPE_OF_A_TINY_RUN)  # the order too: people read the file


def test_result_json_reads_back_as_typed_records_and_writes_the_same_json(tiny_run, tmp_path):
    result = Result.from_json(tiny_run)
    assert result.params.trainable == result.params.method + result.params.head
    assert result.timing.train_seconds > 0 and result.memory.model_bytes > 0 and result.checkpoint.size_bytes > 0
    assert result.selection.selected_step == result.selection.best_step and result.selection.last_step == 2
    again = tmp_path / "again"
    again.mkdir()
    assert json.loads(result.write(again).read_text()) == tiny_run


def test_a_failed_run_writes_empty_sections_and_reads_back_without_records(tiny_config, tmp_path):
    with pytest.raises(Exception, match="trainer.lr"):
        execute(tiny_config("method=lora", "trainer.lr=-1"), tmp_path)
    written = json.loads((tmp_path / "result.json").read_text())
    assert written["status"] == "failed" and list(written) == list(SHAPE_OF_A_TINY_RUN)
    assert all(written[section] == {} for section in RECORDS) and written["metrics"] == {}
    result = Result.read(tmp_path / "result.json")
    assert all(getattr(result, section) is None for section in RECORDS)
    assert result.to_json() == written



ADDED_IN = [added for _, _, added, _ in ADDED_KEYS]  # commits, oldest first


def written_before(data: dict, commit: str) -> dict:
    """`data` as a peftlab from before `commit` wrote it: without the keys added at or after it."""
    older = json.loads(json.dumps(data))
    for key, section, added, _ in ADDED_KEYS:
        if ADDED_IN.index(added) >= ADDED_IN.index(commit):
            (older if section is None else older[section]).pop(key)
    return older


def at(data: dict, key: str, section: str | None):
    return data[key] if section is None else data[section][key]


def test_every_older_shape_reads_with_the_keys_it_lacks_as_not_recorded(tiny_run):
    for commit in dict.fromkeys(ADDED_IN):
        older = Result.from_json(written_before(tiny_run, commit)).to_json()
        assert list(older) == list(SHAPE_OF_A_TINY_RUN), commit  # written back in today's shape
        for key, section, added, not_recorded in ADDED_KEYS:
            lacked = ADDED_IN.index(added) >= ADDED_IN.index(commit)
            assert at(older, key, section) == (not_recorded if lacked else at(tiny_run, key, section)), (commit, key)
        upgraded = {key for key, section, *_ in ADDED_KEYS if section is None} | {"timing", "memory"}
        assert {key: value for key, value in older.items() if key not in upgraded} == {
            key: value for key, value in tiny_run.items() if key not in upgraded
        }, commit
        assert older["timing"]["train_seconds"] == tiny_run["timing"]["train_seconds"], commit


def test_upgrading_leaves_a_failed_runs_empty_sections_empty():
    failed = {"status": "failed", "error": "boom", "task": "t", "dataset": "d", "method": "m", "backbone": "b",
              "quant": "none", "seed": 0, "params": {}, "primary_metric": None, "metrics": {}, "history": [],
              "timing": {}, "memory": {}, "checkpoint": {}, "config": {}, "versions": {}, "git_sha": None}
    upgraded = upgrade_result_json(failed)
    assert upgraded["timing"] == {} and upgraded["memory"] == {} and upgraded["selection"] == {}
    assert Result.from_json(failed).timing is None and "notes" not in failed  # the caller's dict is not changed


@pytest.mark.parametrize("dotted", [dotted for dotted, *_ in ADDED_CONFIG_KEYS])
def test_a_config_key_added_later_reads_as_the_setting_older_runs_used(tiny_run, dotted):
    *sections, key = dotted.split(".")
    older = json.loads(json.dumps(tiny_run))
    parent = older["config"]
    for section in sections:
        parent = parent[section]
    parent.pop(key)
    upgraded = Result.from_json(older).config
    for section in sections:
        upgraded = upgraded[section]
    assert key in upgraded and upgraded[key] is None  # what the feature-off setting is today
    assert key not in parent  # the caller's dict is not changed


def test_a_config_without_the_section_stays_without_it():
    config = {"seed": 0, "trainer": {"lr": 1e-3}}
    assert upgrade_result_json({"config": config})["config"] == config


WRONG = {  # how a file is broken -> the words that must name the key
    "a count as text": (lambda data: data["params"].update(trainable="12"), 'params.trainable is "12", expected an integer'),
    "a boolean seed": (lambda data: data.update(seed=True), "seed is true, expected an integer"),
    "a metric as text": (lambda data: data["metrics"]["test"].update(f1="0.8"), 'metrics.test.f1 is "0.8", expected a number'),
    "notes as text": (lambda data: data.update(notes="none"), 'notes is "none", expected a list'),
    "a history point": (lambda data: data["history"][0].update(step=None), "history[0].step is null, expected a number"),
    "a section as a number": (lambda data: data.update(timing=3), "timing is 3, expected an object"),
    "a missing key": (lambda data: data.pop("history"), "missing history"),
    "a missing record key": (lambda data: data["memory"].pop("peak_rss_mb"), "missing memory.peak_rss_mb"),
    "an unknown key": (lambda data: data["timing"].update(gpu_seconds=1.0), "unknown key timing.gpu_seconds"),
    "an unknown status": (lambda data: data.update(status="done"), "unknown status 'done' (expected ok or failed)"),
}


@pytest.mark.parametrize("broken", sorted(WRONG))
def test_a_wrong_key_is_refused_naming_the_file_and_the_key(tmp_path, broken):
    breaks, words = WRONG[broken]
    data = result("lora", 0, 0.8, history=[{"step": 10, "validation_f1": 0.7}])
    Result.from_json(data)  # whole, it reads
    breaks(data)
    path = tmp_path / "result.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ResultFileError) as refused:
        Result.read(path)
    assert words in refused.value.problem and str(refused.value).startswith(f"{path}: ")
