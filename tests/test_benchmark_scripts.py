"""The benchmark tables come from the report package: the quantization table (once
benchmarks/summarize_quant.py) checked against numbers computed by hand from hand-made
result.json files, and the benchmark scripts checked to take their settings from
conf/experiment/ and their tables from `python -m peftlab.report`."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from peftlab.report import write_report
from peftlab.report.quantization import quantization_groups
from peftlab.report.read import read_runs
from tests.conftest import compose_config
from tests.helpers import ROOT, failed, result, write_runs

NF4 = {"name": "nf4", "bits": 4, "quant_type": "nf4", "double_quant": True}
QUANT_CONFIGS = {"none": {"name": "none", "bits": None}, "int8": {"name": "int8", "bits": 8}, "nf4": NF4}


def quant_run(quant: str, seed: int, test_f1: float, model_bytes: int, train_seconds: float, **settings) -> dict:
    run = result("lora", seed, test_f1, quant=quant, train_seconds=train_seconds, samples_per_second=800 / train_seconds)
    run["memory"]["model_bytes"] = model_bytes
    run["config"]["quant"] = {**QUANT_CONFIGS[quant], **settings}
    run["config"]["trainer"] = {"epochs": 1, "batch_size": 8, "grad_accum": 1}
    return run


def quantization_sweep() -> list[dict]:
    """LoRA on a float, an 8-bit and a 4-bit base (two seeds); one 8-bit run failed."""
    return [
        quant_run("nf4", 0, 0.3204, 53_338_452, 250.0),
        quant_run("none", 0, 0.3344, 90_289_716, 200.0),
        quant_run("int8", 0, 0.3245, 58_522_164, 210.0),
        quant_run("nf4", 1, 0.3304, 53_338_452, 254.0),
        {**failed("lora", 1, "RuntimeError: boom\n  at step 2"), "quant": "int8"},
    ]


def quantization_table(markdown: str) -> list[list[str]]:
    section = markdown.split("## Quantization: ", 1)[1].split("\n## ", 1)[0]
    return [line.strip("| ").split(" | ") for line in section.splitlines() if line.startswith("|")][2:]


def test_quantization_table_by_bits_with_ratios_to_the_float_base(tmp_path):
    """By hand: nf4 mean (32.04 + 33.04) / 2 = 32.54, sample std sqrt(2 x 0.5^2) = 0.71, Δ
    32.54 - 33.44 = -0.90; model 90,289,716 B = 86.1 MiB, int8 58,522,164 / 90,289,716 = 0.65,
    nf4 53,338,452 / 90,289,716 = 0.59; time int8 210 / 200 = 1.05, nf4 252 / 200 = 1.26."""
    markdown = write_report(write_runs(tmp_path, quantization_sweep()))["markdown"].read_text()
    rows = quantization_table(markdown)
    assert [row[:3] for row in rows] == [
        ["none", "33.44 (n=1)", "—"], ["int8", "32.45 (n=1)", "-0.99"], ["nf4", "32.54 ± 0.71 (n=2)", "-0.90"],
    ]
    assert [row[3:5] for row in rows] == [["86.1", "1.00"], ["55.8", "0.65"], ["50.9", "0.59"]]
    assert [(row[6], row[7]) for row in rows] == [("200.0", "1.00"), ("210.0", "1.05"), ("252.0", "1.26")]
    assert "| lora | int8 | 1 | RuntimeError: boom |" in markdown  # the failed run, with its quantization
    assert "No GPU: on CPU bitsandbytes dequantizes every weight" in markdown


def test_runs_that_share_one_quantization_get_no_quantization_table(tmp_path):
    runs = [result("lora", 0, 0.8), result("full", 0, 0.82)]
    assert quantization_groups(read_runs(write_runs(tmp_path, runs))[0]) == []
    assert "Quantization" not in write_report(tmp_path)["markdown"].read_text()


def test_two_settings_of_one_quantization_are_two_rows_named_by_the_setting(tmp_path):
    runs = [
        quant_run("none", 0, 0.33, 90_000_000, 200.0),
        quant_run("nf4", 0, 0.32, 53_000_000, 250.0, double_quant=True),
        quant_run("nf4", 0, 0.31, 55_000_000, 250.0, double_quant=False),
    ]
    (group,) = quantization_groups(read_runs(write_runs(tmp_path, runs))[0])
    assert [row.label for row in group.rows] == [
        "none", "nf4 (quant.double_quant=false)", "nf4 (quant.double_quant=true)",
    ]


def test_a_quantization_on_another_budget_has_its_delta_marked(tmp_path):
    runs = [quant_run("none", 0, 0.33, 90_000_000, 200.0), quant_run("nf4", 0, 0.32, 53_000_000, 250.0)]
    runs[1]["config"]["trainer"]["batch_size"] = 16
    (group,) = quantization_groups(read_runs(write_runs(tmp_path, runs))[0])
    assert group.rows[1].budget_differences == ["trainer.batch_size=16 (none: 8)"]
    markdown = write_report(tmp_path)["markdown"].read_text()
    assert quantization_table(markdown)[1][2] == "-1.00*"


def test_a_method_swept_over_a_setting_gets_a_quantization_table_per_setting(tmp_path):
    runs = [quant_run(quant, 0, f1, 90_000_000, 200.0) for quant, f1 in (("none", 0.33), ("nf4", 0.32), ("none", 0.35),
                                                                           ("nf4", 0.30))]
    for run, r in zip(runs, (8, 8, 16, 16)):
        run["config"]["method"].update(r=r, peft={"r": r})
    groups = quantization_groups(read_runs(write_runs(tmp_path, runs))[0])
    assert [(group.label, [row.delta_vs_none for row in group.rows]) for group in groups] == [
        ("lora (r=16)", pytest.approx([0.0, -5.0])), ("lora (r=8)", pytest.approx([0.0, -1.0])),
    ]
    assert "## Quantization: `lora (r=16)`, `conll2003`" in write_report(tmp_path)["markdown"].read_text()


def test_methods_and_gpu_memory_split_and_widen_the_table(tmp_path):
    """One table per method; a peak CUDA column once a run measured it, and no CPU caveat."""
    runs = [
        quant_run("none", 0, 0.33, 90_000_000, 200.0), quant_run("nf4", 0, 0.32, 53_000_000, 250.0),
        {**result("ia3", 0, 0.30, quant="none", cuda=900.0)}, {**result("ia3", 0, 0.29, quant="int8", cuda=700.0)},
    ]
    groups = quantization_groups(read_runs(write_runs(tmp_path, runs))[0])
    assert [(group.method, group.on_gpu) for group in groups] == [("ia3", True), ("lora", False)]
    markdown = write_report(tmp_path)["markdown"].read_text()
    assert markdown.count("## Quantization: ") == 2 and markdown.count("No GPU:") == 1
    assert "| peak CUDA MB |" in markdown


# --- the scripts ----------------------------------------------------------------------------------

SCRIPTS = sorted(path for path in (ROOT / "benchmarks").glob("*.sh") if "python -m peftlab" in path.read_text())
# `python` for the scripts: records each call (one argument a line, then ---) and writes the
# report.md a run of peftlab.report or a sweep's end would, so the script runs to its end.
RECORDING_PYTHON = """#!/usr/bin/env bash
printf '%s\\n' "$@" --- >> "$CALLS"
for argument in "$@"; do
    case $argument in hydra.sweep.dir=*) mkdir -p "${argument#*=}"; touch "${argument#*=}/report.md" ;; esac
done
[[ $2 == peftlab.report ]] && mkdir -p "$3" && touch "$3/report.md"
exit 0
"""
# What a script may say on peftlab's command line: which experiment (and quant, the axis the
# quantization script runs one process per value of), where the data is and where runs go.
ALLOWED = re.compile(r"(experiment|quant|task\.data\.path|hydra[./]\S+)=|-m$")


def recorded_calls(script: Path, tmp_path: Path, *arguments: str) -> list[list[str]]:
    """Run a copy of the script under tmp_path (its `cd` lands there, so its rm -rf does too)
    with the recording python first on PATH; the peftlab calls it made."""
    copy = tmp_path / "benchmarks" / script.name
    copy.parent.mkdir(parents=True, exist_ok=True)
    copy.write_text(script.read_text())
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "python").write_text(RECORDING_PYTHON)
    (bin_dir / "python").chmod(0o755)
    calls = tmp_path / "calls.txt"
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "CALLS": str(calls), "DATA": "data"}
    env.pop("OUT", None)
    completed = subprocess.run(["bash", str(copy), *arguments], env=env, capture_output=True, text=True, timeout=60)
    assert completed.returncode == 0, completed.stderr
    recorded = [call.strip("\n").split("\n") for call in calls.read_text().split("---\n") if call.strip()]
    return [call[2:] for call in recorded if call[:2] == ["-m", "peftlab"]]


# script -> its setups (its first argument); () for a script without any
SETUPS = {
    "wnut17.sh": ("methods", "seeds"), "quantization.sh": ("minilm", "smollm2"),
    "conll2003_minilm.sh": (), "classification_minilm.sh": (),
}


@pytest.mark.parametrize(
    ("name", "setup"), [(name, setup) for name, setups in SETUPS.items() for setup in setups or (None,)]
)
def test_benchmark_scripts_take_every_setting_from_an_experiment_config(name, setup, tmp_path):
    """Each peftlab command a script runs names a conf/experiment/ file, composes, and pins
    nothing else in shell arguments."""
    calls = recorded_calls(ROOT / "benchmarks" / name, tmp_path, *([setup] if setup else []))
    assert calls, f"{name} ran no peftlab command"
    for call in calls:
        assert any(argument.startswith("experiment=") for argument in call), call
        pinned = [argument for argument in call if not ALLOWED.match(argument)]
        assert pinned == [], f"{name} pins {pinned}: move them into its experiment config"
        compose_config([argument for argument in call if not argument.startswith(("hydra", "-m"))])


def test_every_script_that_runs_peftlab_is_checked():
    assert {script.name for script in SCRIPTS} == set(SETUPS)
