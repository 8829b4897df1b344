"""Memory of one run: the model's own bytes, and the process's peak. Linux lets a process reset
its resident-set high-water mark (/proc/self/clear_refs, 5), so runs of a sequential sweep in
one process each get their own peak rather than the largest so far."""

from __future__ import annotations

import resource
import sys
from pathlib import Path

import torch

from peftlab.quant import quantization_constants

CLEAR_REFS = Path("/proc/self/clear_refs")
STATUS = Path("/proc/self/status")


def reset_peak_memory() -> None:
    try:
        CLEAR_REFS.write_text("5")
    except OSError:
        pass  # not Linux, or not allowed: the peak then covers the whole process
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def peak_memory() -> dict[str, float | None]:
    return {"peak_rss_mb": _peak_rss_mb(), "peak_cuda_mb": _peak_cuda_mb()}


def model_bytes(model: torch.nn.Module) -> int:
    """Bytes the model's weights take as stored: every parameter and buffer at its stored size
    (a packed 4-bit weight at half a byte a value), plus the constants bitsandbytes keeps beside
    quantized weights (scales, code books), which `PreTrainedModel.get_memory_footprint` leaves
    out. Memory shared by several tensors (tied weights) counts once."""
    tensors = [*model.parameters(), *model.buffers()]
    tensors += quantization_constants(model)
    stored = {(t.device, t.data_ptr()): t.numel() * t.element_size() for t in tensors}
    return sum(stored.values())


def _peak_rss_mb() -> float:
    try:
        for line in STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def _peak_cuda_mb() -> float | None:
    return torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
