"""benchmarks/gpu_check.py, the full vs LoRA vs QLoRA check for one GPU, run here in its tiny CPU
mode (same code path: one process per contender, save and reload for QLoRA, the table), and at
full size where a CUDA GPU is present."""

from __future__ import annotations

import csv
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
HAS_BITSANDBYTES = importlib.util.find_spec("bitsandbytes") is not None


def gpu_check_module():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


def llama_parameters(shape: dict) -> int:
    """Embeddings (tied to the LM head, so once), per layer q/o (hidden x hidden), k/v (hidden x
    key-value width), gate/up/down (hidden x intermediate) and two RMSNorms, then the final norm."""
    hidden, inner = shape["hidden_size"], shape["intermediate_size"]
    kv_width = hidden // shape["num_attention_heads"] * shape["num_key_value_heads"]
    layer = 2 * hidden * hidden + 2 * hidden * kv_width + 3 * hidden * inner + 2 * hidden
    return shape["vocab_size"] * hidden + shape["num_hidden_layers"] * layer + hidden


def lora_parameters(shape: dict, r: int) -> int:
    """r x (in + out) for each adapted linear layer: q, k, v, o, gate, up, down."""
    hidden, inner = shape["hidden_size"], shape["intermediate_size"]
    kv_width = hidden // shape["num_attention_heads"] * shape["num_key_value_heads"]
    in_out = [(hidden, hidden), (hidden, kv_width), (hidden, kv_width), (hidden, hidden),
              (hidden, inner), (hidden, inner), (inner, hidden)]  # fmt: skip
    return shape["num_hidden_layers"] * sum(r * (fan_in + fan_out) for fan_in, fan_out in in_out)


def run_check(out: Path, *args: str, timeout: float) -> tuple[subprocess.CompletedProcess, dict[str, dict]]:
    completed = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(out), *args],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    with (out / "gpu_check.csv").open() as file:
        return completed, {row["contender"]: row for row in csv.DictReader(file)}


def test_the_formulas_give_llama_3_2_1b_published_counts():
    shape = gpu_check_module().LLAMA_3_2_1B_SHAPE
    assert llama_parameters(shape) == 1_235_814_400
    assert lora_parameters(shape, r=16) == 11_272_192


def test_tiny_check_trains_each_contender_in_its_own_process_and_writes_the_table(tmp_path):
    """Under a minute on two quiet cores: three processes, each importing torch and transformers."""
    module = gpu_check_module()
    completed, rows = run_check(tmp_path, "--tiny", timeout=240)
    assert completed.returncode == 0, completed.stderr[-2000:]

    full, lora = rows["full"], rows["lora"]
    assert full["status"] == lora["status"] == "ok"
    assert int(full["trainable_params"]) == int(full["base_params"]) == llama_parameters(module.TINY_SHAPE)
    assert int(lora["trainable_params"]) == lora_parameters(module.TINY_SHAPE, module.LORA_R) == 32_768
    assert int(lora["base_params"]) == int(full["base_params"])
    for row in (full, lora):
        assert float(row["tokens_per_s"]) > 0 and int(row["timed_steps"]) == 3
        assert float(row["peak_mib"]) > 0 and float(row["weights_mib"]) > 0
    assert float(full["peak_vs_full"]) == float(full["tokens_per_s_vs_full"]) == 1.0
    assert float(lora["peak_vs_full"]) > 0 and float(lora["tokens_per_s_vs_full"]) > 0

    qlora = rows["qlora"]
    if HAS_BITSANDBYTES:
        # Saved in float and reloaded in NF4: the same logical parameters in fewer bytes.
        assert qlora["status"] == "ok", qlora["reason"]
        assert int(qlora["base_params"]) == int(full["base_params"])
        assert int(qlora["trainable_params"]) == int(lora["trainable_params"])
        assert float(qlora["weights_mib"]) < 0.6 * float(lora["weights_mib"])
    else:
        assert qlora["status"] == "skipped" and "fetch_gpu_wheels.sh" in qlora["reason"]

    table = (tmp_path / "gpu_check.md").read_text()
    assert f"`python benchmarks/gpu_check.py --out {tmp_path} --tiny`" in table
    assert f"torch {torch.__version__}, transformers " in table and "bitsandbytes " in table
    assert f"{llama_parameters(module.TINY_SHAPE):,} parameters" in table
    assert "| lora | ok | 32,768 |" in table


def test_a_spent_budget_stops_the_contender_and_skips_the_rest(tmp_path):
    budget = ["--budget-seconds", "0.5"]
    completed, rows = run_check(tmp_path, "--tiny", "--contenders", "full", "lora", *budget, timeout=60)
    assert completed.returncode == 1
    assert rows["full"]["status"] == "failed" and "stopped by the budget after" in rows["full"]["reason"]
    assert rows["lora"]["status"] == "skipped" and "budget was spent" in rows["lora"]["reason"]
    assert "qlora" not in rows


@pytest.mark.gpu
def test_full_size_check_on_the_gpu(tmp_path):
    """The Llama-3.2-1B shape in bf16, few steps: LoRA needs less memory than full fine-tuning
    (no gradients or AdamW states for the base), QLoRA's 4-bit base less than LoRA's bf16 one."""
    module = gpu_check_module()
    completed, rows = run_check(tmp_path, "--rounds", "1", "--warmup", "2", "--steps", "5", timeout=480)
    full, lora, qlora = rows["full"], rows["lora"], rows["qlora"]
    assert full["status"] == lora["status"] == "ok", completed.stderr[-2000:]
    assert int(full["base_params"]) == llama_parameters(module.LLAMA_3_2_1B_SHAPE)
    assert int(lora["trainable_params"]) == lora_parameters(module.LLAMA_3_2_1B_SHAPE, module.LORA_R)
    assert float(lora["peak_mib"]) < float(full["peak_mib"])
    if HAS_BITSANDBYTES:
        assert qlora["status"] == "ok", qlora["reason"]
        assert float(qlora["weights_mib"]) < 0.5 * float(lora["weights_mib"])
        assert float(qlora["peak_mib"]) < float(lora["peak_mib"])
