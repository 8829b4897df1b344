"""Where fine-tuning memory goes, by component, measured: full fine-tuning, LoRA and QLoRA (LoRA on
an NF4 base, Dettmers et al. 2023) on MiniLM (token classification, the built-in `ner` task) and
SmolLM2-135M (Banking77 as generation), on one fixed batch of synthetic tokens, on the CPU.

    python benchmarks/memory_components.py              # both backbones, 8 x 64 tokens: ~3 min on 2 cores
    python benchmarks/memory_components.py --backbones minilm --batch-size 32 --seq-len 256
    python benchmarks/memory_components.py --quick      # tiny random models: checks the script

Writes memory_components.md and .csv to --out (default benchmarks/results; --quick:
outputs/benchmarks/quick) and prints the LoRA/full and QLoRA/full peak ratios. SmolLM2 needs
Banking77 in --data (default ../shared/data) and its GGUF conversion cached (the first SmolLM2
load converts it, about a minute).

Every cell (backbone x method) runs in a process of its own, so that its peak is its own. In it,
peftlab's `prepare` builds the model as a run would, and the Trainer peftlab trains with makes
the optimizer (train_step.py). Then, on the fixed batch:
  - weights: `peftlab.measure.model_bytes` once the method is in (LoRA's A and B included; a 4-bit
    base at its packed size plus the scales bitsandbytes keeps beside it);
  - gradients: the bytes of every `.grad` after one backward (tied weights once);
  - optimizer state: every tensor AdamW keeps after one step (exp_avg and exp_avg_sq, and the
    step count: one 4-byte tensor per parameter tensor);
  - activations: what autograd saves for backward during the forward
    (`torch.autograd.graph.saved_tensors_hooks`), each storage once, the model's weights left out;
  - the resident set's peak in each phase, in MiB above the baseline taken before the model
    loads: load (prepare, the optimizer, every weight read once), the first forward+backward, the
    first optimizer step (it allocates AdamW's state), a steady step (forward+backward+step with
    the state there: what every later step costs) and an evaluation forward under no_grad.
The total peak is the largest of those; the ratios compare it, above the baseline and absolute.

The traps. The baseline (torch, transformers, peft and bitsandbytes imported: about 0.5 GiB) is
the same in every cell and is not fine-tuning's; the absolute ratio includes it. The tensors do
not add up to a peak: activations are freed during backward while gradients appear, and backward
makes temporaries of its own. Activations grow with the tokens in a batch and the optimizer state
does not, so LoRA's saving shrinks as batches grow; LoRA's dropout keeps a dropped-out copy of
every adapted layer's input (`method.dropout`, printed under the table), which can make LoRA's
activations larger than full fine-tuning's. The resident set counts the pages of memory-mapped
files: transformers maps the safetensors weights, so a float model's weights are file pages (the
"mapped files" column), resident once read; a 4-bit base is quantized from the float file, which
stays mapped, so its pages stay counted though the kernel may drop them. On CPU the NF4 base saves
memory, not time: bitsandbytes dequantizes every weight for each matmul.

The default batch, 8 x 64 tokens, is about what Banking77 as generation trains on: batch 8, and
prompt + intent + EOS take 38 SmolLM2 tokens at the median, 50 at the 90th percentile.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import logging
import os
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

import torch

from train_step import (
    METHODS, MIB, ROOT, add_cell_arguments, build_cell, check_cells, child_overrides, comma_names, compose_config, forward_backward,
    optimizer_step, page_in, peak_mib, resident_mib, run_child, start_phase, synthetic_batch, write_csv,
    write_tiny_backbones,
)
from peftlab.measure import model_bytes
from peftlab.quant import quantization_constants
from peftlab.result import git_sha

TENSORS = {"weights": "weights", "gradients": "gradients", "optimizer_state": "optimizer state",
           "activations": "activations"}
PHASES = {"load": "load", "forward_backward": "fwd+bwd", "optimizer_step": "1st step", "steady_step": "steady step",
          "eval_forward": "eval fwd"}


# --- inside a cell's own process ---------------------------------------------------------------


def measure(overrides: list[str], batch_size: int, length: int) -> dict:
    """The components and phase peaks of one cell (see the module docstring), phase by phase."""
    load_optional_libraries()
    cfg = compose_config(overrides)
    start_phase()
    baseline, baseline_mapped = resident_mib(), resident_mib("RssFile")
    peaks = {}
    with tempfile.TemporaryDirectory() as workdir:
        cell = build_cell(cfg, Path(workdir))
    page_in(cell.model)
    peaks["load"] = peak_mib()
    mapped = resident_mib("RssFile") - baseline_mapped
    batch = synthetic_batch(cell, batch_size, length)

    start_phase()
    with saved_for_backward(cell.model) as saved:
        forward_backward(cell, batch)
    peaks["forward_backward"] = peak_mib()
    gradients = unique_bytes(p.grad for p in cell.model.parameters() if p.grad is not None)

    start_phase()
    optimizer_step(cell)
    peaks["optimizer_step"] = peak_mib()
    state = unique_bytes(value for values in cell.optimizer.state.values() for value in values.values()
                         if torch.is_tensor(value))

    start_phase()
    forward_backward(cell, batch)
    optimizer_step(cell)
    peaks["steady_step"] = peak_mib()

    start_phase()
    cell.model.eval()
    with torch.no_grad():
        cell.model(**batch)
    peaks["eval_forward"] = peak_mib()

    trainable = cell.trainable()
    return {
        "trainable_params": sum(p.numel() for p in trainable),
        "trainable_tensors": len(trainable),
        "trainable_bytes": unique_bytes(trainable),
        "weights_bytes": model_bytes(cell.model),
        "gradients_bytes": gradients,
        "optimizer_state_bytes": state,
        "activations_bytes": sum(saved.values()),
        "baseline_rss_mib": round(baseline, 1),
        "mapped_after_load_mib": round(mapped, 1),
        **{f"{phase}_peak_mib": round(peaks[phase] - baseline, 1) for phase in PHASES},
        "peak_mib": round(max(peaks.values()) - baseline, 1),
        "peak_rss_mib": round(max(peaks.values()), 1),
        "torch_threads": torch.get_num_threads(),
        "method_settings": _method_settings(cfg),
    }


@contextmanager
def saved_for_backward(model: torch.nn.Module) -> Iterator[dict[int, int]]:
    """Bytes of every storage autograd saves for backward inside the block, by address. Each storage
    counts once however many views of it are saved; storages of the model's own weights (a linear
    layer saves its weight for backward) are weights, not activations."""
    weights = [*model.parameters(), *model.buffers(), *quantization_constants(model)]
    own = {tensor.untyped_storage().data_ptr() for tensor in weights}
    saved: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in own:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        yield saved


def unique_bytes(tensors: Iterable[torch.Tensor]) -> int:
    """Bytes of the storages behind `tensors`, each once."""
    return sum({t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}.values())


def load_optional_libraries() -> None:
    """Import bitsandbytes in every cell, not only where the base is quantized, so that every
    baseline holds the same libraries and the deltas compare."""
    if importlib.util.find_spec("bitsandbytes") is not None:
        importlib.import_module("bitsandbytes")


def _method_settings(cfg) -> str:
    method, quant = cfg.method, cfg.quant
    settings = [method.name]
    if "r" in method:
        settings.append(f"r={method.r} alpha={method.alpha} dropout={method.dropout} targets={','.join(method.targets)}")
    if quant.bits is not None:
        settings.append(f"base quant={quant.name} (double quantization {quant.double_quant})")
    return " ".join(settings)


# --- the parent: one child per cell, then the table ----------------------------------------------


def main() -> None:
    args = parse_arguments()
    if args.cell:
        overrides = child_overrides(args)
        args.cell_result.write_text(json.dumps(measure(overrides, args.batch_size, args.seq_len)))
        return
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        data = write_tiny_backbones(scratch) if args.quick else args.data
        rows = []
        for backbone in args.backbones:
            for method in args.methods:
                print(f"measuring {backbone} {method} ...", file=sys.stderr, flush=True)
                cell = [f"--cell={backbone}:{method}", f"--data={data}", f"--batch-size={args.batch_size}",
                        f"--seq-len={args.seq_len}", *["--quick"] * args.quick]
                measured = run_child(Path(__file__), cell, scratch / f"{backbone}_{method}.json")
                shape = {"batch_size": args.batch_size, "seq_len": args.seq_len}
                rows.append({"backbone": backbone, "method": method, **shape, **measured})
    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(args.out / "memory_components.csv", rows)
    (args.out / "memory_components.md").write_text(render(rows, args))
    for line in ratio_lines(rows):
        print(line)
    print(f"wrote {args.out / 'memory_components.md'} and .csv")


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbones", type=comma_names, default=["minilm", "smollm2"], help="comma-separated: minilm,smollm2")
    parser.add_argument("--methods", type=comma_names, default=list(METHODS), help=f"comma-separated: {','.join(METHODS)}")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=64, help="tokens in every sequence of the batch")
    add_cell_arguments(parser)
    args = parser.parse_args()
    check_cells(args.backbones, args.methods)
    if args.batch_size < 1 or args.seq_len < 1:
        parser.error("--batch-size and --seq-len must be >= 1")
    args.out = args.out or ROOT / ("outputs/benchmarks/quick" if args.quick else "benchmarks/results")
    # glibc's malloc settings change the resident set (benchmarks/README.md), so they belong to the command
    allocator = [f"{name}={value}" for name, value in sorted(os.environ.items()) if name.startswith("MALLOC_")]
    args.command = " ".join([*allocator, "python benchmarks/memory_components.py", *sys.argv[1:]])
    return args


def render(rows: list[dict], args: argparse.Namespace) -> str:
    measured = [row for row in rows if "error" not in row]
    quick = ", tiny random models: the numbers mean nothing" if args.quick else ""
    lines = [
        "# Fine-tuning memory by component",
        "",
        f"`{args.command}` (git {git_sha() or 'unknown'}{quick})",
        "",
        f"CPU, {_threads(measured)} torch threads; one fixed batch of {args.batch_size} sequences x {args.seq_len} "
        "synthetic tokens (no padding); each cell in its own process. Tensors, in MiB: exact bytes of the weights "
        "as stored (a 4-bit base packed), of the gradients after one backward, of AdamW's state after one step, and "
        "of what autograd saved for backward (activations). Their sum is not a peak: activations are freed while "
        "gradients appear, and backward makes temporaries of its own (the logits' gradient, for one).",
        "",
        "| backbone | method | trainable params | " + " | ".join(TENSORS.values()) + " | sum |",
        "|---|---|---:|" + "---:|" * (len(TENSORS) + 1),
    ]
    for row in rows:
        if "error" in row:
            empty = " |" * (len(TENSORS) + 1)
            lines.append(f"| {row['backbone']} | {row['method']} | failed: {row['error']} |{empty}")
            continue
        tensors = [row[f"{name}_bytes"] / MIB for name in TENSORS]
        cells = " | ".join(f"{value:.1f}" for value in tensors)
        lines.append(
            f"| {row['backbone']} | {row['method']} | {row['trainable_params']:,} | {cells} | {sum(tensors):.1f} |"
        )
    lines += [
        "",
        "Peak resident set in each phase, MiB above the cell's baseline (libraries imported, nothing loaded). The "
        "steady step is a second forward+backward+step, with the optimizer state already there. Mapped files: "
        "what loading added to the resident set in pages of memory-mapped files (the weights' safetensors file, "
        "read once, and the libraries loaded on the way), which the kernel may drop under memory pressure.",
        "",
        "| backbone | method | baseline RSS | mapped files | " + " | ".join(PHASES.values())
        + " | peak above baseline | peak RSS |",
        "|---|---|---:|---:|" + "---:|" * (len(PHASES) + 2),
    ]
    for row in measured:
        phases = " | ".join(f"{row[f'{phase}_peak_mib']:.1f}" for phase in PHASES)
        lines.append(
            f"| {row['backbone']} | {row['method']} | {row['baseline_rss_mib']:.1f} | "
            f"{row['mapped_after_load_mib']:.1f} | {phases} | {row['peak_mib']:.1f} | {row['peak_rss_mib']:.1f} |"
        )
    lines += ["", *[f"- {line}" for line in ratio_lines(rows)], "", "Methods as configured:", ""]
    lines += sorted({f"- {row['method']}: {row['method_settings']}" for row in measured})
    return "\n".join(lines) + "\n"


def ratio_lines(rows: list[dict]) -> list[str]:
    """Each method's peak against full fine-tuning's on the same backbone."""
    by_cell = {(row["backbone"], row["method"]): row for row in rows if "error" not in row}
    lines = []
    for (backbone, method), row in by_cell.items():
        full = by_cell.get((backbone, "full"))
        if method == "full" or full is None:
            continue
        above, absolute = row["peak_mib"] / full["peak_mib"], row["peak_rss_mib"] / full["peak_rss_mib"]
        lines.append(
            f"{backbone}: {method}/full peak = {above:.2f} above the baseline "
            f"({row['peak_mib']:.0f} / {full['peak_mib']:.0f} MiB), {absolute:.2f} absolute"
        )
    return lines


def _threads(rows: list[dict]) -> str:
    return ", ".join(sorted({str(row["torch_threads"]) for row in rows})) or "?"


if __name__ == "__main__":
    logging.disable(logging.WARNING)
    main()
