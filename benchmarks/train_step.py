"""One training step of a model that peftlab's own `prepare` built, on synthetic tokens: what
benchmarks/memory_components.py and benchmarks/scale.py share (imported as a sibling module,
so run those scripts as files, not with -m).

The model, its frozen base and what the method trains come from `peftlab.run.prepare`, and the
optimizer from the Trainer peftlab would train with (`make_trainer(...).create_optimizer()`: the
same AdamW, fused on CPU with torch >= 2.8, and the same weight-decay groups). The step is the
one Trainer runs: forward, backward, clip to `trainer.max_grad_norm`, optimizer step,
`zero_grad(set_to_none=True)`. The batch is synthetic: random token ids of exactly the asked
length, no padding, so memory and time are about the model, not a dataset's length spread.

Everything runs on the CPU (`trainer.extra.use_cpu=true`), and memory is the process's resident
set (RSS): what the operating system sees, allocator overhead and memory-mapped weights included
(torch has no allocator statistics on the CPU). Linux lets a process reset its RSS high-water
mark, so each phase gets its own peak (`start_phase`).
"""

from __future__ import annotations

import argparse
import csv
import ctypes
import ctypes.util
import gc
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parents[1]
# A script run by its path puts benchmarks/ first on the import path, not the checkout: without
# this, `peftlab` would be whichever checkout is installed, not the one the script belongs to.
sys.path.insert(0, str(ROOT))

from peftlab.__main__ import config_dir  # noqa: E402
from peftlab.measure import peak_memory, reset_peak_memory  # noqa: E402
from peftlab.run import Prepared, make_trainer, prepare  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data"
MIB = 2**20

# Which task each backbone is measured on. The task decides the model class and head
# (a token classifier for MiniLM, the causal LM for SmolLM2); its data is read by `prepare` but
# never trained on, so a small subsample keeps the load short.
BACKBONE_TASKS = {
    "minilm": ["backbone=minilm", "task=ner"],
    "smollm2": [
        "backbone=smollm2", "task=banking77_gen", "task.data.path={data}/banking77",
        "task.max_train_samples=16", "task.max_eval_samples=16",
    ],
}
# method=lora quant=nf4 is QLoRA (conf/quant/nf4.yaml); full fine-tuning refuses a quantized base.
METHODS = {"full": ["method=full"], "lora": ["method=lora"], "qlora": ["method=lora", "quant=nf4"]}


def cell_overrides(backbone: str, method: str, data: Path, tiny: bool = False) -> list[str]:
    """Hydra overrides for one (backbone, method) cell, the data read from `data`. `tiny`: the
    random backbones `write_tiny_backbones` wrote into `data` replace the real ones (--quick)."""
    if backbone not in BACKBONE_TASKS:
        raise SystemExit(f"unknown backbone {backbone!r}: use any of {', '.join(BACKBONE_TASKS)} (--backbones)")
    if method not in METHODS:
        raise SystemExit(f"unknown method {method!r}: use any of {', '.join(METHODS)} (--methods)")
    overrides = [override.format(data=data) for override in BACKBONE_TASKS[backbone]] + METHODS[method]
    if tiny:
        overrides += TINY_OVERRIDES[backbone](data)
    return overrides + ["+trainer.extra.use_cpu=true"]


def comma_names(text: str) -> list[str]:
    """A comma-separated command-line list (`minilm,smollm2`), blanks dropped."""
    return [name.strip() for name in text.split(",") if name.strip()]


def check_cells(backbones: list[str], methods: list[str]) -> None:
    """Refuse an unknown backbone or method before any child process starts."""
    for backbone in backbones:
        for method in methods:
            cell_overrides(backbone, method, DEFAULT_DATA)


def compose_config(overrides: list[str]) -> DictConfig:
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


@dataclass
class Cell:
    """A prepared model, its optimizer and the trainer settings of the step."""

    prepared: Prepared
    optimizer: torch.optim.Optimizer
    max_grad_norm: float

    @property
    def model(self) -> torch.nn.Module:
        return self.prepared.model

    def trainable(self) -> list[torch.nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]


def build_cell(cfg: DictConfig, workdir: Path) -> Cell:
    prepared = prepare(cfg)
    trainer = make_trainer(cfg, prepared, workdir)
    return Cell(prepared, trainer.create_optimizer(), trainer.args.max_grad_norm)


def synthetic_batch(cell: Cell, batch_size: int, length: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """`batch_size` sequences of exactly `length` random token ids, every position attended,
    with labels of the shape the task's model takes (peft's task type says which)."""
    generator = torch.Generator().manual_seed(seed)
    config = cell.model.config
    input_ids = torch.randint(config.vocab_size, (batch_size, length), generator=generator)
    task_type = cell.prepared.task.peft_task_type
    if task_type == "CAUSAL_LM":
        labels = input_ids.clone()
    elif task_type == "TOKEN_CLS":
        labels = torch.randint(config.num_labels, (batch_size, length), generator=generator)
    else:
        raise SystemExit(f"no synthetic labels for peft task type {task_type!r}: measure a token classifier or a causal LM")
    return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "labels": labels}


def forward_backward(cell: Cell, batch: dict[str, torch.Tensor]) -> None:
    cell.model.train()
    cell.model(**batch).loss.backward()


def optimizer_step(cell: Cell) -> None:
    torch.nn.utils.clip_grad_norm_(cell.trainable(), cell.max_grad_norm)
    cell.optimizer.step()
    cell.optimizer.zero_grad(set_to_none=True)


def page_in(model: torch.nn.Module) -> None:
    """Read every weight once. transformers memory-maps safetensors files, so a loaded model's
    weights are not resident until something reads them (the first forward would): without this
    the load phase would look free and the first forward would carry the weights."""
    for tensor in [*model.parameters(), *model.buffers()]:
        tensor.detach().sum()


def start_phase() -> None:
    """Start a phase's peak from what is live now: collect garbage, hand the heap glibc's malloc
    kept after earlier frees back to the system (`malloc_trim`; a no-op elsewhere), then reset
    the resident-set high-water mark. Without the trim a phase's peak would include memory the
    phase before freed but the allocator kept."""
    gc.collect()
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    if hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)
    reset_peak_memory()


def resident_mib(field: str = "VmRSS") -> float:
    """The process's resident set now, in MiB: all of it (VmRSS), or the pages of mapped files
    in it (RssFile), as /proc/self/status names them."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise SystemExit(f"these benchmarks read /proc/self/status (Linux): it has no {field} line here")


def peak_mib() -> float:
    """The resident-set high-water mark since the last `reset_peak_memory()`, in MiB."""
    return peak_memory()["peak_rss_mb"]


# --- child processes: one per cell, so that each peak is its own ----------------------------


def add_cell_arguments(parser: argparse.ArgumentParser, outputs: str = "the .md and .csv",
                       quick_help: str = "tiny random models instead of the real backbones") -> None:
    """The arguments of every benchmark that measures each cell in its own process: the data,
    where `outputs` go, --quick, and the hidden pair `run_child` hands a child (--cell, the
    BACKBONE:METHOD it measures; --cell-result, the JSON file it writes)."""
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder holding banking77/ (SmolLM2's task)")
    parser.add_argument("--out", type=Path, help=f"folder for {outputs} (default benchmarks/results; "
                        "--quick: outputs/benchmarks/quick)")
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--cell", help=argparse.SUPPRESS)
    parser.add_argument("--cell-result", type=Path, help=argparse.SUPPRESS)


def child_overrides(args: argparse.Namespace) -> list[str]:
    """In a child process: the config overrides of the cell its --cell BACKBONE:METHOD names, with
    the parent's --data and --quick (the arguments `add_cell_arguments` declares)."""
    backbone, method = args.cell.split(":")
    return cell_overrides(backbone, method, args.data, tiny=args.quick)


def run_child(script: Path, arguments: list[str], result: Path, environment: dict[str, str] | None = None) -> dict:
    """Run `script` with `arguments` in a fresh Python (in `environment`, default this one's); it
    writes its JSON to `result`. A cell that fails is returned as {"error": its last line of
    stderr}, so the table says why."""
    completed = subprocess.run([sys.executable, str(script), *arguments, "--cell-result", str(result)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=environment)
    if completed.returncode != 0 or not result.exists():
        lines = [line for line in completed.stderr.splitlines() if line.strip()] or [f"exit status {completed.returncode}"]
        sys.stderr.write(completed.stderr[-4000:])
        return {"error": lines[-1].strip()}
    return json.loads(result.read_text())


def write_csv(path: Path, rows: list[dict]) -> None:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


# --- --quick: tiny random models and data, written by the script -------------------------------

TINY_WORDS = "the a card my is not arrived yet how do i change pin top up failed why was charged fee".split()


def write_tiny_backbones(folder: Path) -> Path:
    """A 2-layer, 64-wide BERT and Llama (tied embeddings, grouped-query attention, like SmolLM2)
    with random weights, and a 20-row banking77-style CSV: enough for every code path of a
    cell in seconds. Sizes are for speed, not realism; the numbers mean nothing."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import BertConfig, BertModel, BertTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    torch.manual_seed(0)
    layers = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, max_position_embeddings=512)
    bert_vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *TINY_WORDS]
    BertModel(BertConfig(vocab_size=len(bert_vocab), **layers)).save_pretrained(folder / "bert")
    BertTokenizer(vocab={word: i for i, word in enumerate(bert_vocab)}).save_pretrained(folder / "bert")

    llama_vocab = {word: i for i, word in enumerate(["<unk>", "</s>", *TINY_WORDS])}
    backend = Tokenizer(models.WordLevel(llama_vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="</s>", unk_token="<unk>")
    llama = LlamaConfig(vocab_size=len(llama_vocab), num_key_value_heads=2, tie_word_embeddings=True,
                        eos_token_id=1, bos_token_id=None, pad_token_id=None, **layers)
    LlamaForCausalLM(llama).save_pretrained(folder / "llama")
    tokenizer.save_pretrained(folder / "llama")

    (folder / "banking77").mkdir()
    queries = [" ".join(TINY_WORDS[i : i + 5]) for i in range(20)]
    rows = [{"text": query, "category": ("card_arrival", "change_pin")[i % 2]} for i, query in enumerate(queries)]
    write_csv(folder / "banking77" / "train.csv", rows)
    return folder


TINY_OVERRIDES = {
    "minilm": lambda tiny: [f"backbone.pretrained={tiny}/bert"],
    "smollm2": lambda tiny: [f"backbone.pretrained={tiny}/llama", "backbone.gguf_file=null"],
}
