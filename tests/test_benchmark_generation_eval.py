"""benchmarks/generation_eval.py on the tiny Llama: `compare --quick` trains an adapter once, measures a
checkout against itself in fresh processes that load it, saves the predictions of both splits,
and finds them identical."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import TINY_CLASSIFIED, write_csv

ROOT = Path(__file__).resolve().parents[1]


def test_generation_eval_compares_two_checkouts_on_a_tiny_model(tiny_decoder, tmp_path):
    data = tmp_path / "banking"
    data.mkdir()
    for name in ("train.csv", "dev.csv", "test.csv"):
        write_csv(data / name, ["text", "category"], TINY_CLASSIFIED)
    out = tmp_path / "out"
    command = [
        sys.executable, str(ROOT / "benchmarks" / "generation_eval.py"), "compare", str(ROOT), str(ROOT), str(out),
        "--quick", "--repeats", "3", f"task.data.path={data}", f"backbone.pretrained={tiny_decoder}",
        "backbone.gguf_file=null", "task.max_new_tokens=3", "task.generation_batch_tokens=8", "+trainer.extra.use_cpu=true",
    ]
    finished = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert "16 prompts, 5 training steps, 1 repeats; predictions identical: True" in finished.stdout  # --quick's sizes win

    with (out / "generation_eval.csv").open() as file:
        rows = list(csv.DictReader(file))
    assert [row["version"] for row in rows] == ["before", "after"]
    record = json.loads((out / "after_0.json").read_text())
    assert record["peftlab"] == str(ROOT / "peftlab")  # the checkout named, not the installed one
    assert record["adapter"] == str(out / "adapter") and (out / "adapter" / "adapter_model.safetensors").exists()
    assert [len(record["predictions"][split]) for split in ("validation", "test")] == [8, 8]
    assert record["peak_rss_mb"] >= record["rss_before_eval_mb"] > 0
    assert record["eval_seconds"] == sum(record["split_seconds"].values()) > 0
    assert set(record["metrics"]["test"]) >= {"test_loss", "test_exact_match"}

    table = (out / "generation_eval.md").read_text()
    assert "predictions identical: True" in table and "generation_eval.py compare " in table and "--quick" in table  # the command that made it
    peak_row = next(line for line in table.splitlines() if line.startswith("| peak RSS"))
    before, after = (float(row["peak_rss_mb"]) for row in rows)
    assert peak_row.split("|")[2:4] == [f" {before:,.1f} ", f" {after:,.1f} "]
