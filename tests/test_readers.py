"""Readers for `LABEL text` lines, CSV, TSV and JSON Lines, and the column mapping they share,
on files the test writes as they are found in the wild: BOM, CRLF, tabs, quoted commas and
line breaks, blank lines, broken rows. Real datasets are read in place by the slow tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from peftlab.data.columns import Table, select_columns
from peftlab.data.jsonl import read_jsonl, read_jsonl_dir
from peftlab.data.label_text import read_label_text, read_label_text_dir
from peftlab.data.table import read_csv, read_csv_dir, read_tsv
from peftlab.errors import DataError
from tests.conftest import compose_config, shared_data


def write(path: Path, text: str) -> Path:
    """Bytes exactly as given: no newline translation, so CRLF and BOM tests mean what they say."""
    path.write_bytes(text.encode("utf-8"))
    return path


def raised(call, *args) -> str:
    with pytest.raises(DataError) as error:
        call(*args)
    return str(error.value)


# --- LABEL text --------------------------------------------------------------------------------

def test_label_text_splits_on_the_first_tab_or_run_of_spaces_and_keeps_the_rest(tmp_path):
    path = write(tmp_path / "train.txt", "1 a stirring , funny film\n0\tdull ,  flat\tand long\n2   fine\n")
    assert read_label_text(path) == [
        {"label": "1", "text": "a stirring , funny film"},
        {"label": "0", "text": "dull ,  flat\tand long"},
        {"label": "2", "text": "fine"},
    ]


def test_label_text_skips_blank_lines_and_tolerates_bom_and_crlf(tmp_path):
    path = write(tmp_path / "train.txt", "\ufeff1 good\r\n\r\n  \r\n0 bad\r\n")
    assert read_label_text(path) == [{"label": "1", "text": "good"}, {"label": "0", "text": "bad"}]


def test_label_text_line_without_text_names_file_and_line(tmp_path):
    path = write(tmp_path / "train.txt", "1 good\n\n0\n1 fine\n")
    message = raised(read_label_text, path)
    assert f"{path}:3:" in message and "no text" in message and "'0'" in message


def test_label_text_folder_names_an_empty_split_file(tmp_path):
    write(tmp_path / "train.txt", "1 good\n0 bad\n")
    write(tmp_path / "test.txt", "\n\n")
    message = raised(read_label_text_dir, tmp_path)
    assert "test.txt (the test split) has no examples" in message


# --- CSV ---------------------------------------------------------------------------------------

def test_csv_rows_are_keyed_by_the_header_with_quoted_commas_and_quotes(tmp_path):
    path = write(tmp_path / "train.csv", 'text,category\n"Hi, where is my card?",card_arrival\n"He said ""no""",refund\n')
    table = read_csv(path)
    assert table.columns == ["text", "category"]
    assert table.rows == [
        {"text": "Hi, where is my card?", "category": "card_arrival"},
        {"text": 'He said "no"', "category": "refund"},
    ]


def test_csv_quoted_field_may_span_lines_and_later_line_numbers_stay_true(tmp_path):
    text = 'text,category\n"first line\nsecond line",a\nplain,b\n"one\n\ntwo blank",c\nbroken,row,here\n'
    path = write(tmp_path / "train.csv", text)
    message = raised(read_csv, path)
    assert f"{path}:8:" in message  # the bad row is the 5th record but starts on line 8
    assert "3 fields but the header has 2" in message
    fixed = write(tmp_path / "fixed.csv", text.replace("broken,row,here\n", ""))
    table = read_csv(fixed)
    assert [row["text"] for row in table.rows] == ["first line\nsecond line", "plain", "one\n\ntwo blank"]
    assert table.lines == [2, 4, 5]


def test_csv_bom_does_not_stick_to_the_first_column_name_and_crlf_is_read(tmp_path):
    path = write(tmp_path / "train.csv", "\ufefftext,label\r\nhello,1\r\n\r\n\"two\r\nlines\",0\r\n")
    table = read_csv(path)
    assert table.columns == ["text", "label"]
    assert [row["label"] for row in table.rows] == ["1", "0"]


def test_csv_unclosed_quote_names_the_line_where_the_row_starts(tmp_path):
    path = write(tmp_path / "train.csv", 'text,label\nfine,1\n"never closed,0\nmore,1\n')
    message = raised(read_csv, path)
    assert f"{path}:3 (the row runs to line 4)" in message and "cannot be parsed" in message


def test_csv_text_after_a_closing_quote_is_a_bad_row(tmp_path):
    path = write(tmp_path / "train.csv", 'text,label\n"quoted"tail,1\n')
    assert f"{path}:2:" in raised(read_csv, path)


def test_csv_header_only_file_is_an_empty_split_named_by_file(tmp_path):
    write(tmp_path / "train.csv", "text,label\nhello,1\n")
    write(tmp_path / "dev.csv", "text,label\n")
    message = raised(read_csv_dir, tmp_path)
    assert "dev.csv (the validation split) has no rows below the header" in message


def test_csv_header_naming_a_column_twice_is_refused(tmp_path):
    path = write(tmp_path / "train.csv", "text,label,text\na,1,b\n")
    assert f"{path}:1:" in raised(read_csv, path)


# --- TSV ---------------------------------------------------------------------------------------

def test_tsv_reads_tab_separated_fields_with_quotes_as_text(tmp_path):
    path = write(tmp_path / "train.tsv", 'Quality\t#1 String\t#2 String\n1\t"Yes," he said.\tHe agreed, "yes".\n')
    assert read_tsv(path).rows == [{"Quality": "1", "#1 String": '"Yes," he said.', "#2 String": 'He agreed, "yes".'}]


def test_tsv_row_with_a_missing_field_names_file_and_line(tmp_path):
    path = write(tmp_path / "dev.tsv", "label\ttext\n1\tgood\n\n0 bad\n")
    message = raised(read_tsv, path)
    assert f"{path}:4:" in message and "1 fields but the header has 2" in message


# --- JSON Lines --------------------------------------------------------------------------------

def test_jsonl_keeps_json_types_and_skips_blank_lines(tmp_path):
    path = write(tmp_path / "train.jsonl", '\ufeff{"text": "good", "label": 1}\r\n\r\n{"text": "bad", "label": 0, "id": 7}\n')
    table = read_jsonl(path)
    assert table.rows == [{"text": "good", "label": 1}, {"text": "bad", "label": 0, "id": 7}]
    assert table.columns is None and table.lines == [1, 3]


def test_jsonl_bad_json_names_file_and_line(tmp_path):
    path = write(tmp_path / "train.jsonl", '{"text": "good", "label": 1}\n{"text": "bad", label: 0}\n')
    message = raised(read_jsonl, path)
    assert f"{path}:2:" in message and "not valid JSON" in message


@pytest.mark.parametrize("line, kind", [('["good", 1]', "an array"), ('"good"', "a string"), ("3", "a number")])
def test_jsonl_line_that_is_not_an_object_names_file_line_and_what_it_holds(tmp_path, line, kind):
    path = write(tmp_path / "train.jsonl", f'{{"text": "fine", "label": 1}}\n{line}\n')
    message = raised(read_jsonl, path)
    assert f"{path}:2:" in message and f"holds {kind}, not an object" in message


def test_jsonl_folder_refuses_a_file_of_blank_lines(tmp_path):
    write(tmp_path / "train.jsonl", '{"text": "good", "label": 1}\n')
    write(tmp_path / "test.jsonl", "\n")
    assert "test.jsonl (the test split) has no JSON objects" in raised(read_jsonl_dir, tmp_path)


# --- column mapping ----------------------------------------------------------------------------

def test_columns_map_to_canonical_names_and_null_columns_are_not_read(tmp_path):
    table = read_csv(write(tmp_path / "train.csv", "sentence1,sentence2,gold,id\na,b,yes,1\n"))
    columns = {"text": "sentence1", "text_pair": "sentence2", "label": "gold", "unused": None}
    assert select_columns(table, columns) == [{"text": "a", "text_pair": "b", "label": "yes"}]


def test_unknown_column_names_the_key_the_column_the_columns_found_and_the_file(tmp_path):
    path = write(tmp_path / "train.csv", "text,category\nhello,card_arrival\n")
    message = raised(select_columns, read_csv(path), {"text": "text", "label": "label"})
    assert "task.data.columns.label='label'" in message
    assert "['text', 'category']" in message and str(path) in message


def test_jsonl_line_missing_a_key_is_named_by_line(tmp_path):
    path = write(tmp_path / "train.jsonl", '{"text": "a", "label": 1}\n\n{"txt": "b", "label": 0}\n')
    message = raised(select_columns, read_jsonl(path), {"text": "text", "label": "label"})
    assert f"{path}:3" in message and "task.data.columns.text='text'" in message and "['txt', 'label']" in message


@pytest.mark.parametrize("data_format, name", [("csv", "train.csv"), ("jsonl", "train.jsonl"), ("label_text", "train.txt")])
def test_task_data_encoding_reaches_every_reader_of_a_folder(tmp_path, data_format, name):
    from peftlab.data.sources import load_splits

    text = {
        "csv": "text,label\ncaf\u00e9 cr\u00e8me,1\n", "jsonl": '{"text": "caf\u00e9 cr\u00e8me", "label": 1}\n',
        "label_text": "1 caf\u00e9 cr\u00e8me\n",
    }[data_format]
    (tmp_path / name).write_bytes(text.encode("cp1252"))
    data = compose_config(["task=classification", f"task.data.path={tmp_path}", f"task.data.format={data_format}"]).task.data
    assert "not valid UTF-8" in raised(load_splits, data)
    data.encoding = "cp1252"
    assert load_splits(data)["train"][0]["text"] == "caf\u00e9 cr\u00e8me"


def test_generic_mapping_carries_whatever_keys_a_task_kind_names():
    table = Table("memory", [{"question": "2+2?", "answer": "4"}], ["question", "answer"])
    assert select_columns(table, {"prompt": "question", "completion": "answer"}) == [{"prompt": "2+2?", "completion": "4"}]


# --- hub datasets, faked in memory: the same mapping, ClassLabel names, hidden test labels -------

@pytest.fixture
def fake_hub(monkeypatch):
    """`datasets.load_dataset` answering with an in-memory GLUE-like dataset: the test split's
    labels are hidden (-1), as GLUE and the hub's SST-2 ship them."""
    import datasets

    features = datasets.Features(
        {"idx": datasets.Value("int32"), "sentence": datasets.Value("string"),
         "label": datasets.ClassLabel(names=["negative", "positive"])}
    )

    def split(labels: list[int]) -> datasets.Dataset:
        rows = {"idx": list(range(len(labels))), "sentence": [f"s{i}" for i in range(len(labels))], "label": labels}
        return datasets.Dataset.from_dict(rows, features=features)

    loaded = datasets.DatasetDict({"train": split([0, 1, 1]), "validation": split([1, 0]), "test": split([-1, -1])})
    monkeypatch.setattr(datasets, "load_dataset", lambda hub_id, config=None: loaded)


def test_hub_columns_map_the_hub_schema_and_hidden_test_labels_leave_test_out(fake_hub):
    from peftlab.data.sources import load_splits

    splits = load_splits(compose_config(["task=sst2"]).task.data)
    assert list(splits) == ["train", "validation"]
    assert splits["train"] == [
        {"text": "s0", "label": "negative"}, {"text": "s1", "label": "positive"}, {"text": "s2", "label": "positive"},
    ]


def test_hub_column_that_does_not_exist_names_the_key_and_the_hub_columns(fake_hub):
    from peftlab.data.sources import load_splits

    data = compose_config(["task=sst2", "task.data.hub_columns.text=text"]).task.data
    message = raised(load_splits, data)
    assert "task.data.hub_columns.text='text'" in message and "['idx', 'sentence', 'label']" in message
    assert "stanfordnlp/sst2" in message


# --- real data (slow) --------------------------------------------------------------------------

@pytest.mark.slow
def test_real_sst2_reads_with_published_counts_and_two_labels():
    splits = read_label_text_dir(shared_data("sst2"))
    assert {split: len(examples) for split, examples in splits.items()} == {"train": 6920, "validation": 872, "test": 1821}
    assert {example["label"] for examples in splits.values() for example in examples} == {"0", "1"}


@pytest.mark.slow
def test_real_banking77_reads_with_published_counts_and_multiline_fields():
    folder = shared_data("banking77")
    splits = read_csv_dir(folder)
    assert {split: len(table) for split, table in splits.items()} == {"train": 10003, "test": 3080}
    assert all(table.columns == ["text", "category"] for table in splits.values())
    assert any("\n" in row["text"] for row in splits["train"].rows)
    assert splits["train"].lines[-1] == 10017  # the file's last line: multi-line rows did not shift the count
    import json

    categories = set(json.loads((folder / "categories.json").read_text()))
    assert len(categories) == 77
    assert {row["category"] for table in splits.values() for row in table.rows} == categories
