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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`@pytest.mark.gpu` tests are skipped where torch sees no CUDA device, so the marker alone
    says what a test needs (pyproject.toml registers it)."""
    import torch

    if torch.cuda.is_available():
        return
    no_gpu = pytest.mark.skip(reason="needs a CUDA GPU (marked gpu)")
    for item in items:
        if item.get_closest_marker("gpu"):
            item.add_marker(no_gpu)

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


def tiny_composer(task: str, data_dir: Path, backbone: Path):
    """compose(more overrides) -> config that trains the tiny model `backbone` on `data_dir`
    with `task`, on CPU, with the smoke trainer."""

    def make(*overrides: str) -> DictConfig:
        cfg = compose_config(
            [
                f"task={task}",
                f"task.data.path={data_dir}",
                f"backbone.pretrained={backbone}",
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
def tiny_config(tiny_backbone: Path, tiny_ner_dir: Path):
    """compose(method=..., more overrides) -> config that trains the tiny model on tiny data."""
    return tiny_composer("conll2003", tiny_ner_dir, tiny_backbone)


@pytest.fixture
def tiny_cls_config(tiny_backbone: Path, tiny_cls_dir: Path):
    """compose(method=..., more overrides) -> config that classifies the tiny data with the tiny model."""
    return tiny_composer("classification", tiny_cls_dir, tiny_backbone)


TOKEN_CLASSIFICATION = "token_classification.TokenClassification"  # task kinds, in peftlab.tasks
SEQUENCE_CLASSIFICATION = "sequence_classification.SequenceClassification"
GENERATION = "generation.Generation"


def method_names(task_kind: str | None = None) -> list[str]:
    """Every method peftlab ships: the files of conf/method/, not a list kept by hand; with
    `task_kind` (one of the kinds above), those that serve it (`method.task_kinds`)."""
    from hydra.utils import get_class
    from omegaconf import OmegaConf

    from peftlab.methods import serves

    kind = get_class(f"peftlab.tasks.{task_kind}") if task_kind else None

    paths = sorted((Path(config_dir()) / "method").glob("*.yaml"))
    return [path.stem for path in paths if kind is None or serves(OmegaConf.load(path), kind)]


def shared_data(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"real dataset {name!r} not found at {path} (CI and developer machines have ../shared/data)")
    return path


# --- decoders: a tiny Llama, prompt -> completion data, a tiny GGUF file -------------------

GEN_PAIRS = [
    ("review : a good film", "positive"),
    ("review : a bad film", "negative"),
    ("review : the great play", "positive"),
    ("review : the awful play", "negative"),
    ("review : a good game", "positive"),
    ("review : a bad game", "negative"),
    ("review : the great team", "positive"),
    ("review : the awful team", "negative"),
    ("review : good city", "positive"),
    ("review : bad city", "negative"),
    ("review : great river", "positive"),
    ("review : awful river", "negative"),
    ("review : a good report", "positive"),
    ("review : a bad report", "negative"),
    ("review : the great festival", "positive"),
    ("review : the awful festival", "negative"),
]
GEN_WORDS = sorted({word for pair in GEN_PAIRS for word in " ".join(pair).split()} | {"cat", "dog", "<user>"})
TINY_DECODER = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)


def tiny_word_tokenizer(words: list[str], chat_template: str | None = None):
    """A fast word-level tokenizer with EOS and no pad token (like GPT-2 and Llama)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {word: i for i, word in enumerate(["<unk>", "</s>", *words])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="</s>", unk_token="<unk>")
    tokenizer.chat_template = chat_template
    return tokenizer


@pytest.fixture(scope="session")
def tiny_decoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, 32-wide Llama (grouped-query attention, tied embeddings like SmolLM2) with
    random weights and a word-level tokenizer, saved like a pretrained model.

    Initialised with std 0.2, not 0.02: at 0.02, 32-wide tied embeddings keep every logit
    within about ±0.6, so a method that leaves them frozen cannot fit anything."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("tiny_llama")
    tokenizer = tiny_word_tokenizer(GEN_WORDS)
    config = LlamaConfig(
        vocab_size=len(tokenizer), max_position_embeddings=64, tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id, bos_token_id=None, pad_token_id=None, initializer_range=0.2,
        **TINY_DECODER,
    )
    torch.manual_seed(1234)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def gen_rows(pairs=GEN_PAIRS) -> list[dict]:
    return [{"prompt": prompt, "completion": completion} for prompt, completion in pairs]


@pytest.fixture
def tiny_gen_config(tiny_decoder: Path, monkeypatch: pytest.MonkeyPatch):
    """compose(method=..., more overrides) -> config that trains the tiny Llama on GEN_PAIRS as
    JSONL-style rows (train, validation and test alike), read in memory instead of from files."""
    import peftlab.tasks.generation

    splits = {split: gen_rows() for split in ("train", "validation", "test")}
    monkeypatch.setattr(peftlab.tasks, "load_splits", lambda data: splits)

    def make(*overrides: str) -> DictConfig:
        cfg = compose_config(
            [
                "task=jsonl_gen", "backbone=smollm2", f"backbone.pretrained={tiny_decoder}", "backbone.gguf_file=null",
                "trainer=smoke", "task.max_length=32", "task.max_new_tokens=2", *overrides,
            ]
        )
        with open_dict(cfg):
            cfg.trainer.extra.use_cpu = True
        return cfg

    return make


def write_tiny_gguf(path: Path, seed: int = 0) -> None:
    """A 2-layer, 32-wide Llama as a GGUF file, the way llama.cpp writes one: byte-level BPE
    tokenizer in the metadata, 8-bit quantized matrices, no output matrix (tied embeddings)."""
    import numpy as np
    from gguf import GGMLQuantizationType, GGUFWriter, quants

    tokens = ["<unk>", "<s>", "</s>", *(chr(c) for c in range(97, 123)), "Ġ", "ab", "Ġc"]
    hidden, ffn, layers, heads, kv_heads = 32, 64, 2, 4, 2
    kv_width = kv_heads * hidden // heads
    rng = np.random.default_rng(seed)
    writer = GGUFWriter(str(path), "llama")
    writer.add_block_count(layers)
    writer.add_context_length(64)
    writer.add_embedding_length(hidden)
    writer.add_feed_forward_length(ffn)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_dimension_count(hidden // heads)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types([3, 3, 3] + [1] * (len(tokens) - 3))  # control tokens, then normal ones
    writer.add_token_merges(["a b", "Ġ c"])
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)

    def tensor(name: str, *shape: int, quantized: bool = False) -> None:
        values = (rng.standard_normal(shape) * 0.1).astype(np.float32)
        if quantized:
            writer.add_tensor(name, quants.quantize(values, GGMLQuantizationType.Q8_0), raw_dtype=GGMLQuantizationType.Q8_0)
        else:
            writer.add_tensor(name, values)

    tensor("token_embd.weight", len(tokens), hidden)
    tensor("output_norm.weight", hidden)
    for i in range(layers):
        tensor(f"blk.{i}.attn_norm.weight", hidden)
        tensor(f"blk.{i}.ffn_norm.weight", hidden)
        for name, rows, columns in [("attn_q", hidden, hidden), ("attn_k", kv_width, hidden), ("attn_v", kv_width, hidden),
                                    ("attn_output", hidden, hidden), ("ffn_gate", ffn, hidden), ("ffn_up", ffn, hidden),
                                    ("ffn_down", hidden, ffn)]:
            tensor(f"blk.{i}.{name}.weight", rows, columns, quantized=True)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
