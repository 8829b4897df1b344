"""`python -m peftlab.protocol experiment=conll2003_protocol [overrides]`: compare methods fairly,
in one command (conf/experiment/*_protocol.yaml).

For each method of `protocol.methods`, the learning rate is tuned on validation: a sweep tries
the method's default rate times each of `protocol.search.lr_factors`, one run each at the
trial budget (the experiment's settings changed by `protocol.search.overrides`), and the best
validation primary metric chooses; with `protocol.search.extend_at_edge: N`, a best rate at the
edge of the grid sends up to N more trials beyond it. The chosen rate then trains once per seed
of `protocol.seeds` at the experiment's budget, with its model selection (the best validation
checkpoint, early stopping). Every other setting is the same for every method. Test is scored by every run and
consulted by nothing here.

The search is a grid, not Optuna: with three trials, evenly spread rates say more than a
sampler's draws (TPE samples at random for its first ten), and Optuna's grid sampler in
hydra-optuna-sweeper 1.3 (Optuna 2.10) ends the whole sweep with a RuntimeError when the last
rate of the grid fails, as a diverging rate does. `hparams_search=lr` remains for wider
searches by hand.

Hydra runs one sweep per command, so each search and each seed sweep is a `python -m peftlab
-m` process; this module composes the config to check it, launches them, reads the runs'
result.json, and writes into `protocol.dir`:

    search/<method>/<method>_lr<rate>/  the trials, a run folder each
    runs/<method>/<method>_s<seed>/     the runs the comparison is made of
    protocol.json, protocol.md          the rate tuned per method, the trials and their
                                        validation scores, the seeds run, the step each kept
    report.md, .html, results.csv       the report over runs/ (python -m peftlab.report)

Run again, the command resumes: a rate with a result.json has been tried (a failed trial is
an outcome: that rate diverged or was refused) and a seed with an `ok` result.json has run;
only the others run.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from peftlab.config import check_config, config_dir
from peftlab.errors import ConfigError, ProtocolError, refuse_other_overrides, run_command
from peftlab.result import RESULT_FILE, Result, ResultFileError, git_sha, primary_score

SUMMARY_JSON = "protocol.json"
SUMMARY_MARKDOWN = "protocol.md"
# Keys the protocol sets in every run it launches: a user who sets them means protocol.* instead.
PROTOCOL_KEYS = {
    "method": "protocol.methods", "seed": "protocol.seeds", "trainer.lr": "protocol.search.lr_factors",
    "hparams_search": "protocol.search", "protocol": "protocol.*",
}
# Overrides a resumed protocol may change: which methods and seeds run, and how far a search
# goes beyond its grid (trials are added, none made is changed), not how anything trains.
EXTENDABLE = ("protocol.methods=", "protocol.seeds=", "protocol.search.extend_at_edge=")


@dataclass
class Trial:
    lr: float
    status: str
    validation: float | None
    run: str  # the run folder, relative to protocol.dir


@dataclass
class SeedRun:
    seed: int
    status: str
    validation: float | None
    selected_step: int | None  # the step whose weights were scored (result.json's selection)
    early_stopped: bool | None
    run: str


@dataclass
class MethodOutcome:
    method: str
    default_lr: float
    rates_tried: list[float]
    metric: str | None = None  # the validation score that chose: the task's primary metric
    trials: list[Trial] = field(default_factory=list)
    tuned_lr: float | None = None
    best_validation: float | None = None
    seeds: list[SeedRun] = field(default_factory=list)
    rates_added: list[float] = field(default_factory=list)  # beyond the grid (protocol.search.extend_at_edge)

    @property
    def at_grid_edge(self) -> bool:
        """The best rate is the lowest or highest tried: a wider grid may find a better one."""
        return len(self.rates_tried) > 1 and self.tuned_lr in (min(self.rates_tried), max(self.rates_tried))


def main(argv: list[str] | None = None) -> int:
    return run_command("peftlab.protocol", __doc__, run_protocol, argv)


def run_protocol(overrides: list[str]) -> int:
    """Every method of the protocol, in order; the summary and the report are rewritten after each,
    so an interrupted protocol keeps what it finished. 1 when a seed's run failed, else 0."""
    check_overrides(overrides)
    cfg = compose_config(overrides)
    protocol = cfg.protocol
    out = Path(protocol.dir).resolve()
    check_resumable(out, overrides)
    check_methods(list(protocol.methods))
    method_configs = {method: compose_config([*overrides, f"method={method}"]) for method in protocol.methods}
    check_validation_split(cfg)
    outcomes = []
    for method, method_cfg in method_configs.items():
        outcome = tune_learning_rate(method, method_cfg, overrides, out)
        outcome.seeds = run_seeds(method, outcome.tuned_lr, list(protocol.seeds), overrides, out)
        outcomes.append(outcome)
        write_summary(out, cfg, overrides, outcomes)
        write_comparison_report(out)
    print(f"\nprotocol: {out / SUMMARY_MARKDOWN}\nreport: {out / 'report.md'}")
    failed = [f"{o.method} seed {run.seed}" for o in outcomes for run in o.seeds if run.status != "ok"]
    if failed:
        print(f"failed runs: {', '.join(failed)}; run the same command again to retry them", file=sys.stderr)
    return 1 if failed else 0


def check_overrides(overrides: list[str]) -> None:
    for override in overrides:
        if override.startswith("-"):
            raise ProtocolError(
                f"{override!r}: the protocol takes Hydra overrides only (key=value); it runs its own sweeps."
            )
        key = override.split("=", 1)[0].lstrip("+~")
        if key in PROTOCOL_KEYS or key.startswith("hydra.sweep."):
            instead = PROTOCOL_KEYS.get(key, "protocol.dir")
            raise ProtocolError(
                f"{override!r}: the protocol sets {key} in every run it launches; set {instead} instead "
                "(e.g. protocol.methods=[full,lora] protocol.seeds=[0,1,2])."
            )


def compose_config(overrides: list[str]) -> DictConfig:
    """The config a run of these overrides would get, checked as a run checks it, with a protocol."""
    try:
        with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
            cfg = compose(config_name="config", overrides=overrides)
    except (HydraException, OmegaConfBaseException) as error:
        raise ProtocolError(f"the config does not compose: {error}") from error
    if cfg.protocol is None:
        raise ProtocolError(
            "no protocol in this config: choose a protocol experiment, "
            f"experiment={' or experiment='.join(protocol_experiments())} (conf/experiment/*_protocol.yaml), "
            "or give your own experiment a `protocol:` section."
        )
    check_config(cfg)
    problems = []
    if not cfg.protocol.methods:
        problems.append("protocol.methods is empty: name the methods to compare, e.g. [full,lora]")
    if not cfg.protocol.seeds:
        problems.append("protocol.seeds is empty: give at least one seed, e.g. [0,1,2]")
    factors = list(cfg.protocol.search.lr_factors)
    if not factors or min(factors) <= 0:
        problems.append(f"protocol.search.lr_factors={factors} must be factors > 0, e.g. [0.333,1,3]")
    if problems:
        raise ConfigError("; ".join(problems) + ".")
    return cfg


def check_methods(methods: list[str]) -> None:
    known = sorted(path.stem for path in (Path(config_dir()) / "method").glob("*.yaml"))
    unknown = [method for method in methods if method not in known]
    if unknown:
        raise ConfigError(
            f"protocol.methods names {', '.join(map(repr, unknown))}, not a method of conf/method/; the methods: "
            f"{', '.join(known)}."
        )
    if len(set(methods)) < len(methods):
        raise ConfigError(f"protocol.methods={methods} names a method twice.")


def protocol_experiments() -> list[str]:
    return sorted(path.stem for path in (Path(config_dir()) / "experiment").glob("*_protocol.yaml"))


def check_resumable(out: Path, overrides: list[str]) -> None:
    """A protocol folder resumes the protocol that made it, not another: runs made with other data
    or settings would end up in one comparison."""
    summary = out / SUMMARY_JSON
    if summary.is_file():
        saved = json.loads(summary.read_text())["overrides"]
        refuse_other_overrides(out, saved, overrides, "protocol", EXTENDABLE, ProtocolError)


def check_validation_split(cfg: DictConfig) -> None:
    """Load the data once before any run: a wrong path fails here, not in every trial. Every choice
    the protocol makes is made on validation, which a task carves from train when it has none."""
    from peftlab.tasks import build_task  # heavy: torch, transformers

    task = build_task(cfg.task)
    splits = task.prepare_data()
    if not splits.get("validation"):
        raise ProtocolError(
            f"task {cfg.task.name!r} has no validation examples ({task.data_source()}), and the protocol chooses "
            "every setting on validation: add a validation file (dev/valid/validation) or set "
            "task.data.validation_fraction."
        )


def tune_learning_rate(method: str, cfg: DictConfig, overrides: list[str], out: Path) -> MethodOutcome:
    """Each rate of the grid once, at the trial budget, then (protocol.search.extend_at_edge)
    rates beyond an edge whose rate scored best; the best validation score chooses (of two equal
    scores, the lower rate). Rates tried before are read back, not run again."""
    search = cfg.protocol.search
    default_lr = float(cfg.trainer.lr)
    search_dir = out / "search" / method
    grid = sorted({rounded(default_lr * factor) for factor in search.lr_factors})
    results = run_trials(method, grid, overrides, search, search_dir)
    for _ in range(search.extend_at_edge):
        beyond = rate_beyond_edge(results)
        if beyond is None:
            break
        results |= run_trials(method, [beyond], overrides, search, search_dir)
    trials = [
        Trial(lr=rate, status=result.status, validation=validation_score(result),
              run=str((search_dir / trial_name(method, rate)).relative_to(out)))
        for rate, result in sorted(results.items())
    ]
    tuned_lr = best_rate(results)
    if tuned_lr is None:
        raise ProtocolError(
            f"every learning-rate trial of method {method!r} failed, in {search_dir}: {failure_summary(results)}"
        )
    return MethodOutcome(
        method=method, default_lr=default_lr, rates_tried=[trial.lr for trial in trials], trials=trials,
        tuned_lr=tuned_lr, best_validation=validation_score(results[tuned_lr]),
        metric=next(result.primary_metric for result in results.values() if result.status == "ok"),
        rates_added=sorted(set(results) - set(grid)),
    )


def rounded(rate: float) -> float:
    """Three significant digits: the rate a trial's folder and the final runs are named by."""
    return float(f"{rate:.3g}")


def trial_name(method: str, rate: float) -> str:
    return f"{method}_lr{rate}"


def run_trials(method: str, rates: list[float], overrides: list[str], search: DictConfig,
               search_dir: Path) -> dict[float, Result]:
    """The result of each rate's trial, running (one sweep) those that have none yet."""
    untried = [rate for rate in rates if not (search_dir / trial_name(method, rate) / RESULT_FILE).is_file()]
    if untried:
        print(f"\n== {method}: learning rate on validation, trials at {', '.join(map(str, untried))}", flush=True)
        peftlab_sweep(
            [*overrides, f"method={method}", f"trainer.lr={','.join(map(str, untried))}",
             f"hydra.sweep.dir={search_dir}", "hydra.sweep.subdir=${method.name}_lr${trainer.lr}", *search.overrides],
        )
    results = {rate: read_run(search_dir / trial_name(method, rate)) for rate in rates}
    unfinished = [str(rate) for rate, result in results.items() if result is None]
    if unfinished:
        raise ProtocolError(
            f"the trials of method {method!r} at trainer.lr={', '.join(unfinished)} wrote no result.json (in "
            f"{search_dir}); the sweep's output above says why. Run the command again to try them."
        )
    return {rate: result for rate, result in results.items() if result is not None}


def best_rate(results: dict[float, Result]) -> float | None:
    """The rate of the best validation score; of equal scores the lower rate. None: all failed."""
    scored = [(rate, validation_score(result)) for rate, result in sorted(results.items())]
    scored = [(rate, validation) for rate, validation in scored if validation is not None]
    return max(scored, key=lambda pair: pair[1])[0] if scored else None  # max keeps the first of equals


def rate_beyond_edge(results: dict[float, Result]) -> float | None:
    """One grid step past the highest (lowest) rate tried when that rate scored best, else None.
    The step is the ratio of the two outermost rates on that side, so a grid of x1/3, x1, x3
    goes on to x9 (or x1/9)."""
    rates, best = sorted(results), best_rate(results)
    if best is None or len(rates) < 2:
        return None
    if best == rates[-1]:
        return rounded(rates[-1] * rates[-1] / rates[-2])
    if best == rates[0]:
        return rounded(rates[0] * rates[0] / rates[1])
    return None


def run_seeds(method: str, lr: float, seeds: list[int], overrides: list[str], out: Path) -> list[SeedRun]:
    """The tuned rate over the seeds that have no finished run yet, at the experiment's budget."""
    method_dir = out / "runs" / method
    run_dirs = {seed: method_dir / f"{method}_s{seed}" for seed in seeds}
    results = {seed: read_run(run_dir) for seed, run_dir in run_dirs.items()}
    finished = {seed: result for seed, result in results.items() if result is not None and result.status == "ok"}
    for seed, result in finished.items():
        trained_lr = result.config["trainer"]["lr"]
        if trained_lr != lr:
            raise ProtocolError(
                f"{run_dirs[seed]} trained at trainer.lr={trained_lr}, but the search in "
                f"{out / 'search' / method} chose {lr}: remove one of them, or give this protocol another "
                "protocol.dir."
            )
    missing = [seed for seed in seeds if seed not in finished]
    if missing:
        print(f"\n== {method}: trainer.lr={lr!r}, seeds {', '.join(map(str, missing))}", flush=True)
        peftlab_sweep(
            [*overrides, f"method={method}", f"trainer.lr={lr!r}", f"seed={','.join(map(str, missing))}",
             f"hydra.sweep.dir={method_dir}", "hydra.sweep.subdir=${method.name}_s${seed}"],
        )
        results |= {seed: read_run(run_dirs[seed]) for seed in missing}  # only the runs the sweep wrote
    else:
        print(f"\n== {method}: seeds {', '.join(map(str, seeds))} finished before; skipped", flush=True)
    return [seed_run(results[seed], seed, str(run_dirs[seed].relative_to(out))) for seed in seeds]


def read_run(run_dir: Path) -> Result | None:
    """A run's result, checked against the schema like the report's; None where the run never
    wrote one (interrupted, or not run). A file that does not fit stops the protocol naming it:
    resuming past it would compare a run nobody can read."""
    path = run_dir / RESULT_FILE
    if not path.is_file():
        return None
    try:
        return Result.read(path)
    except ResultFileError as error:
        raise ProtocolError(
            f"{error}. Delete the folder {run_dir} and run the command again: the protocol runs that rate or seed anew."
        ) from None


def seed_run(result: Result | None, seed: int, run: str) -> SeedRun:
    """A seed's line of protocol.md and .json; `missing` where its run wrote no result."""
    selection = result.selection if result is not None else None
    return SeedRun(
        seed=seed, status=result.status if result is not None else "missing", validation=validation_score(result),
        selected_step=selection.selected_step if selection else None,
        early_stopped=selection.early_stopped if selection else None,
        run=run,
    )


def peftlab_sweep(overrides: list[str]) -> subprocess.CompletedProcess:
    """One `python -m peftlab -m` sweep, its output shown as it goes. Its runs are plain runs
    (`protocol=null`): protocol.json records the protocol, once. The sweep-end report is left
    out: the protocol writes one report over all methods."""
    command = [sys.executable, "-m", "peftlab", "-m", *overrides, "protocol=null", "~hydra.callbacks.report"]
    print(f"$ {shlex.join(command[1:])}", flush=True)
    return subprocess.run(command, check=False)


def validation_score(result: Result | None) -> float | None:
    """The primary metric on validation of an ok run; None for a failed or missing run, or a
    score that is no finite number (a diverged run logs NaN), so no such run is ever chosen."""
    if result is None or result.status != "ok":
        return None
    return primary_score(result, "validation")


def failure_summary(results: dict[float, Result]) -> str:
    errors = [result.error or "no error recorded" for result in results.values()]
    return f"{len(errors)} trial(s) failed; the first error: {errors[0].strip().splitlines()[-1]}"


def write_comparison_report(out: Path) -> None:
    """The report over every method's runs, beside protocol.md (the sweeps' own reports are
    switched off). Run folders stay out of git under benchmarks/results/; these files do not."""
    out = below_working_directory(out)
    try:
        from peftlab.report import write_report

        write_report(out / "runs", out)
    except Exception as error:  # noqa: BLE001 - the runs are done; the report can be made again
        retry = f"python -m peftlab.report {out / 'runs'} --out {out}"
        print(f"no report for {out / 'runs'} ({error}); retry with: {retry}", file=sys.stderr)


def below_working_directory(path: Path) -> Path:
    """`path` relative to the working directory when it lies below it: the report names its
    folder (and the command that regenerates it) as a clone has it, not as this machine does."""
    here = Path.cwd()
    return path.relative_to(here) if path.is_relative_to(here) else path


def write_summary(out: Path, cfg: DictConfig, overrides: list[str], outcomes: list[MethodOutcome]) -> None:
    protocol = OmegaConf.to_container(cfg.protocol, resolve=True)
    summary = {
        "command": shlex.join(["python", "-m", "peftlab.protocol", *overrides]),
        "overrides": overrides,
        "git_sha": git_sha(),
        "protocol": protocol,
        "budget": budget(cfg.trainer),
        "methods": {outcome.method: {**asdict(outcome), "at_grid_edge": outcome.at_grid_edge} for outcome in outcomes},
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / SUMMARY_JSON).write_text(json.dumps(summary, indent=2) + "\n")
    (out / SUMMARY_MARKDOWN).write_text(summary_markdown(summary, outcomes))


def budget(trainer: DictConfig) -> dict[str, Any]:
    """The settings that fix how long and how each final run trains: the same for every method."""
    keys = ("epochs", "max_steps", "batch_size", "grad_accum", "warmup", "scheduler", "eval_strategy", "eval_steps",
            "select_best", "early_stopping_patience")
    settings = OmegaConf.to_container(trainer, resolve=True)
    return {key: settings[key] for key in keys}


def summary_markdown(summary: dict[str, Any], outcomes: list[MethodOutcome]) -> str:
    protocol = summary["protocol"]
    budget_text = ", ".join(f"{key} {json.dumps(value)}" for key, value in summary["budget"].items())
    lines = [
        "# Comparison protocol",
        "",
        f"Command: `{summary['command']}`  ",
        f"git {summary['git_sha']}",
        "",
        f"Each method's learning rate was chosen on validation among its default × "
        f"{', '.join(f'{factor:g}' for factor in protocol['search']['lr_factors'])}, one trial each with "
        f"`{' '.join(protocol['search']['overrides']) or 'the final budget'}`{extension_text(protocol['search'])}; "
        f"the chosen rate then trained seeds "
        f"{', '.join(map(str, protocol['seeds']))} with the same budget for every method: {budget_text}. "
        "Test chose nothing. The comparison: [report.md](report.md).",
        "",
        f"Validation score: {', '.join(sorted({o.metric for o in outcomes if o.metric}))} (the task's primary metric).",
        "",
        "| method | default lr | validation score per rate tried | tuned lr | seeds ok | validation per seed "
        "| step kept (early stop) |",
        "|---|---:|---|---:|---:|---|---|",
    ]
    for outcome in outcomes:
        trials = sorted(outcome.trials, key=lambda trial: trial.lr)
        tried = ", ".join(
            f"{trial.lr:g}{' (added)' if trial.lr in outcome.rates_added else ''}: "
            f"{score(trial.validation, trial.status)}"
            for trial in trials
        )
        edge = " (edge of the grid)" if outcome.at_grid_edge else ""
        ok = sum(run.status == "ok" for run in outcome.seeds)
        per_seed = ", ".join(score(run.validation, run.status) for run in outcome.seeds)
        steps = ", ".join(f"{run.selected_step}{' (stopped)' if run.early_stopped else ''}" for run in outcome.seeds)
        lines.append(
            f"| {outcome.method} | {outcome.default_lr:g} | {tried} | {outcome.tuned_lr:g}{edge} "
            f"| {ok}/{len(outcome.seeds)} | {per_seed} | {steps} |"
        )
    if any(outcome.at_grid_edge for outcome in outcomes):
        lines += ["", "Edge of the grid: the best rate is the lowest or the highest tried; a wider "
                      "protocol.search.lr_factors (or protocol.search.extend_at_edge) may find a better one."]
    return "\n".join(lines) + "\n"


def extension_text(search: dict[str, Any]) -> str:
    added = search.get("extend_at_edge", 0)
    if not added:
        return ""
    return (f", and where the highest or lowest rate scored best, up to {added} more rate(s) beyond it, one grid "
            "step each (marked added)")


def score(value: float | None, status: str) -> str:
    return f"{value:.4f}" if value is not None else status


if __name__ == "__main__":
    sys.exit(main())
