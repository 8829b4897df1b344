"""What result.json calls a run's data: a name a person reads and a fingerprint that tells two
copies apart, so the report never pools runs on different data that share a name."""

from __future__ import annotations

from pathlib import Path

from peftlab.data.sources import dataset_identity
from tests.conftest import compose_config


def data_config(*overrides: str):
    return compose_config(["task=conll2003", *overrides]).task.data


def test_a_local_folder_is_named_by_its_folder_and_fingerprinted_by_its_split_files(tiny_ner_dir):
    name, fingerprint = dataset_identity(data_config(f"task.data.path={tiny_ner_dir}"))
    assert name == "tiny_ner" and fingerprint.startswith("sha256:") and len(fingerprint) == len("sha256:") + 16
    (tiny_ner_dir / "README.md").write_text("not a split file")
    assert dataset_identity(data_config(f"task.data.path={tiny_ner_dir}"))[1] == fingerprint
    with (tiny_ner_dir / "test.txt").open("a") as test_file:
        test_file.write("\nextra O\n")
    assert dataset_identity(data_config(f"task.data.path={tiny_ner_dir}"))[1] != fingerprint


def test_the_same_files_under_another_path_have_the_same_fingerprint(tiny_ner_dir, tmp_path):
    copy = tmp_path / "elsewhere" / "tiny_ner"
    copy.mkdir(parents=True)
    for file in tiny_ner_dir.iterdir():
        (copy / file.name).write_bytes(file.read_bytes())
    assert dataset_identity(data_config(f"task.data.path={copy}")) == dataset_identity(
        data_config(f"task.data.path={tiny_ner_dir}")
    )


def test_a_file_moved_to_another_split_changes_the_fingerprint(tiny_ner_dir):
    before = dataset_identity(data_config(f"task.data.path={tiny_ner_dir}"))[1]
    (tiny_ner_dir / "dev.txt").rename(tiny_ner_dir / "validation_old.bak")
    (tiny_ner_dir / "test.txt").rename(tiny_ner_dir / "dev.txt")
    assert dataset_identity(data_config(f"task.data.path={tiny_ner_dir}"))[1] != before


def test_hub_and_generated_data_are_named_by_their_source():
    assert dataset_identity(data_config()) == ("eriktks/conll2003", "hub:eriktks/conll2003")
    hub = data_config("task.data.hub_id=glue", "task.data.hub_config=sst2")
    assert dataset_identity(hub) == ("glue:sst2", "hub:glue:sst2")
    assert dataset_identity(compose_config(["task=ner"]).task.data) == ("demo_ner", "generated:demo_ner")


def test_a_folder_that_cannot_be_read_has_no_fingerprint(tmp_path: Path):
    """A failed run (missing folder) still writes result.json: its identity must not raise."""
    assert dataset_identity(data_config(f"task.data.path={tmp_path / 'missing'}")) == ("missing", None)
