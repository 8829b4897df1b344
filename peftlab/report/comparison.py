"""What may share a table of the report, and the checks a number needs before anyone acts on it.
Pure functions over the runs' Results; the rest of peftlab/report/ renders what they find.

- Runs are comparable when they differ only in method and seed. `group_settings` is everything
  else that changes the question (model source, the data's contents, subsample sizes and few-shot K, data seed,
  sequence length, quantization, the held-out text forgetting is measured on): the report never
  pools two runs whose settings differ.
- Within a table every method is compared with full fine-tuning, but a method trained on another
  budget (epochs or steps, batch size, accumulation) is marked: `budget_differences`.
- `convergence`: was the validation metric still rising when training stopped? A method that
  stopped early looks worse than it is.
- `is_bimodal`: did a method's seeds split into runs that learned and runs that never left the
  trivial predictor? Their mean ± std describes no run at all."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from peftlab.result import Result, finite

# Config keys (dotted, as in result.json "config") that split tables, besides task, dataset,
# backbone name, quant name and primary metric. `backbone.pretrained` is what was loaded: a
# `backbone.pretrained=` override keeps the backbone's name.
GROUP_SETTINGS = (
    "backbone.pretrained", "backbone.revision", "backbone.gguf_file", "task.data.hub_config",
    "task.max_train_samples", "task.max_eval_samples", "task.shots_per_class", "task.data_seed", "task.max_length",
)
QUANT_SECTION = "quant"  # every key of config.quant splits tables too (bits, quant_type, double_quant, ...)
FINGERPRINT = "dataset_fingerprint"  # result.json's, None in files written before it existed
HELD_OUT_DIGITS = 16  # of the held-out file's sha256 in a table's settings, as dataset fingerprints show theirs
# trainer settings that decide how much training a run got (task.max_length does too, but it
# already splits tables). Trainer ignores trainer.epochs when trainer.max_steps > 0.
BUDGET_SETTINGS = ("trainer.epochs", "trainer.max_steps", "trainer.batch_size", "trainer.grad_accum")
EPOCHS, MAX_STEPS = "trainer.epochs", "trainer.max_steps"
UNKNOWN = "n/a"  # a setting the file does not record (older result.json, hand-made files)
MIN_EVALUATIONS = 3  # fewer validation points cannot show whether a curve has levelled off
DEFAULT_CONVERGED_DELTA = 1.0  # points (metric x100)
DEFAULT_BIMODAL_RATIO = 0.5

_ABSENT = object()


def config_value(run: Result, dotted: str) -> Any:
    """The value at a dotted key of the run's config, or `_ABSENT` where the file lacks it."""
    node: Any = run.config
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            return _ABSENT
        node = node[key]
    return node


def raw_setting(run: Result, dotted: str) -> Any:
    """A config value for a CSV cell: None where the file does not record it."""
    value = config_value(run, dotted)
    return None if value is _ABSENT else value


def shown(value: Any) -> str:
    """A setting as a reader sees it and as tables are keyed: strings bare, the rest as JSON
    (null, 1000, true, [...]), so equal settings compare equal whatever their type."""
    if value is _ABSENT:
        return UNKNOWN
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def quant_keys(run: Result) -> list[str]:
    """`quant.<key>` for every key of the run's config.quant but its name (already in the table's
    identity)."""
    section = config_value(run, QUANT_SECTION)
    if not isinstance(section, dict):
        return []
    return [f"{QUANT_SECTION}.{key}" for key in sorted(section) if key != "name"]


def group_settings(run: Result) -> tuple[tuple[str, str], ...]:
    """(key, value shown) for everything besides method and seed that decides what a run's
    number means. An older file without `dataset_fingerprint` is keyed by its `dataset` string
    (then the data folder's path) alone."""
    fingerprint = run.dataset_fingerprint
    settings = [(FINGERPRINT, UNKNOWN if fingerprint is None else fingerprint)]
    settings += [(key, shown(config_value(run, key))) for key in (*GROUP_SETTINGS, *quant_keys(run))]
    return tuple(settings) + held_out_settings(run)


def held_out_settings(run: Result) -> tuple[tuple[str, str], ...]:
    """What a forgetting measure depends on besides the model: the held-out file (by its
    contents), how many of its texts and at what length. None for a run that did not measure it,
    so that turning the measure on never splits the tables of older runs."""
    if run.forgetting is None:
        return ()
    held_out = run.forgetting
    return (
        ("forgetting.texts", f"{held_out.texts} (sha256:{held_out.sha256[:HELD_OUT_DIGITS]})"),
        ("forgetting.texts_used", str(held_out.texts_used)),
        ("forgetting.max_length", shown(config_value(run, "forgetting.max_length"))),
    )


def budget_differences(
    runs: list[Result], reference_runs: list[Result], reference: str = "full"
) -> list[str]:
    """`key=value (full: value)` for every budget setting on which `runs` differ from the
    reference's runs (full fine-tuning's in a method table, the float base's in a quantization
    table). trainer.epochs is not compared when every run on both sides has trainer.max_steps > 0:
    Trainer ignores it then."""
    steps = [raw_setting(run, MAX_STEPS) for run in runs + reference_runs]
    steps_only = all(isinstance(value, int) and value > 0 for value in steps)
    differences = []
    for key in BUDGET_SETTINGS:
        if steps_only and key == EPOCHS:
            continue
        mine, theirs = _shown_values(runs, key), _shown_values(reference_runs, key)
        if mine != theirs:
            differences.append(f"{key}={', '.join(mine)} ({reference}: {', '.join(theirs)})")
    return differences


def _shown_values(runs: list[Result], key: str) -> list[str]:
    return sorted({shown(config_value(run, key)) for run in runs})


@dataclass(frozen=True)
class Convergence:
    """Whether a run's validation primary metric had levelled off when training stopped.

    The rule: with at least `MIN_EVALUATIONS` validation evaluations, `gain` is the last score
    minus the best score before the last two, in points; the run is not converged when `gain`
    exceeds the threshold (`--converged-delta`, default 1 point). So a run still climbing over
    its last two evaluation intervals is flagged, one that peaked earlier or levelled off is
    not. Every primary metric peftlab reports is higher-is-better."""

    evaluations: int
    gain: float | None  # None with too few evaluations

    def converged(self, delta: float) -> bool | None:
        """None: too few evaluations to tell."""
        return None if self.gain is None else self.gain <= delta


def convergence(run: Result) -> Convergence:
    scores = validation_scores(run)
    if len(scores) < MIN_EVALUATIONS:
        return Convergence(len(scores), None)
    return Convergence(len(scores), scores[-1] - max(scores[:-2]))


def validation_scores(run: Result) -> list[float]:
    """The run's validation primary metric during training, in points, by step (the last value
    logged at a step where one was logged twice)."""
    key = f"validation_{run.primary_metric}"
    by_step = {}
    for point in run.history:
        step, value = finite(point.get("step")), finite(point.get(key))
        if step is not None and value is not None:
            by_step[step] = 100 * value
    return [by_step[step] for step in sorted(by_step)]


def is_bimodal(scores: list[float], ratio: float = DEFAULT_BIMODAL_RATIO) -> bool:
    """Seeds that disagree wildly: at least two runs and the lowest score below `ratio` times
    the highest (`--bimodal-ratio`, default 0.5). A NER seed that never left "everything is O"
    scores F1 ≈ 0 beside seeds at 30; a classifier stuck on the majority class is caught only
    when the majority share is below `ratio` times the best seed's accuracy (result.json does
    not record the class balance)."""
    return len(scores) >= 2 and max(scores) > 0 and min(scores) < ratio * max(scores)
