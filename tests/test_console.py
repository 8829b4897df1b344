"""A clean console: peftlab's lines and what a user must act on; the expected library noise
(transformers' load report, bitsandbytes, deprecations between libraries) in the run's log file."""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from peftlab.console import PEFTLAB_SOURCE, KeepLibraryNoiseInTheLog
from peftlab.run import prepare
from tests.helpers import ROOT, peftlab

SITE_PACKAGES = "/venv/lib/python3.11/site-packages"


def record(name: str, level: int = logging.WARNING, module_file: str = "x.py", message: str = "m") -> logging.LogRecord:
    return logging.LogRecord(name, level, f"/somewhere/{module_file}", 1, message, None, None)


def captured_warning(path: str, category: str) -> logging.LogRecord:
    """A warning as `logging.captureWarnings` logs it."""
    return logging.LogRecord("py.warnings", logging.WARNING, "/x/logging.py", 1, "%s",
                             (f"{path}:12: {category}: something changed\n  warnings.warn(\n",), None)


@pytest.mark.parametrize(
    "entry, on_console",
    [
        (record("transformers.modeling_utils", module_file="loading_report.py"), False),
        (record("transformers.modeling_utils", logging.ERROR, module_file="loading_report.py"), True),
        (record("transformers.modeling_utils", module_file="modeling_utils.py"), True),  # any other warning
        (record("bitsandbytes.backends.cpu.ops"), False),  # "Failed to load CPU gemm_4bit_forward from kernels..."
        (record("bitsandbytes.cextension", logging.ERROR), True),
        (captured_warning(f"{SITE_PACKAGES}/transformers/modeling_utils.py", "FutureWarning"), False),
        (captured_warning(f"{SITE_PACKAGES}/torch/jit/_script.py", "DeprecationWarning"), False),
        (captured_warning(f"{SITE_PACKAGES}/seqeval/metrics/v1.py", "UndefinedMetricWarning"), True),
        (captured_warning(f"{PEFTLAB_SOURCE}/run.py", "FutureWarning"), True),
        (record("peftlab"), True),
    ],
)
def test_the_console_filter_keeps_out_only_the_expected_library_noise(entry, on_console):
    assert KeepLibraryNoiseInTheLog().filter(entry) is on_console


def test_a_new_head_is_said_in_one_line_with_its_size_and_what_the_task_leaves_out(tiny_config, caplog):
    with caplog.at_level(logging.INFO, logger="peftlab"):
        prepared = prepare(tiny_config("method=lora"))
    assert f"new task head: classifier ({prepared.params.head:,} params); not used from the checkpoint: pooler.dense" in caplog.text
    assert not [entry for entry in caplog.records if entry.levelno >= logging.WARNING and entry.name == "peftlab"]


def test_body_weights_missing_from_the_checkpoint_are_a_warning_naming_them(tiny_backbone, tiny_config, tmp_path, caplog):
    damaged = tmp_path / "damaged"
    shutil.copytree(tiny_backbone, damaged)
    weights = load_file(damaged / "model.safetensors")
    missing = next(name for name in weights if "layer.1.output.dense.weight" in name)
    save_file({name: value for name, value in weights.items() if name != missing}, damaged / "model.safetensors",
              metadata={"format": "pt"})
    with caplog.at_level(logging.INFO, logger="peftlab"):
        prepare(tiny_config("method=lora", f"backbone.pretrained={damaged}"))
    warnings = [entry.getMessage() for entry in caplog.records if entry.levelno == logging.WARNING and entry.name == "peftlab"]
    assert len(warnings) == 1 and "encoder.layer.1.output.dense.weight" in warnings[0]
    assert "backbone.pretrained" in warnings[0]


def test_a_plain_run_shows_the_head_line_and_keeps_the_load_report_and_deprecations_in_its_log(
    tiny_backbone, tiny_ner_dir, tmp_path
):
    run_dir = tmp_path / "run"
    completed = peftlab(
        "task=conll2003", f"task.data.path={tiny_ner_dir}", f"backbone.pretrained={tiny_backbone}", "method=lora",
        "trainer=smoke", f"hydra.run.dir={run_dir}", cwd=tmp_path,
    )
    assert completed.returncode == 0, completed.stderr
    console = completed.stdout + completed.stderr
    assert "new task head: classifier" in console
    for noise in ("LOAD REPORT", "FutureWarning", "is_gradient_checkpointing"):
        assert noise not in console
    log_file = run_dir / "__main__.log"
    assert f"log: {log_file} (" in completed.stdout and "not shown above)" in completed.stdout
    logged = log_file.read_text()
    assert "LOAD REPORT" in logged and "FutureWarning" in logged and "new task head: classifier" in logged


def test_importing_peftlab_console_for_the_logging_config_imports_no_library():
    code = "import sys, peftlab.console; print(sorted({'transformers', 'torch', 'bitsandbytes'} & set(sys.modules)))"
    completed = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                               env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert completed.stdout.strip() == "[]", completed.stderr
