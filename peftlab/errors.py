"""Errors a user can fix. The entry point prints them as one paragraph and exits non-zero,
without a traceback; anything else that escapes is a bug in peftlab and keeps its traceback."""

import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

USER_ERROR_EXIT_CODE = 2  # argparse's, for a command the user can fix


class PeftlabError(Exception):
    """Base class: the message names the problem and the fix (config key, file and line)."""


class ConfigError(PeftlabError):
    """A config value is missing, unknown or out of range."""


class DataError(PeftlabError):
    """A data file or split is missing, malformed or empty."""


class RunError(PeftlabError):
    """A run folder that cannot serve a model: not a run, a failed run, a missing checkpoint, or a
    backbone this machine cannot load."""


class Unsupported(PeftlabError):
    """A method asked for something it cannot do (merge into its base, share a base with other
    runs): the message says why and what to do instead."""


class ProtocolError(PeftlabError):
    """A comparison protocol that cannot run as given, or a step of it that failed (protocol.py)."""


def exit_with(error: PeftlabError) -> NoReturn:
    """End the command on a user error: its paragraph on stderr, exit code 2."""
    print(f"\npeftlab: error: {error}", file=sys.stderr)
    sys.exit(USER_ERROR_EXIT_CODE)


def run_command(name: str, usage: str, body: Callable[[list[str]], object], argv: list[str] | None) -> int:
    """The entry point of a `python -m peftlab.<command> [overrides]` that drives runs (protocol,
    continual): `-h` prints its usage, a user error is one paragraph on stderr and exit code 2.
    Returns the exit code: `body`'s where it returns one (an int), else 0 (a body may return
    what it wrote, as run_continual returns continual.json's path)."""
    overrides = list(sys.argv[1:] if argv is None else argv)
    if overrides in (["-h"], ["--help"]):
        print(usage)
        return 0
    try:
        outcome = body(overrides)
    except PeftlabError as error:
        print(f"\n{name}: error: {error}", file=sys.stderr)
        return USER_ERROR_EXIT_CODE
    return outcome if isinstance(outcome, int) else 0


def refuse_other_overrides(
    folder: Path, saved: list[str], now: list[str], command: str, extendable: tuple[str, ...], error: type[PeftlabError]
) -> None:
    """A folder of a command that resumes (protocol, continual) continues the command that made it,
    not another: runs made with other data or settings would end up in one comparison. Only the
    overrides starting with `extendable` (which methods, seeds or regimes run, how far a search
    goes) may differ."""
    before, after = (
        [override for override in overrides if not override.startswith(extendable)] for overrides in (saved, now)
    )
    if before != after:
        may_change = " and ".join(prefix.rstrip("=") for prefix in extendable)
        raise error(
            f"{folder} holds a {command} run with other overrides ({shlex.join(before)}), not these "
            f"({shlex.join(after)}); only {may_change} may change when resuming. Run it with the same "
            f"overrides, or give this one another {command}.dir."
        )
