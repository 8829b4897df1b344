"""CoNLL NER files as found in the wild, and finding split files by name. Every file here is
written by the test; the real datasets are read in place, from ../shared/data, by slow tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from peftlab.data.conll import read_conll, read_conll_dir
from peftlab.data.splits import find_split_files
from peftlab.errors import ConfigError, DataError
from tests.conftest import shared_data

ANY_SUFFIX: tuple[str, ...] = ()


def write(path: Path, text: str) -> Path:
    """Bytes exactly as given: no newline translation, so CRLF and BOM tests mean what they say."""
    path.write_bytes(text.encode("utf-8"))
    return path


def touch_all(folder: Path, *names: str) -> None:
    for name in names:
        write(folder / name, "anna B-PER\n")


def test_docstart_lines_break_sentences_and_are_not_tokens(tmp_path):
    path = write(tmp_path / "train.txt", "-DOCSTART- -X- -X- O\n\nanna B-PER\n-DOCSTART- -X- -X- O\nparis B-LOC\n\n")
    assert read_conll(path) == [{"tokens": ["anna"], "tags": ["B-PER"]}, {"tokens": ["paris"], "tags": ["B-LOC"]}]


def test_several_blank_or_whitespace_lines_make_no_empty_sentences(tmp_path):
    path = write(tmp_path / "train.txt", "\n\nanna B-PER\n\n \n\t\n\nleft O\n\n\n")
    assert [s["tokens"] for s in read_conll(path)] == [["anna"], ["left"]]


def test_four_space_separated_columns_give_first_as_token_and_last_as_tag(tmp_path):
    path = write(tmp_path / "train.txt", "Anna NNP B-NP B-PER\nvisited  VBD  B-VP  O\n")
    assert read_conll(path) == [{"tokens": ["Anna", "visited"], "tags": ["B-PER", "O"]}]


def test_tab_separated_columns_keep_spaces_inside_tokens(tmp_path):
    path = write(tmp_path / "train.conll", "New York\tB-location\nrocks\tO\t\n")
    assert read_conll(path) == [{"tokens": ["New York", "rocks"], "tags": ["B-location", "O"]}]


def test_two_column_tags_may_have_hyphenated_types_and_i_after_o_is_kept(tmp_path):
    path = write(tmp_path / "train.conll", "a\tO\nfilm\tI-creative-work\n")
    assert read_conll(path)[0]["tags"] == ["O", "I-creative-work"]


def test_crlf_line_ends(tmp_path):
    path = write(tmp_path / "train.txt", "anna B-PER\r\nleft O\r\n\r\nparis B-LOC\r\n")
    assert read_conll(path) == [
        {"tokens": ["anna", "left"], "tags": ["B-PER", "O"]},
        {"tokens": ["paris"], "tags": ["B-LOC"]},
    ]


def test_bom_at_file_start_does_not_hide_the_docstart_line(tmp_path):
    path = write(tmp_path / "train.txt", "\ufeff-DOCSTART- -X- -X- O\n\nanna B-PER\n")
    assert read_conll(path) == [{"tokens": ["anna"], "tags": ["B-PER"]}]


def test_stray_feff_is_stripped_from_tokens(tmp_path):
    path = write(tmp_path / "dev.conll", "anna\ufeff\tB-person\nleft\tO\n")
    assert read_conll(path)[0]["tokens"] == ["anna", "left"]


def test_token_that_is_only_feff_is_dropped_with_its_tag(tmp_path):
    path = write(tmp_path / "dev.conll", "anna\tB-person\n\ufeff\tO\nleft\tO\n")
    assert read_conll(path) == [{"tokens": ["anna", "left"], "tags": ["B-person", "O"]}]


def test_line_holding_only_feff_is_a_blank_line(tmp_path):
    path = write(tmp_path / "dev.conll", "anna\tB-person\n\ufeff\nleft\tO\n\ufeff")
    assert [s["tokens"] for s in read_conll(path)] == [["anna"], ["left"]]


def test_last_sentence_without_trailing_blank_line_is_kept(tmp_path):
    path = write(tmp_path / "train.txt", "anna B-PER\n\nparis B-LOC")
    assert [s["tokens"] for s in read_conll(path)] == [["anna"], ["paris"]]


def test_single_column_line_names_file_line_and_shows_it(tmp_path):
    path = write(tmp_path / "train.txt", "-DOCSTART- -X- -X- O\n\nanna B-PER\nbrokenline\nleft O\n")
    with pytest.raises(DataError) as raised:
        read_conll(path)
    message = str(raised.value)
    assert f"{path}:4:" in message
    assert "'brokenline'" in message and "single column" in message and "IOB2 tag" in message


def test_tag_that_is_not_iob2_names_file_line_and_tag(tmp_path):
    path = write(tmp_path / "train.txt", "anna B-PER\n\nparis S-LOC\n")
    with pytest.raises(DataError) as raised:
        read_conll(path)
    assert f"{path}:3:" in str(raised.value) and "'S-LOC'" in str(raised.value)


@pytest.mark.parametrize("tag", ["B-", "PER", "b-PER", "0"])
def test_malformed_tags_are_refused(tmp_path, tag):
    with pytest.raises(DataError, match=":1:"):
        read_conll(write(tmp_path / "train.txt", f"anna {tag}\n"))


def test_empty_token_column_is_refused(tmp_path):
    with pytest.raises(DataError, match="token column is empty"):
        read_conll(write(tmp_path / "train.conll", "anna\tB-PER\n\tO\n"))


def test_file_that_is_not_utf8_names_its_line(tmp_path):
    path = tmp_path / "train.txt"
    path.write_bytes(b"anna B-PER\n\nM\xfcnchen B-LOC\n")
    with pytest.raises(DataError, match=r"train\.txt:3: not valid UTF-8") as raised:
        read_conll(path)
    assert "task.data.encoding=latin-1" in str(raised.value)


def test_a_latin1_file_reads_with_task_data_encoding(tmp_path):
    path = tmp_path / "train.txt"
    path.write_bytes("anna B-PER\n\nM\u00fcnchen B-LOC\n".encode("latin-1"))
    assert read_conll(path, encoding="latin-1")[1]["tokens"] == ["M\u00fcnchen"]


def test_utf16_with_its_bom_reads_and_crlf_ends_lines(tmp_path):
    path = tmp_path / "train.txt"
    path.write_bytes("anna B-PER\r\n\r\nM\u00fcnchen B-LOC\r\n".encode("utf-16"))
    assert read_conll(path, encoding="utf-16") == [
        {"tokens": ["anna"], "tags": ["B-PER"]}, {"tokens": ["M\u00fcnchen"], "tags": ["B-LOC"]},
    ]


def test_an_encoding_python_does_not_know_names_the_key(tmp_path):
    path = write(tmp_path / "train.txt", "anna B-PER\n")
    with pytest.raises(ConfigError, match=r"task\.data\.encoding='utf9' is not an encoding"):
        read_conll(path, encoding="utf9")


def test_empty_split_file_is_refused_by_name(tmp_path):
    write(tmp_path / "train.txt", "anna B-PER\n")
    write(tmp_path / "dev.txt", "-DOCSTART- -X- -X- O\n\n")
    with pytest.raises(DataError, match=r"dev\.txt \(the validation split\) has no sentences"):
        read_conll_dir(tmp_path)


def test_conll_dir_reads_each_split_under_its_canonical_name(tmp_path):
    touch_all(tmp_path, "train.txt", "valid.txt", "test.txt", "README.md")
    assert sorted(read_conll_dir(tmp_path)) == ["test", "train", "validation"]


@pytest.mark.parametrize("name", ["dev.conll", "valid.txt", "validation.tsv", "val.iob", "VALID.txt", "dev-2017.txt"])
def test_validation_file_names(tmp_path, name):
    touch_all(tmp_path, "train.txt", name)
    assert find_split_files(tmp_path, ANY_SUFFIX) == {"train": tmp_path / "train.txt", "validation": tmp_path / name}


def test_stems_with_separators_match_and_lookalikes_do_not(tmp_path):
    touch_all(tmp_path, "train_data.tsv", "testing.txt", "trainer.txt", "devices.txt", "contest.txt")
    expected = {"train": tmp_path / "train_data.tsv", "test": tmp_path / "testing.txt"}
    assert find_split_files(tmp_path, ANY_SUFFIX) == expected


def test_only_listed_suffixes_count(tmp_path):
    touch_all(tmp_path, "train.txt", "test.csv", "dev.txt.bak")
    assert find_split_files(tmp_path, (".txt",)) == {"train": tmp_path / "train.txt"}


def test_two_files_for_one_split_are_named(tmp_path):
    touch_all(tmp_path, "train.txt", "dev.txt", "valid.txt")
    with pytest.raises(DataError) as raised:
        find_split_files(tmp_path, ANY_SUFFIX)
    assert "dev.txt" in str(raised.value) and "valid.txt" in str(raised.value) and "rename" in str(raised.value)


def test_missing_train_file_lists_what_is_there_and_what_is_recognised(tmp_path):
    touch_all(tmp_path, "trn.txt", "dev.txt")
    with pytest.raises(DataError) as raised:
        find_split_files(tmp_path, (".txt",))
    message = str(raised.value)
    assert "trn.txt" in message and "dev.txt" in message and "train/training" in message


@pytest.mark.parametrize("make_path", [lambda tmp: tmp / "nowhere", lambda tmp: write(tmp / "train.txt", "")])
def test_data_path_that_is_no_folder_names_the_config_key(tmp_path, make_path):
    path = make_path(tmp_path)
    with pytest.raises(DataError) as raised:
        find_split_files(path, ANY_SUFFIX)
    assert str(path) in str(raised.value) and "task.data.path" in str(raised.value)


def test_missing_test_split_is_left_to_the_caller(tmp_path):
    touch_all(tmp_path, "train.txt", "dev.txt")
    assert sorted(read_conll_dir(tmp_path)) == ["train", "validation"]


def assert_clean_ner(splits: dict[str, list[dict]], types: set[str]) -> None:
    allowed = {"O"} | {f"{prefix}-{kind}" for prefix in "BI" for kind in types}
    for sentences in splits.values():
        for sentence in sentences:
            assert len(sentence["tokens"]) == len(sentence["tags"]) > 0
            assert set(sentence["tags"]) <= allowed, sentence["tags"]
            assert not any("\ufeff" in token for token in sentence["tokens"])


@pytest.mark.slow
def test_real_conll2003_reads_with_published_sentence_counts():
    splits = read_conll_dir(shared_data("conll2003"))
    assert {split: len(sentences) for split, sentences in splits.items()} == {
        "train": 14041, "validation": 3250, "test": 3453,
    }
    assert_clean_ner(splits, {"PER", "ORG", "LOC", "MISC"})


@pytest.mark.slow
def test_real_wnut17_reads_with_published_sentence_counts():
    splits = read_conll_dir(shared_data("wnut17"))
    assert {split: len(sentences) for split, sentences in splits.items()} == {
        "train": 3394, "validation": 1009, "test": 1287,
    }
    assert_clean_ner(splits, {"corporation", "creative-work", "group", "location", "person", "product"})
