"""`python -m peftlab` as a user runs it: a real run, and bad input answered with one clear
paragraph and a non-zero exit, never a traceback."""

from __future__ import annotations

import json

import pytest

from tests.conftest import TINY_SENTENCES, write_conll
from tests.helpers import assert_clean_error, peftlab


def test_a_tiny_run_writes_result_json_where_it_says(tiny_backbone, tiny_ner_dir, tmp_path):
    run_dir = tmp_path / "run"
    completed = peftlab(
        "task=conll2003", f"task.data.path={tiny_ner_dir}", f"backbone.pretrained={tiny_backbone}",
        "method=head_only", "trainer=smoke", "seed=7", f"hydra.run.dir={run_dir}", cwd=tmp_path,
    )
    assert completed.returncode == 0, completed.stderr
    assert f"result: {run_dir / 'result.json'}" in completed.stdout
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "ok" and result["seed"] == 7 and result["method"] == "head_only"
    assert result["dataset"] == tiny_ner_dir.name  # a name, not this machine's path


def test_unknown_method_lists_the_options(tmp_path):
    assert_clean_error(peftlab("method=lorra", cwd=tmp_path), "method", "lora", "head_only")


def test_unknown_task_and_backbone_list_the_options(tmp_path):
    assert_clean_error(peftlab("task=nerr", cwd=tmp_path), "wnut17")
    assert_clean_error(peftlab("backbone=bert", cwd=tmp_path), "minilm")


def test_missing_data_path_names_the_key(tmp_path):
    completed = peftlab("task=wnut17", f"task.data.path={tmp_path / 'nowhere'}", cwd=tmp_path)
    assert_clean_error(completed, "task.data.path", "nowhere")
    assert completed.returncode == 2


def test_malformed_conll_line_names_file_and_line(tmp_path):
    write_conll(tmp_path / "train.txt", TINY_SENTENCES[:2])
    lines = (tmp_path / "train.txt").read_text().splitlines()
    lines[4] = "brokenline"
    (tmp_path / "train.txt").write_text("\n".join(lines))
    for name in ("dev.txt", "test.txt"):
        write_conll(tmp_path / name, TINY_SENTENCES[:2])
    completed = peftlab("task=wnut17", f"task.data.path={tmp_path}", cwd=tmp_path)
    assert_clean_error(completed, "train.txt", "5")


def test_missing_train_split_is_named(tiny_ner_dir, tmp_path):
    (tiny_ner_dir / "train.txt").unlink()
    completed = peftlab("task=wnut17", f"task.data.path={tiny_ner_dir}", cwd=tmp_path)
    assert_clean_error(completed, "no training file", "dev.txt", "test.txt")
    assert completed.returncode == 2


def test_missing_dev_split_is_carved_from_train_and_result_json_says_so(tiny_backbone, tiny_ner_dir, tmp_path):
    (tiny_ner_dir / "dev.txt").unlink()
    run_dir = tmp_path / "run"
    completed = peftlab(
        "task=wnut17", f"task.data.path={tiny_ner_dir}", f"backbone.pretrained={tiny_backbone}", "method=head_only",
        "trainer=smoke", "task.data.validation_fraction=0.25", f"hydra.run.dir={run_dir}", cwd=tmp_path,
    )
    assert completed.returncode == 0, completed.stderr
    result = json.loads((run_dir / "result.json").read_text())
    assert result["metrics"]["validation"]["f1"] is not None and result["metrics"]["test"] is not None
    assert any("4 of 16 training examples were held out as validation" in note for note in result["notes"])


def test_classification_run_without_test_reports_validation_accuracy_and_says_so(tiny_backbone, tiny_cls_dir, tmp_path):
    (tiny_cls_dir / "test.csv").unlink()
    run_dir = tmp_path / "run"
    completed = peftlab(
        "task=classification", f"task.data.path={tiny_cls_dir}", f"backbone.pretrained={tiny_backbone}",
        "method=lora", "trainer=smoke", f"hydra.run.dir={run_dir}", cwd=tmp_path,
    )
    assert completed.returncode == 0, completed.stderr
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "ok" and result["task"] == "classification"
    assert result["primary_metric"] == "accuracy"
    assert {"accuracy", "f1_macro", "loss"} <= result["metrics"]["validation"].keys()
    assert result["metrics"]["test"] is None
    assert any("no test split" in note for note in result["notes"])
    assert result["params"]["head"] == 32 * 32 + 32 + 32 * 2 + 2  # pooler + classifier


def test_missing_column_names_the_key_and_the_columns_found(tiny_cls_dir, tmp_path):
    completed = peftlab("task=banking77", f"task.data.path={tiny_cls_dir}", cwd=tmp_path)
    assert_clean_error(completed, "task.data.columns.label='category'", "['text', 'label']", "train.csv")
    assert completed.returncode == 2


def test_unreadable_csv_row_names_file_and_line(tiny_cls_dir, tmp_path):
    with (tiny_cls_dir / "dev.csv").open("a") as file:
        file.write('"an unclosed quote,person\n')
    completed = peftlab("task=classification", f"task.data.path={tiny_cls_dir}", cwd=tmp_path)
    assert_clean_error(completed, "dev.csv:18")


def test_empty_dataset_is_refused(tmp_path):
    for name in ("train.txt", "dev.txt", "test.txt"):
        (tmp_path / name).write_text("-DOCSTART- -X- -X- O\n\n")
    assert_clean_error(peftlab("task=wnut17", f"task.data.path={tmp_path}", cwd=tmp_path), "train.txt")


def test_out_of_range_trainer_value_names_the_key(tmp_path):
    assert_clean_error(peftlab("trainer.batch_size=0", cwd=tmp_path), "trainer.batch_size")


def test_a_value_of_the_wrong_type_is_refused_by_hydra_naming_the_key_and_the_choices(tmp_path):
    assert_clean_error(peftlab("trainer.batch_size=abc", cwd=tmp_path), "trainer.batch_size", "Integer")
    assert_clean_error(peftlab("quant=nf4", "quant.quant_type=nf5", cwd=tmp_path), "quant.quant_type", "nf4, fp4")


def test_a_key_added_with_plus_that_the_schema_lacks_is_one_paragraph_naming_it(tmp_path):
    completed = peftlab("+trainer.batch_sise=8", cwd=tmp_path)
    assert_clean_error(completed, "trainer.batch_sise", "did you mean trainer.batch_size")
    assert completed.returncode == 2


@pytest.mark.parametrize("override", ["trainer.epochs=1", "trainer.lr=0.001", "task.max_train_samples=10",
                                      "task.max_eval_samples=10", "trainer.max_steps=2", "seed=1"])
def test_documented_overrides_compose(override):
    from tests.conftest import compose_config

    cfg = compose_config([override])
    key, value = override.split("=")
    node = cfg
    for part in key.split(".")[:-1]:
        node = node[part]
    assert str(node[key.split(".")[-1]]) == value
