"""Shared fixtures: a tiny randomly initialised BERT saved as a local backbone folder, a tiny
CoNLL dataset written by the test, and config composition through peftlab's own conf/."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import DictConfig, open_dict  # noqa: E402

from peftlab.__main__ import config_dir  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

WORDS = (
    "the a of in to and on at for with by from said met visited joined left praised "
    "today yesterday report company city river club team festival award game people "
    "anna maria john li wei omar sara paris berlin lagos lima tokyo acme globex initech "
    "umbrella nile alps euro cup open prize summit . , play ##ing ##s ##ed"
).split()
TINY_SENTENCES = [
    ("anna visited paris today .", "B-PER O B-LOC O O"),
    ("maria joined acme in berlin .", "B-PER O B-ORG O B-LOC O"),
    ("john li met the team of globex .", "B-PER I-PER O O O O B-ORG O"),
    ("the euro cup game was in lima .", "O B-MISC I-MISC O O O B-LOC O"),
    ("omar left initech yesterday .", "B-PER O B-ORG O O"),
    ("sara praised the nile river .", "B-PER O O B-LOC O O"),
    ("wei visited tokyo with anna .", "B-PER O B-LOC O B-PER O"),
    ("umbrella said the report was big .", "B-ORG O O O O O O"),
    ("the open prize went to maria .", "O B-MISC I-MISC O O B-PER O"),
    ("globex joined the summit in lagos .", "B-ORG O O B-MISC O B-LOC O"),
    ("people in berlin praised the club .", "O O B-LOC O O O O"),
    ("playing in the alps , john met omar .", "O O O B-LOC O B-PER O B-PER O"),
    ("acme and initech left the city .", "B-ORG O B-ORG O O O O"),
    ("li wei played for the team in paris .", "B-PER I-PER O O O O O B-LOC O"),
    ("the festival award is from lima .", "O O O O O B-LOC O"),
    ("sara joined umbrella in tokyo .", "B-PER O B-ORG O B-LOC O"),
]


# A learnable 2-class task on the same sentences: does the sentence name a person?
TINY_CLASSIFIED = [(text, "person" if "B-PER" in tags else "other") for text, tags in TINY_SENTENCES]


def write_csv(path: Path, header: list[str], rows: list[tuple[str, ...]]) -> None:
    import csv

    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        writer.writerows(rows)


def write_conll(path: Path, sentences: list[tuple[str, str]], separator: str = " ") -> None:
    lines = ["-DOCSTART- -X- -X- O", ""]
    for text, tags in sentences:
        lines += [f"{token}{separator}{tag}" for token, tag in zip(text.split(), tags.split())] + [""]
    path.write_text("\n".join(lines))


@pytest.fixture(scope="session")
def tiny_backbone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, 32-wide BERT with random weights and a word-piece vocabulary, saved like a
    pretrained model so tests go through the same from_pretrained path as real backbones."""
    from transformers import BertConfig, BertModel, BertTokenizer

    folder = tmp_path_factory.mktemp("tiny_bert")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "was", "went", "is", "big", *WORDS]
    tokenizer = BertTokenizer(vocab={word: i for i, word in enumerate(vocab)})
    config = BertConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64,
    )
    import torch

    torch.manual_seed(1234)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def tiny_ner_dir(tmp_path: Path) -> Path:
    """train/dev/test CoNLL files of the 16 tiny sentences (dev and test reuse them)."""
    folder = tmp_path / "tiny_ner"
    folder.mkdir()
    for name in ("train.txt", "dev.txt", "test.txt"):
        write_conll(folder / name, TINY_SENTENCES)
    return folder


@pytest.fixture
def tiny_cls_dir(tmp_path: Path) -> Path:
    """train/dev/test CSV files (header text,label) of the 16 tiny classified sentences."""
    folder = tmp_path / "tiny_cls"
    folder.mkdir()
    for name in ("train.csv", "dev.csv", "test.csv"):
        write_csv(folder / name, ["text", "label"], TINY_CLASSIFIED)
    return folder


def compose_config(overrides: list[str]) -> DictConfig:
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


@pytest.fixture
def tiny_config(tiny_backbone: Path, tiny_ner_dir: Path):
    """compose(method=..., more overrides) -> config that trains the tiny model on tiny data."""

    def make(*overrides: str) -> DictConfig:
        cfg = compose_config(
            [
                "task=conll2003",
                f"task.data.path={tiny_ner_dir}",
                f"backbone.pretrained={tiny_backbone}",
                "trainer=smoke",
                "task.max_length=32",
                *overrides,
            ]
        )
        with open_dict(cfg):
            cfg.trainer.extra.use_cpu = True
        return cfg

    return make


@pytest.fixture
def tiny_cls_config(tiny_backbone: Path, tiny_cls_dir: Path):
    """compose(method=..., more overrides) -> config that classifies the tiny data with the tiny model."""

    def make(*overrides: str) -> DictConfig:
        cfg = compose_config(
            [
                "task=classification",
                f"task.data.path={tiny_cls_dir}",
                f"backbone.pretrained={tiny_backbone}",
                "trainer=smoke",
                "task.max_length=32",
                *overrides,
            ]
        )
        with open_dict(cfg):
            cfg.trainer.extra.use_cpu = True
        return cfg

    return make


def method_names() -> list[str]:
    """Every method peftlab ships: the files of conf/method/, not a list kept by hand."""
    return sorted(path.stem for path in (Path(config_dir()) / "method").glob("*.yaml"))


def shared_data(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"real dataset {name!r} not found at {path} (CI and developer machines have ../shared/data)")
    return path
