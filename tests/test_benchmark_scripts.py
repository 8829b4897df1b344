"""The quantization benchmark's table (benchmarks/summarize_quant.py), from hand-made
result.json files: row order, size ratio against the float base, time per step, failures."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from tests.test_report import failed, result

ROOT = Path(__file__).resolve().parents[1]


def summarize_quant():
    spec = importlib.util.spec_from_file_location("summarize_quant", ROOT / "benchmarks" / "summarize_quant.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def quant_run(quant: str, test_f1: float, model_bytes: int, samples_per_second: float) -> dict:
    run = result("lora", 0, test_f1, quant=quant, samples_per_second=samples_per_second)
    run["memory"]["model_bytes"] = model_bytes
    run["config"]["trainer"] = {"batch_size": 8, "grad_accum": 2}
    return run


def test_quant_table_orders_by_bits_and_compares_sizes_with_the_float_base(tmp_path):
    runs = {
        "nf4": quant_run("nf4", 0.3204, 53_338_452, 12.5),
        "none": quant_run("none", 0.3344, 90_289_716, 16.0),
        "int8": quant_run("int8", 0.3245, 58_522_164, 14.0),
        "broken": {**failed("lora", 1, "RuntimeError: boom\n  at step 2"), "quant": "int8"},
    }
    for name, run in runs.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "result.json").write_text(json.dumps(run))

    lines = summarize_quant().table(tmp_path).splitlines()

    rows = [line.split(" | ") for line in lines if line.startswith("| ") and "lora" in line]
    assert [(row[0], row[2]) for row in rows] == [("| none", "0"), ("| int8", "0"), ("| int8", "1"), ("| nf4", "0")]
    none, int8, broken, nf4 = rows
    assert (none[3], int8[3], nf4[3]) == ("33.44", "32.45", "32.04")
    assert (none[5], none[6]) == ("86.1", "1.00")  # 90,289,716 bytes = 86.1 MiB
    assert (int8[6], nf4[6]) == ("0.65", "0.59")
    assert none[9] == "1.000" and nf4[9] == "1.280"  # 8 x 2 samples a step / samples per second
    assert broken[3] == "failed: RuntimeError: boom" and broken[6] == ""
    assert "device: CPU" in lines[0]
