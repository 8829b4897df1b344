"""`python -m peftlab.continual experiment=continual_classification_minilm [overrides]`: continual
learning. A sequence of tasks of one kind (`continual.tasks`) trains one task after another on
one backbone, each task with its own head, in each regime of `continual.regimes`:

- `full`: every weight of the body trains at every stage (the body drifts);
- `shared_lora`: one LoRA adapter on the frozen base, trained on task 1, then further on task 2,
  ... (the adapter drifts);
- `adapter_per_task`: a new LoRA adapter for each task on the frozen base: what one task trains,
  no other task reads, so there is no interference by construction.

A stage is a normal run (run.py: the task's data, the method, Trainer, result.json and
checkpoint/ in a run folder of its own) whose body is carried over from the stage before. Each
task keeps a model of its own, built for its head (its labels, its class), and that model's body
parameters *are* the carried ones: the same tensors, tied as transformers ties a decoder's output
embeddings to its input embeddings. Not one model with heads swapped: transformers' heads compute
their loss with their own `num_labels`, which a head of another size swapped in (peft's
add_adapter/set_adapter keep one head copy per adapter) would not match. In `full` and
`shared_lora` every body parameter is tied, so training stage i moves what the models of tasks
1..i-1 compute with; in `adapter_per_task` only the frozen base is tied (one base in memory, as
with peft's multi-adapter API), and each task's adapter and head are its own.

After stage i, every task j <= i is scored with its own head on the current body, on validation
and test: R[i][j], the task's primary metric (R[i][i] is stage i's own result.json). With T tasks:

    average final metric  A   = 1/T     sum_j   R[T][j]
    backward transfer     BWT = 1/(T-1) sum_{j<T} (R[T][j] - R[j][j])              Lopez-Paz & Ranzato 2017
    forgetting            F   = 1/(T-1) sum_{j<T} max_{j<=l<T} (R[l][j] - R[T][j])  Chaudhry et al. 2018

R[i][j] for j > i is left empty: task j has no trained head before stage j.

Writes into `continual.dir`:

    <regime>/<i>_<task>/        stage i's run folder (result.json, checkpoint/: the body at stage i
                                and task i's head, which `python -m peftlab.predict` serves)
    continual.json              R per regime and split, A, BWT, F, and each stage's budget
    continual.md, .html, .png   the report (peftlab/report/continual.py; also
                                `python -m peftlab.report DIR` on this folder)
    continual.log               the log

Run again with the same overrides, the command resumes: a regime that finished (it is in
continual.json) is read back; an unfinished one starts again from its first stage, since the
models it carries live in memory only. `continual.regimes` may change between the two.
"""

from __future__ import annotations

import json
import logging
import shlex
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from peftlab.config import check_config, config_dir
from peftlab.errors import ConfigError, refuse_other_overrides, run_command
from peftlab.report.continual import CONTINUAL_FILE, MARKDOWN_FILE, write_continual_report
from peftlab.result import git_sha

if TYPE_CHECKING:
    from torch import nn

    from peftlab.result import Result
    from peftlab.run import Prepared

log = logging.getLogger("peftlab")
LOG_FILE = "continual.log"
SPLITS = ("validation", "test")
# Keys the command sets for each stage: a user who sets them means continual.* instead.
SET_PER_STAGE = {"task": "continual.tasks", "method": "continual.regimes", "continual": "continual.*"}
EXTENDABLE = ("continual.regimes=",)  # what a resumed command may change: which regimes run, not how


@dataclass(frozen=True)
class Regime:
    method: str  # the conf/method file every stage trains with
    carries_trained: bool  # whether what the method trains in the body is carried into the next stage
    what: str


REGIMES = {
    "full": Regime("full", True, "every weight of the body trains at every stage (the body drifts)"),
    "shared_lora": Regime("lora", True, "one LoRA adapter on the frozen base, trained further at every stage"),
    "adapter_per_task": Regime("lora", False, "a LoRA adapter per task on the frozen base, no interference"),
}


# --- the numbers ---------------------------------------------------------------------------------

Matrix = list[list[float | None]]  # R[i][j]: task j after stage i; None for j > i


def transfer_metrics(matrix: Matrix) -> dict[str, float | None]:
    """Average final metric, backward transfer (Lopez-Paz & Ranzato 2017) and forgetting
    (Chaudhry et al. 2018) of R, indices from 0 (see the module docstring). All None when a
    score they need is missing (a task without a test split)."""
    last = len(matrix) - 1
    if last < 1 or any(matrix[i][j] is None for i in range(last + 1) for j in range(i + 1)):
        return {"final_average": None, "backward_transfer": None, "forgetting": None}
    final = matrix[last]
    earlier = range(last)
    return {
        "final_average": sum(final) / len(final),
        "backward_transfer": sum(final[j] - matrix[j][j] for j in earlier) / last,
        "forgetting": sum(max(matrix[l][j] for l in range(j, last)) - final[j] for j in earlier) / last,
    }


# --- one regime: its models, one per task, the body carried -----------------------------------


@dataclass
class Stage:
    config: DictConfig
    prepared: Prepared  # this task's model: its own head, the carried body
    run_dir: Path
    result: Result


class TaskSequence:
    """One regime's tasks, trained in order; each task's model stays, to be scored again after
    every later stage."""

    def __init__(self, regime: Regime) -> None:
        self.regime = regime
        self.stages: list[Stage] = []

    def train(self, cfg: DictConfig, run_dir: Path) -> Result:
        """The next stage: a normal run of `cfg` on the body the last stage left, written into `run_dir`."""
        from peftlab.run import prepare, run
        from peftlab.run_folder import remove_resume_checkpoints

        prepared = prepare(cfg)
        if self.stages:
            tie_body(prepared, cfg, self.stages[-1].prepared.model, self.regime.carries_trained)
        result = run(cfg, run_dir, prepared=prepared)
        result.notes.append(self._note(cfg))
        result.write(run_dir)
        remove_resume_checkpoints(run_dir)
        self.stages.append(Stage(cfg, prepared, run_dir, result))
        return result

    def scores(self, index: int) -> dict[str, dict[str, float] | None]:
        """Task `index` scored now, with its own head on the current body: every metric, per split.
        The last stage's own run has just scored its task: its result.json holds the same numbers."""
        stage = self.stages[index]
        if index == len(self.stages) - 1:
            return {split: stage.result.metrics.get(split) for split in SPLITS}
        from peftlab.run import evaluation_order, make_trainer

        with tempfile.TemporaryDirectory() as scratch:  # Trainer wants an output folder; evaluating writes nothing
            trainer = make_trainer(stage.config, stage.prepared, Path(scratch))
            scored = {}
            for split in SPLITS:
                dataset = stage.prepared.encoded.get(split)
                if dataset is None:
                    scored[split] = None
                    continue
                values = stage.prepared.task.evaluate(trainer, evaluation_order(stage.config.trainer, dataset), split)
                # the metrics the stage's own result.json holds (`test_accuracy` as `accuracy`), not Trainer's timings
                scored[split] = {key: values[f"{split}_{key}"] for key in stage.result.metrics[split]}
        return scored

    def _note(self, cfg: DictConfig) -> str:
        before = [stage.config.task.name for stage in self.stages]
        where = f"after {' then '.join(before)}, on the body they left" if before else "on the pretrained body"
        return f"continual stage {len(before) + 1}: {self.regime.what}; trained {where} (peftlab.continual)"


def tie_body(prepared: Prepared, cfg: DictConfig, carrier: nn.Module, carry_trained: bool) -> None:
    """Make the body parameters of `prepared.model` the very tensors of `carrier` (the last
    stage's model, of the same backbone and method), by name, so that both compute with one body.
    The head stays the model's own; with `carry_trained` false, so does what the method trains.
    Names are the same in both models: one backbone, one method, peft's adapter `default`."""
    from peft import PeftModel

    model = prepared.model
    inner = model.get_base_model() if isinstance(model, PeftModel) else model
    head = prepared.task.head_modules(inner, list(cfg.backbone.head_in_body or []))
    own = {id(parameter) for name in head for parameter in inner.get_submodule(name).parameters()}
    carried = dict(carrier.named_parameters(remove_duplicate=False))
    for name, parameter in list(model.named_parameters(remove_duplicate=False)):
        if id(parameter) in own or (parameter.requires_grad and not carry_trained):
            continue
        source = carried.get(name)
        if source is None or source.shape != parameter.shape:
            raise RuntimeError(f"the carried body has no parameter {name} of shape {tuple(parameter.shape)}")
        owner, _, attribute = name.rpartition(".")
        setattr(model.get_submodule(owner), attribute, source)  # registers the carried Parameter itself


def run_regime(name: str, configs: list[DictConfig], folder: Path) -> dict[str, Any]:
    """Every stage of one regime in order, each task scored after each stage; what continual.json
    keeps of it."""
    sequence = TaskSequence(REGIMES[name])
    scores: list[list[dict[str, Any] | None]] = []
    for index, cfg in enumerate(configs):
        run_dir = folder / f"{index + 1}_{cfg.task.name}"
        log.info("== %s: stage %d of %d, %s (%s)", name, index + 1, len(configs), cfg.task.name, run_dir)
        sequence.train(cfg, run_dir)
        row = [sequence.scores(j) for j in range(index + 1)]
        scores.append(row + [None] * (len(configs) - len(row)))
    matrices = {
        split: [[None if cell is None or cell[split] is None else cell[split][stage.result.primary_metric]
                 for cell, stage in zip(row, sequence.stages)] for row in scores]
        for split in SPLITS
    }
    return {
        "method": REGIMES[name].method,
        "what": REGIMES[name].what,
        "stages": [stage_record(stage, folder.parent) for stage in sequence.stages],
        "matrix": matrices,
        "metrics": {split: transfer_metrics(matrix) for split, matrix in matrices.items()},
        "scores": scores,
    }


def stage_record(stage: Stage, out: Path) -> dict[str, Any]:
    """What a stage trained on and how long: its budget, stated beside the numbers."""
    trainer, task, result = stage.config.trainer, stage.config.task, stage.result
    return {
        "task": result.task,
        "dataset": result.dataset,
        "primary_metric": result.primary_metric,
        "run": str(stage.run_dir.relative_to(out)),
        "budget": {
            "trainer.epochs": trainer.epochs, "trainer.max_steps": trainer.max_steps,
            "trainer.batch_size": trainer.batch_size, "trainer.grad_accum": trainer.grad_accum,
            "trainer.lr": trainer.lr, "task.max_train_samples": task.max_train_samples,
            "task.max_eval_samples": task.max_eval_samples, "task.data_seed": task.data_seed,
        },
        "data_sizes": result.data_sizes,
        "trainable": result.params.trainable,
        "trainable_pct": result.params.trainable_pct,
        "train_seconds": result.timing.train_seconds,
        "eval_seconds": result.timing.eval_seconds,
    }


# --- the command ---------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    return run_command("peftlab.continual", __doc__, run_continual, argv)


def run_continual(overrides: list[str]) -> Path:
    """Check everything, then run each regime not finished before; continual.json and the report
    are rewritten after each, so an interrupted command keeps what it finished. Returns continual.json."""
    check_overrides(overrides)
    cfg = compose_config(overrides)
    regimes = check_regimes(list(cfg.continual.regimes))
    configs = {regime: stage_configs(cfg, overrides, regime) for regime in regimes}
    check_tasks(next(iter(configs.values())))
    out = Path(cfg.continual.dir).resolve()
    summary = read_summary(out, overrides, cfg)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.trainer.threads is not None:
        import torch

        torch.set_num_threads(cfg.trainer.threads)
    with logging_to(out / LOG_FILE):
        for regime in regimes:
            if regime in summary["regimes"]:
                log.info("== %s finished before: read back from %s", regime, out / CONTINUAL_FILE)
                continue
            shutil.rmtree(out / regime, ignore_errors=True)  # an interrupted regime starts again from stage 1
            summary["regimes"][regime] = run_regime(regime, configs[regime], out / regime)
            (out / CONTINUAL_FILE).write_text(json.dumps(summary, indent=2) + "\n")
            write_continual_report(out)
    print(f"\ncontinual: {out / CONTINUAL_FILE}\nreport: {out / MARKDOWN_FILE}")
    return out / CONTINUAL_FILE


def check_overrides(overrides: list[str]) -> None:
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if override.startswith("-") or key.startswith("hydra."):
            raise ConfigError(
                f"{override!r}: peftlab.continual takes config overrides only (key=value) and writes into "
                "continual.dir, not a Hydra run folder."
            )
        if key in SET_PER_STAGE:
            raise ConfigError(
                f"{override!r}: peftlab.continual sets {key} for every stage; set {SET_PER_STAGE[key]} instead "
                "(e.g. continual.regimes=[full,adapter_per_task], or a task's budget in continual.tasks)."
            )


def compose_run_config(overrides: list[str], what: str = "the config") -> DictConfig:
    """The config a run of these overrides would get, checked as a run checks it."""
    try:
        with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
            cfg = compose(config_name="config", overrides=overrides)
    except (HydraException, OmegaConfBaseException) as error:
        raise ConfigError(f"{what} does not compose: {error}") from error
    check_config(cfg)
    return cfg


def compose_config(overrides: list[str]) -> DictConfig:
    """The command's config, with a continual section of at least two tasks."""
    cfg = compose_run_config(overrides)
    if cfg.continual is None:
        experiments = sorted(path.stem for path in (Path(config_dir()) / "experiment").glob("continual_*.yaml"))
        raise ConfigError(
            "no continual section in this config: choose a continual experiment, "
            f"experiment={' or experiment='.join(experiments)} (conf/experiment/continual_*.yaml), or give your own "
            "experiment a `continual:` section (tasks, regimes, dir)."
        )
    tasks = [stage.task for stage in cfg.continual.tasks]
    if len(tasks) < 2:
        raise ConfigError(
            f"continual.tasks names {len(tasks)} task{'' if len(tasks) == 1 else 's'} ({', '.join(tasks) or 'none'}): "
            "a sequence needs at least two, the later ones to measure what training them does to the earlier."
        )
    return cfg


def check_regimes(regimes: list[str]) -> list[str]:
    unknown = [regime for regime in regimes if regime not in REGIMES]
    if unknown or not regimes or len(set(regimes)) < len(regimes):
        problem = f"names {', '.join(map(repr, unknown))}, not a regime" if unknown else "is empty or names one twice"
        raise ConfigError(
            f"continual.regimes={regimes} {problem}; the regimes: "
            + "; ".join(f"{name} ({regime.what})" for name, regime in REGIMES.items()) + "."
        )
    return regimes


def stage_configs(cfg: DictConfig, overrides: list[str], regime: str) -> list[DictConfig]:
    """Each stage's run config: the task, the regime's method, the data under continual.data_dir,
    the stage's own overrides (its budget), then the command line's, which hold for every stage."""
    configs = []
    for index, stage in enumerate(cfg.continual.tasks):
        data = [f"task.data.path={Path(cfg.continual.data_dir) / stage.task}"] if cfg.continual.data_dir else []
        stage_overrides = [f"task={stage.task}", f"method={REGIMES[regime].method}", *data, *stage.overrides]
        configs.append(compose_run_config([*stage_overrides, *overrides], f"continual.tasks[{index}] ({stage.task})"))
    return configs


def check_tasks(configs: list[DictConfig]) -> None:
    """One kind of task with a head of its own, every task's data readable, before anything trains."""
    from peftlab.tasks import build_task  # heavy: torch, transformers

    kinds = {cfg.task.name: cfg.task.kind for cfg in configs}
    if len(set(kinds.values())) > 1:
        listed = ", ".join(f"{name} ({kind.rsplit('.', 1)[-1]})" for name, kind in kinds.items())
        raise ConfigError(
            f"continual.tasks are of different kinds: {listed}. A sequence carries one body from task to task and "
            "scores each with its own head of one kind: name tasks of one kind (e.g. sst2 then banking77, or "
            "conll2003 then wnut17)."
        )
    for cfg in configs:
        task = build_task(cfg.task)
        if task.peft_task_type == "CAUSAL_LM":
            raise ConfigError(
                f"continual.tasks: {cfg.task.name} is a generation task, and peftlab.continual takes tasks with a head "
                "of their own (token or sequence classification): name classification or NER tasks."
            )
        task.prepare_data()  # a wrong data path fails here, not after the first stage trained


def read_summary(out: Path, overrides: list[str], cfg: DictConfig) -> dict[str, Any]:
    """continual.json of an earlier command with these overrides (its finished regimes), or a new one.
    A folder made with other overrides is refused: its regimes would be compared with these."""
    summary_file = out / CONTINUAL_FILE
    if summary_file.is_file():
        summary = json.loads(summary_file.read_text())
        refuse_other_overrides(out, summary["overrides"], overrides, "continual", EXTENDABLE, ConfigError)
        return summary
    return {
        "command": shlex.join(["python", "-m", "peftlab.continual", *overrides]),
        "overrides": overrides,
        "git_sha": git_sha(),
        "backbone": cfg.backbone.name,
        "seed": cfg.seed,
        "tasks": [stage.task for stage in cfg.continual.tasks],
        "regimes": {},
    }


@contextmanager
def logging_to(log_file: Path) -> Iterator[None]:
    """While the command runs: peftlab's lines and what a user must act on to the console, every
    message to `log_file`, as a run gets from conf/hydra/job_logging/peftlab.yaml (which Hydra
    applies to its own runs only). Put back as it was after, for a caller in the same process."""
    import transformers

    from peftlab.console import KeepLibraryNoiseInTheLog, route_library_messages

    formatter = logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    console, file = logging.StreamHandler(sys.stdout), logging.FileHandler(log_file, encoding="utf-8")
    console.addFilter(KeepLibraryNoiseInTheLog())
    root, level = logging.getLogger(), logging.getLogger().level
    for handler in (console, file):
        handler.setFormatter(formatter)
        root.addHandler(handler)
    root.setLevel(logging.INFO)
    route_library_messages()
    try:
        yield
    finally:
        for handler in (console, file):
            root.removeHandler(handler)
            handler.close()
        root.setLevel(level)
        logging.captureWarnings(False)
        transformers.logging.disable_propagation()
        transformers.logging.enable_default_handler()


if __name__ == "__main__":
    sys.exit(main())
