"""The split rule every task kind shares (validation carved from train when missing, test
optional) and how a classification dataset's label set is fixed: read from the data, named by a
file such as Banking77's categories.json, or pinned by task.labels."""

from __future__ import annotations

import json

import pytest

from peftlab.data.labels import label_names, pinned_label_names
from peftlab.data.sources import arrange_splits
from peftlab.data.splits import carve_validation
from peftlab.errors import ConfigError, DataError
from peftlab.tasks import build_task
from tests.conftest import compose_config, write_csv

EXAMPLES = [{"text": f"example {i}", "label": str(i % 3)} for i in range(50)]


def examples(*labels: str) -> list[dict]:
    return [{"text": f"t{i}", "label": label} for i, label in enumerate(labels)]


# --- carving validation ------------------------------------------------------------------------

def test_carving_is_deterministic_disjoint_complete_and_keeps_file_order():
    train, validation = carve_validation(EXAMPLES, 0.2, seed=0)
    again_train, again_validation = carve_validation(EXAMPLES, 0.2, seed=0)
    assert (train, validation) == (again_train, again_validation)
    assert len(validation) == 10 and len(train) == 40
    texts = [e["text"] for e in train], [e["text"] for e in validation]
    assert not set(texts[0]) & set(texts[1])
    assert sorted(texts[0] + texts[1]) == sorted(e["text"] for e in EXAMPLES)
    order = {e["text"]: i for i, e in enumerate(EXAMPLES)}
    assert all(sorted(part, key=order.get) == part for part in texts)


def test_another_data_seed_holds_out_other_examples():
    assert carve_validation(EXAMPLES, 0.2, seed=0)[1] != carve_validation(EXAMPLES, 0.2, seed=1)[1]


def test_a_tiny_fraction_still_holds_out_one_example():
    assert len(carve_validation(EXAMPLES, 0.001, seed=0)[1]) == 1


@pytest.mark.parametrize("fraction", [0, 1, 1.5, -0.1])
def test_fraction_outside_zero_one_names_the_key(fraction):
    with pytest.raises(ConfigError, match="task.data.validation_fraction"):
        carve_validation(EXAMPLES, fraction, seed=0)


def test_too_few_examples_to_carve_from_is_explained():
    with pytest.raises(DataError, match="too few to carve"):
        carve_validation(EXAMPLES[:1], 0.5, seed=0)


def test_arrange_carves_a_missing_validation_says_so_and_leaves_a_missing_test_missing():
    task = compose_config(["task=classification", "task.data.validation_fraction=0.2", "task.data_seed=3"]).task
    arranged, notes = arrange_splits({"train": EXAMPLES}, task)
    assert list(arranged) == ["train", "validation"]
    assert arranged["validation"] == carve_validation(EXAMPLES, 0.2, seed=3)[1]
    assert len(notes) == 1 and "10 of 50" in notes[0] and "task.data.validation_fraction=0.2" in notes[0]


def test_arrange_keeps_given_splits_and_subsamples_them():
    task = compose_config(["task=classification", "task.max_train_samples=5", "task.max_eval_samples=4"]).task
    arranged, notes = arrange_splits({"train": EXAMPLES, "validation": EXAMPLES[:10], "test": EXAMPLES[10:20]}, task)
    assert [len(arranged[s]) for s in ("train", "validation", "test")] == [5, 4, 4] and notes == []


# --- label sets --------------------------------------------------------------------------------

def test_integer_labels_read_from_train_sort_numerically():
    splits = {"train": examples("10", "2", "0", "2"), "test": examples("0", "10")}
    assert label_names(splits, None, "here") == ["0", "2", "10"]


def test_string_labels_read_from_train_sort_alphabetically():
    assert label_names({"train": examples("pos", "neg", "neutral")}, None, "here") == ["neg", "neutral", "pos"]


def test_label_in_test_that_train_lacks_is_named():
    splits = {"train": examples("neg", "pos"), "test": examples("pos", "mixed")}
    with pytest.raises(DataError) as raised:
        label_names(splits, None, "task.data.path=/data")
    message = str(raised.value)
    assert "'test'" in message and "['mixed']" in message and "task.labels" in message


def test_pinned_names_fix_the_order_and_admit_classes_train_lacks():
    splits = {"train": examples("b", "a"), "test": examples("c")}
    assert label_names(splits, (["c", "b", "a"], "task.labels"), "here") == ["c", "b", "a"]


def test_integer_labels_index_pinned_names():
    splits = {"train": examples("0", "1", "1"), "test": examples("1")}
    names = label_names(splits, (["negative", "positive"], "task.labels"), "here")
    assert names == ["negative", "positive"]
    assert [e["label"] for e in splits["train"]] == ["negative", "positive", "positive"]


def test_integer_label_beyond_the_names_is_named():
    with pytest.raises(DataError, match=r"integer labels \['2'\] outside the 2 names"):
        label_names({"train": examples("0", "2")}, (["negative", "positive"], "task.labels"), "here")


def test_one_label_is_no_classification_task():
    with pytest.raises(DataError, match="at least two"):
        label_names({"train": examples("pos", "pos")}, None, "here")


def test_task_labels_pin_the_set(tmp_path):
    task = compose_config(["task=classification", f"task.data.path={tmp_path}", "task.labels=[neg,pos]"]).task
    assert pinned_label_names(task) == (["neg", "pos"], "task.labels")


def test_label_names_file_is_read_from_the_data_folder(tmp_path):
    (tmp_path / "categories.json").write_text(json.dumps(["card_arrival", "refund"]))
    task = compose_config(["task=banking77", f"task.data.path={tmp_path}"]).task
    names, origin = pinned_label_names(task)
    assert names == ["card_arrival", "refund"] and "categories.json" in origin


def test_a_hub_dataset_names_its_own_labels_so_the_file_is_not_read():
    assert pinned_label_names(compose_config(["task=banking77"]).task) is None


@pytest.mark.parametrize(
    "content, fragment",
    [(None, "cannot read the label names file"), ("[1, 2]", "JSON list of label names"), ("[\"a\",", "not valid JSON"),
     ('["a", "a"]', "more than once")],
)
def test_bad_label_names_file_is_explained(tmp_path, content, fragment):
    if content is not None:
        (tmp_path / "categories.json").write_text(content)
    task = compose_config(["task=banking77", f"task.data.path={tmp_path}"]).task
    with pytest.raises((DataError, ConfigError), match=fragment):
        pinned_label_names(task)


# --- through the task, from files --------------------------------------------------------------

def prepared_task(*overrides: str):
    task = build_task(compose_config(["task=classification", *overrides]).task)
    return task, task.prepare_data()


def test_jsonl_integer_labels_become_strings_and_a_missing_dev_is_carved(tmp_path):
    rows = [{"text": f"sentence {i}", "label": i % 2} for i in range(20)]
    (tmp_path / "train.jsonl").write_text("\n".join(json.dumps(row) for row in rows))
    task, splits = prepared_task(f"task.data.path={tmp_path}", "task.data.format=jsonl")
    assert task.labels == ["0", "1"] and list(splits) == ["train", "validation"]
    assert len(splits["validation"]) == 2 and "held out as validation" in task.notes[0]


def test_categories_file_names_the_labels_of_a_csv(tmp_path):
    write_csv(tmp_path / "train.csv", ["text", "category"], [("where is my card", "card_arrival"), ("money back", "refund")] * 5)
    write_csv(tmp_path / "test.csv", ["text", "category"], [("card?", "card_arrival")])
    (tmp_path / "categories.json").write_text(json.dumps(["refund", "card_arrival", "top_up"]))
    task, splits = prepared_task(
        f"task.data.path={tmp_path}", "task.data.columns.label=category", "task.data.label_names_file=categories.json"
    )
    assert task.labels == ["refund", "card_arrival", "top_up"] and splits["test"][0]["label"] == "card_arrival"


def test_a_label_column_with_json_lists_is_refused_by_example(tmp_path):
    (tmp_path / "train.jsonl").write_text('{"text": "a", "label": 1}\n{"text": "b", "label": [0]}\n')
    with pytest.raises(DataError, match=r"example 2 of the 'train' split .* has label \[0\]"):
        prepared_task(f"task.data.path={tmp_path}", "task.data.format=jsonl")
