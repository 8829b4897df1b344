"""The bytes of live tensors at the peak of one cell's first forward+backward, by what they are
(parameters, activations saved for backward, gradients, autograd's own buffers), from
torch.profiler's memory timeline: what the model holds, against what the process holds.

    python benchmarks/live_tensors.py --backbone smollm2 --method lora   # ~1 min on a quiet core
    python benchmarks/live_tensors.py --quick --backbone minilm --method full

Why it exists. memory_components.py measures the resident set (RSS), the only memory the CPU
reports, and on SmolLM2-135M LoRA's first forward+backward peaks higher than full fine-tuning's
although it saves fewer activations and has no large gradients. This script counts tensors
instead, through the same cell (`train_step.build_cell`, the same fixed batch): if LoRA's live
peak is below full fine-tuning's, the difference in RSS is memory the allocator (glibc's malloc)
keeps after the tensors in it were freed, not memory LoRA uses. The profiler slows the step and
inflates the process's RSS, so RSS is not measured here (memory_components.py measures it).
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path
from typing import Callable

import torch
from torch.profiler import ProfilerActivity, profile
from torch.profiler._memory_profiler import _CATEGORY_TO_INDEX, MemoryProfile, MemoryProfileTimeline

from train_step import (
    DEFAULT_DATA, METHODS, MIB, BACKBONE_TASKS, build_cell, cell_overrides, compose_config, forward_backward,
    synthetic_batch, write_tiny_backbones,
)


def live_tensor_peak(model_step: Callable[[], None], device: str = "cpu") -> dict[str, int]:
    """Bytes of live tensors by category at the moment their sum peaks while `model_step()` runs
    (profiler categories, lower-cased: parameter, activation, gradient, autograd_detail, ...;
    tensors the profiler cannot place are `uncategorized`). Memory the allocator keeps after a
    free is not a tensor's and is not counted."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True) as prof:
        model_step()
    timeline = MemoryProfileTimeline(MemoryProfile(prof.profiler.kineto_results))
    _, sizes = timeline._coalesce_timeline(device)  # the data behind export_memory_timeline, by category
    names = ["uncategorized", *_category_names()]
    at_peak = max(sizes, key=sum)
    return {name: size for name, size in zip(names, at_peak) if size}


def _category_names() -> list[str]:
    """The profiler's categories in the order of its timeline columns (`None`: uncategorized too)."""
    ordered = sorted(_CATEGORY_TO_INDEX.items(), key=lambda item: item[1])
    return [category.name.lower() if category is not None else "uncategorized" for category, _ in ordered]


def main() -> None:
    args = parse_arguments()
    with tempfile.TemporaryDirectory() as scratch:
        data = write_tiny_backbones(Path(scratch)) if args.quick else args.data
        cfg = compose_config(cell_overrides(args.backbone, args.method, data, tiny=args.quick))
        cell = build_cell(cfg, Path(scratch) / "run")
    batch = synthetic_batch(cell, args.batch_size, args.seq_len)
    peak = live_tensor_peak(lambda: forward_backward(cell, batch))
    parts = ", ".join(f"{name} {size / MIB:.1f}" for name, size in sorted(peak.items(), key=lambda item: -item[1]))
    print(f"{args.backbone} {args.method}, {args.batch_size} x {args.seq_len} tokens: live tensors at the peak of the "
          f"first forward+backward {sum(peak.values()) / MIB:.1f} MiB ({parts})")


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", choices=list(BACKBONE_TASKS), required=True)
    parser.add_argument("--method", choices=list(METHODS), required=True)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=64, help="tokens in every sequence of the batch")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder holding banking77/ (SmolLM2's task)")
    parser.add_argument("--quick", action="store_true", help="tiny random models instead of the real backbones")
    return parser.parse_args()


if __name__ == "__main__":
    logging.disable(logging.WARNING)
    main()
