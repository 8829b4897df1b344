"""What the console shows of a run: peftlab's own lines, every warning a user must act on and
every error. Library messages that are expected on every run go to the run's log file only
(Hydra's job log, `<run folder>/__main__.log`, configured by conf/hydra/job_logging/peftlab.yaml):

- transformers' load report, the table of weights a new head lacks and checkpoint weights the
  task leaves out: peftlab says it in one line ("new task head: classifier (3,465 params)"),
  and warns itself when weights of the body are missing (`backbones.say_what_loaded`);
- bitsandbytes below an error: peft imports it on every run, quantized or not, and its warnings
  are about its native library and CPU kernels, which change speed, not results;
- deprecation warnings raised inside a library (FutureWarning, DeprecationWarning): one library
  calling another's deprecated API (peft reading transformers' `is_gradient_checkpointing`) is
  news for their maintainers, not for a user of peftlab.

Everything else a library says stays on the console: an unknown warning may be one to act on.
A record logged with `extra=FILE_ONLY` goes to the file alone: the error a command prints
itself as its last paragraph would otherwise show twice."""

from __future__ import annotations

import logging
import re
from pathlib import Path

PEFTLAB_SOURCE = str(Path(__file__).resolve().parent)
LOAD_REPORT_MODULE = "loading_report"  # transformers/utils/loading_report.py logs the table
QUIET_LIBRARIES = ("bitsandbytes",)
DEPRECATIONS = {"DeprecationWarning", "FutureWarning", "PendingDeprecationWarning"}
# how `logging.captureWarnings` words a warning: warnings.formatwarning's "file:line: Category: message"
CAPTURED_WARNING = re.compile(r"(?P<file>.+?):\d+: (?P<category>\w+): ")
FILE_ONLY = {"console": False}  # logging `extra`: this record is for the log file


class KeepLibraryNoiseInTheLog(logging.Filter):
    """The console handler's filter: False (not shown) for the messages the module docstring
    lists. `held_back` counts them, so that the run can say where they are."""

    held_back = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "console", True):
            return False
        if record.levelno >= logging.ERROR or not _expected_noise(record):
            return True
        type(self).held_back += 1
        return False


def route_library_messages() -> None:
    """Send transformers' messages and Python warnings through the logging configuration (and so
    to the log file and the console filter), instead of straight to stderr: transformers logs
    through its own handler unless told to propagate, and warnings print themselves. Called
    before the heavy imports, whose warnings it routes too."""
    import transformers

    transformers.logging.disable_default_handler()
    transformers.logging.enable_propagation()
    logging.captureWarnings(True)


def _expected_noise(record: logging.LogRecord) -> bool:
    if record.name.startswith("transformers") and record.module == LOAD_REPORT_MODULE:
        return True
    if record.name.split(".")[0] in QUIET_LIBRARIES:
        return True
    if record.name == "py.warnings":
        warned = CAPTURED_WARNING.match(record.getMessage())
        return bool(warned) and warned["category"] in DEPRECATIONS and not warned["file"].startswith(PEFTLAB_SOURCE)
    return False


def held_back_note(log_file: Path) -> str:
    """Where the messages kept out of the console are, when there were any."""
    count = KeepLibraryNoiseInTheLog.held_back
    if not count:
        return f"log: {log_file}"
    return f"log: {log_file} ({count} library message{'s' if count > 1 else ''} not shown above)"
