"""benchmarks/memory_components.py and benchmarks/scale.py on the tiny random models their --quick
mode writes: the measured components agree with what the parameters imply, and the scripts write
the tables, CSVs and plot for the grid they were asked for."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
STEP_COUNTER_BYTES = 4  # AdamW keeps its step count as one float32 scalar tensor per parameter tensor


@pytest.fixture
def scripts(monkeypatch: pytest.MonkeyPatch):
    """The benchmark scripts as modules (they import their sibling train_step.py)."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import memory_components
    import scale
    import train_step

    return memory_components, scale, train_step


@pytest.fixture
def tiny_data(tmp_path: Path, scripts) -> Path:
    return scripts[2].write_tiny_backbones(tmp_path)


def run_script(name: str, *arguments: str, **variables: str) -> None:
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", **variables}
    completed = subprocess.run([sys.executable, str(BENCHMARKS / name), *arguments], cwd=ROOT, env=environment,
                               capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]


def read_csv(path: Path) -> list[dict]:
    with path.open() as file:
        return list(csv.DictReader(file))


def test_memory_components_quick_adds_up(tmp_path):
    """Full fine-tuning has one gradient per trainable weight; LoRA's AdamW state is two fp32
    moments per trainable value plus the step counters; both save activations for backward."""
    run_script("memory_components.py", "--quick", "--backbones=minilm", "--methods=full,lora",
               "--batch-size=2", "--seq-len=16", f"--out={tmp_path}", MALLOC_MMAP_THRESHOLD_="65536")

    full, lora = read_csv(tmp_path / "memory_components.csv")
    assert (full["method"], lora["method"]) == ("full", "lora")
    assert int(full["gradients_bytes"]) == int(full["trainable_bytes"]) == 4 * int(full["trainable_params"])
    moments = 2 * 4 * int(lora["trainable_params"])  # exp_avg and exp_avg_sq, fp32
    assert int(lora["optimizer_state_bytes"]) == moments + STEP_COUNTER_BYTES * int(lora["trainable_tensors"])
    assert int(lora["trainable_params"]) < int(full["trainable_params"])
    assert int(full["activations_bytes"]) > 0 and int(lora["activations_bytes"]) > 0
    assert all(float(row["peak_mib"]) >= float(row["load_peak_mib"]) > 0 for row in (full, lora))
    table = (tmp_path / "memory_components.md").read_text()
    assert "2 sequences x 16" in table and "minilm: lora/full peak = " in table
    assert "`MALLOC_MMAP_THRESHOLD_=65536 python benchmarks/memory_components.py --quick" in table  # the allocator setting is part of the command


def test_allocator_cost_quick_runs_each_setting_in_its_own_environment(tmp_path):
    """The "glibc default" processes must not inherit a MALLOC_* setting from the shell that ran
    the script (set one here to catch that), and the threshold processes must get theirs; the
    settings swap order each round."""
    run_script("allocator_cost.py", "--quick", "--backbone=minilm", "--methods=full,lora", "--rounds=2",
               "--batch-size=2", "--seq-len=16", "--warmup=1", "--steps=1", f"--out={tmp_path}",
               MALLOC_MMAP_THRESHOLD_="131072")

    rows = read_csv(tmp_path / "allocator_cost.csv")
    default, threshold = "glibc default", "MALLOC_MMAP_THRESHOLD_=65536"
    assert [(row["round"], row["method"], row["setting"]) for row in rows] == [
        ("1", "full", default), ("1", "full", threshold), ("1", "lora", default), ("1", "lora", threshold),
        ("2", "full", threshold), ("2", "full", default), ("2", "lora", threshold), ("2", "lora", default),
    ]
    assert {row["setting"]: row["mmap_threshold"] for row in rows} == {default: "default", threshold: "65536"}
    assert all(float(row["step_seconds"]) > 0 and float(row["peak_rss_mib"]) > 0 for row in rows)
    table = (tmp_path / "allocator_cost.md").read_text()
    assert "| full | glibc default |" in table and "lora/full peak = " in table
    assert "full: step time with the threshold / glibc default = " in table


def test_qlora_trains_only_the_adapter_beside_a_smaller_base(scripts, tiny_data):
    memory_components, _, train_step = scripts
    measured = {
        method: memory_components.measure(train_step.cell_overrides("smollm2", method, tiny_data, tiny=True), 2, 16)
        for method in ("lora", "qlora")
    }
    lora, qlora = measured["lora"], measured["qlora"]
    assert qlora["trainable_params"] == lora["trainable_params"]
    assert qlora["gradients_bytes"] == qlora["trainable_bytes"]  # nothing of the 4-bit base gets a gradient
    assert qlora["optimizer_state_bytes"] == lora["optimizer_state_bytes"]
    assert qlora["weights_bytes"] < lora["weights_bytes"]
    assert "nf4" in qlora["method_settings"] and "nf4" not in lora["method_settings"]


def test_saved_activations_count_each_storage_once_and_leave_weights_out(scripts):
    memory_components = scripts[0]
    layer = torch.nn.Linear(8, 8)
    inputs = torch.randn(4, 8)
    with memory_components.saved_for_backward(layer) as saved:
        hidden = layer(inputs)
        (hidden * hidden).sum().backward()  # saves `hidden` twice; the linear saves its input and weight
    assert sum(saved.values()) == inputs.nbytes + hidden.nbytes


def test_scale_quick_writes_the_requested_grid(tmp_path):
    run_script("scale.py", "--quick", "--backbones=minilm", "--methods=lora", "--lengths=8,16", "--length-batch=2",
               "--batches=1,3", "--batch-length=8", "--warmup=0", "--steps=1", f"--out={tmp_path}")

    rows = read_csv(tmp_path / "scale.csv")
    points = [(row["sweep"], int(row["batch_size"]), int(row["seq_len"])) for row in rows]
    assert points == [("length", 2, 8), ("length", 2, 16), ("batch", 1, 8), ("batch", 3, 8)]
    assert all(row["status"] == "ok" and float(row["step_seconds"]) > 0 for row in rows)
    assert all(float(row["peak_rss_mib"]) >= float(row["loaded_rss_mib"]) for row in rows)
    table = (tmp_path / "scale.md").read_text()
    assert "| minilm | lora | 3 | 8 |" in table and "lengths 8, 16 at batch 2; batches 1, 3 at length 8" in table
    assert (tmp_path / "scale.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_scale_stops_a_sweep_after_a_step_over_the_limit(scripts, tiny_data):
    _, scale, train_step = scripts
    points = [(1, 8), (1, 16), (1, 32)]
    overrides = train_step.cell_overrides("minilm", "full", tiny_data, tiny=True)
    result = scale.sweep(overrides, points, warmup=0, steps=1, max_seconds=0.0)
    assert [(point["batch_size"], point["seq_len"]) for point in result["points"]] == [(1, 8)]

    rows = scale.sweep_rows("minilm", "full", "length", points, result, max_seconds=0.0)
    assert [row["status"] for row in rows] == ["ok", "skipped", "skipped"]
    assert "a step at 1x8 took" in rows[1]["note"] and "--max-seconds-per-cell 0" in rows[1]["note"]


@pytest.mark.parametrize("method", ["full", "lora"])
def test_live_tensor_peak_holds_every_weight_and_the_saved_activations(scripts, tiny_data, method):
    """The profiler's peak of live tensors holds every weight (a weight it failed to see would
    make the live-tensor peak look smaller than it is) and the activations saved for backward, and
    no more gradient bytes than what trains."""
    import live_tensors
    from peftlab.measure import model_bytes

    _, _, train_step = scripts
    cell = train_step.build_cell(
        train_step.compose_config(train_step.cell_overrides("minilm", method, tiny_data, tiny=True)), tiny_data / "run"
    )
    batch = train_step.synthetic_batch(cell, 4, 16)
    peak = live_tensors.live_tensor_peak(lambda: train_step.forward_backward(cell, batch))
    assert peak["parameter"] + peak.get("uncategorized", 0) >= model_bytes(cell.model) - 64 * 1024
    assert peak["activation"] > 0
    trainable = sum(p.numel() * p.element_size() for p in cell.trainable())
    assert peak.get("gradient", 0) <= trainable
