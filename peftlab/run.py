"""One run, top to bottom: seed, load, freeze, apply the method, count, train, evaluate, save,
write result.json. Shared by every method, task and backbone: none of them is named here."""

from __future__ import annotations

import logging
import math
import os
import shutil
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import transformers
from datasets import Dataset
from omegaconf import DictConfig, OmegaConf
from peft import PeftModel
from safetensors.torch import load_file, save_file
from torch.utils.data import Sampler, SequentialSampler
from transformers import EarlyStoppingCallback, PreTrainedTokenizerBase, Trainer, TrainerState, TrainingArguments
from transformers.trainer_utils import TrainOutput
from transformers.trainer_pt_utils import LengthGroupedSampler
from transformers.utils import SAFE_WEIGHTS_NAME

from peftlab import atomic
from peftlab.backbones import base_reference, load_tokenizer, model_source
from peftlab.checkpoint import trainable_tensors
from peftlab.config import check_config, choose_on_validation, resolved
from peftlab.data.sources import dataset_identity
from peftlab.errors import ConfigError, PeftlabError
from peftlab.forgetting import HeldOutLoss, HeldOutText, read_held_out
from peftlab.guards import StopOnNonFiniteLoss
from peftlab.measure import model_bytes, peak_memory, reset_peak_memory
from peftlab.methods import AppliedMethod, MethodContext, apply_method, check_task_kind
from peftlab.params import count_base, count_trainable, in_modules
from peftlab.quant.loading import require_float_head
from peftlab.quant.options import check_quantization
from peftlab.result import Checkpoint, Memory, ParamCount, Result, Selection, Timing, git_sha, package_versions
from peftlab.run_folder import (
    CHECKPOINT_DIR, TRAINER_DIR, TRAINER_STATE, begin, check_writable, plan_start, remove_resume_checkpoints,
)
from peftlab.tasks import IGNORED, Task, build_task

log = logging.getLogger("peftlab")
RUNTIME_KEYS = ("runtime", "samples_per_second", "steps_per_second")
EVALUATED_SPLITS = ("validation", "test")


def execute(cfg: DictConfig, run_dir: Path, in_sweep: bool = False) -> Result:
    """Run and leave a result.json behind: `ok`, or `failed` with the error. What is refused
    before the run begins writes none, so nothing in the folder is lost: a config that does not
    resolve, a folder that cannot be written, one whose finished run would be overwritten, a
    resume with nothing to resume (`run_folder.plan_start`). A finished run met with resume=true
    is returned as it is. Under torchrun/accelerate every process trains; only the first writes."""
    resolved(cfg)
    check_writable(run_dir)
    start = plan_start(run_dir, cfg.resume, cfg.overwrite, in_sweep)
    if start.finished is not None:
        log.info("%s holds this run finished already: nothing to do (overwrite=true runs it again)", run_dir)
        return start.finished
    if is_main_process():
        begin(run_dir, start)
    try:
        result = run(cfg, run_dir, start.checkpoint)
    except Exception as error:
        message = str(error) if isinstance(error, PeftlabError) else traceback.format_exc()
        if is_main_process():
            _identity(cfg, status="failed", error=message).write(run_dir)
        raise
    if is_main_process():
        result.write(run_dir)
        remove_resume_checkpoints(run_dir)
    return result


def is_main_process() -> bool:
    """Rank 0 of a distributed launch (torchrun and accelerate set RANK), or a plain run."""
    return int(os.environ.get("RANK", "0")) == 0


@dataclass
class Prepared:
    """Everything a run trains and evaluates, built the same way for the CLI and the tests."""

    task: Task
    tokenizer: PreTrainedTokenizerBase
    model: torch.nn.Module
    params: ParamCount
    encoded: dict[str, Any]
    model_bytes: int  # the model as loaded (base + head), before the method adds anything
    method: AppliedMethod  # what trains `model`: asked for the input layout, saving, merging
    held_out: HeldOutText | None  # forgetting.texts, read; None when forgetting is not measured


def prepare(cfg: DictConfig) -> Prepared:
    """Seed, load the data and the backbone, freeze it, let the method in, count."""
    check_config(cfg)
    check_quantization(cfg.quant, cfg.method)
    transformers.set_seed(cfg.seed)  # before any module exists: head and adapter init repeat

    task = build_task(cfg.task)
    check_task_kind(cfg.method, task)
    held_out = read_held_out(cfg.forgetting, task)
    splits = task.prepare_data()
    tokenizer = load_tokenizer(cfg.backbone)
    model = task.build_model(cfg.backbone, cfg.quant)

    head = task.head_modules(model, list(cfg.backbone.get("head_in_body") or []))
    require_float_head(model, head)
    loaded_bytes = model_bytes(model)
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(in_modules(name, head))
    before = count_base(model, head)
    method = apply_method(model, cfg.method, method_context(cfg, task, model, head, splits["train"]))
    params = count_trainable(method.model, before, head)
    _check_something_trains(cfg, params, method)
    log.info(
        "%s on %s with %s: %d trainable parameters (%.3f%% of %d; head %d)",
        cfg.method.name, cfg.task.name, cfg.backbone.name, params.trainable, params.trainable_pct,
        params.base_total + params.head, params.head,
    )
    encoded = task.encode(splits, tokenizer, method.input_layout)
    return Prepared(task, tokenizer, method.model, params, encoded, loaded_bytes, method, held_out)


def method_context(
    cfg: DictConfig, task: Task, model: torch.nn.Module, head: list[str], demonstration_pool: list[dict] = ()
) -> MethodContext:
    """What the method learns of the backbone and the task, for training and for predict alike
    (predict has no training split: `demonstration_pool` stays empty there)."""
    return MethodContext(
        backbone_name=cfg.backbone.name,
        pretrained=model_source(cfg.backbone),
        slots=dict(cfg.backbone.slots),
        head_modules=head,
        peft_task_type=task.peft_task_type,
        hidden_size=model.config.hidden_size,
        max_positions=model.config.max_position_embeddings,
        max_length=cfg.task.max_length,
        demonstration_pool=demonstration_pool,
        data_seed=cfg.task.data_seed,
    )


class EpochSeededLengthGroupedSampler(LengthGroupedSampler):
    """transformers' LengthGroupedSampler, drawing epoch e's order from `seed + e`. Trainer
    builds it without a generator, so each epoch's order comes from the global RNG at the moment
    the epoch starts; a run resumed mid-epoch starts that epoch with another RNG state (Trainer
    restores the saved one only after skipping the batches already trained) and would train the
    rest of the epoch on other batches. Trainer calls `set_epoch` before every epoch, on resume too.

    transformers' sampler hands out each mega-batch's batches longest first, so training sweeps
    from long sentences to short ones and back every 50 steps, and the last steps of an epoch
    see only the shortest sentences of its last mega-batch. With `shuffle_batches`, the batches
    (each as grouped: no more padding) come in random order instead; the one holding the longest
    sentence stays first, so that a batch too large for memory fails at once, and a short last
    batch stays last, where the data loader expects it."""

    def __init__(self, batch_size: int, lengths: list[int], seed: int, shuffle_batches: bool = False) -> None:
        super().__init__(batch_size, lengths=lengths, generator=torch.Generator())
        self.seed = seed
        self.shuffle_batches = shuffle_batches
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.generator.manual_seed(self.seed + epoch)

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        if not self.shuffle_batches or not indices:
            return iter(indices)
        batches = [indices[start : start + self.batch_size] for start in range(0, len(indices), self.batch_size)]
        last = [batches.pop()] if len(batches[-1]) < self.batch_size else []
        middle = batches[1:]
        order = torch.randperm(len(middle), generator=self.generator).tolist()
        return iter(index for batch in [batches[0], *(middle[i] for i in order), *last] for index in batch)


class PeftlabTrainer(Trainer):
    """transformers' Trainer with the six changes peftlab needs, all here.

    Evaluation reads a split in the order it is given. With
    `train_sampling_strategy="group_by_length"`, transformers 5.23 also groups evaluation
    batches, in random mega-batches of a quarter of the split at most (`Trainer._get_eval_sampler`):
    on CoNLL-2003 validation at batch 64 only 75% of the processed tokens are real. Evaluation
    needs no randomness, so peftlab hands it each split longest first (`evaluation_order`) and
    reads it in that order: 92% real. This is transformers' own sampler for the ungrouped case.

    A quantized base may train through modules that are not peft's. Trainer refuses a quantized
    model that peft does not wrap ("purely quantized models":
    `transformers.trainer_utils.validate_quantization_for_training`, called once, from
    `Trainer.__init__`), to stop a run that would train nothing. peftlab's own methods (head_only,
    adapter) train float modules beside the frozen quantized base, so for them the refusal is
    wrong; what it guards against is refused here instead: a model of which nothing trains. That
    check reads the flag transformers' quantizer sets on the model it loads (`is_quantized`),
    which nothing else in `Trainer.__init__` reads, so the flag is lowered while Trainer is built
    and raised again before it returns. Peft models and float bases go through Trainer's own check.

    A resume checkpoint holds what trains, not the whole model. For a peft model Trainer already
    does so (`save_pretrained` writes the adapter and the head); for peftlab's own methods it
    would write every weight of the base (90 MB for MiniLM, per checkpoint, for a head of a few
    kB). `_save` writes their trainable tensors alone, in `model.safetensors` where Trainer's
    best-model loader looks, and `_load_from_checkpoint` puts them back, refusing a checkpoint
    that lacks one of them. Sharded trainers (FSDP, DeepSpeed) hand `_save` the weights they
    gathered and keep Trainer's own saving.

    Training batches grouped by length come in an order seeded per epoch
    (`EpochSeededLengthGroupedSampler`), so that a resumed run trains on the batches the
    uninterrupted run would have, and, with `shuffle_grouped_batches`, in random order rather
    than each mega-batch's longest first.

    With gradient accumulation, Trainer hands the model the target count of the whole accumulated
    batch and skips its own division by the accumulation steps whenever the model's forward takes
    **kwargs, trusting the model to divide by that count. transformers' classification heads take
    the **kwargs and drop the count (transformers#47688): their loss, and so the logged loss and
    the gradients, came out `trainer.grad_accum` times too large. For a task whose model does not
    divide by it (`Task.loss_spans_accumulation`), the count is not handed on, so the model's loss
    is surely its micro-batch mean, and Trainer divides it (`loss_is_scaled_for_ga`, Trainer's own
    setting for this).

    Trainer weighs every training batch alike, the model's loss being its mean over the batch's
    targets. With `mean_batch_targets` (`trainer.target_weighted_loss`), each batch's loss is
    weighed by its targets over that average instead, so that every target weighs alike over the
    epoch: length-grouped batches of 32 two-token headlines then weigh a twentieth of a batch of
    32 forty-token sentences, where unweighted they weigh as much. The weight is applied to the
    micro-batch mean (the count is not handed on to the model), so it is exact across
    `trainer.grad_accum` as well."""

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        loss_spans_accumulation: bool,
        mean_batch_targets: float | None = None,
        shuffle_grouped_batches: bool = False,
        **kwargs: Any,
    ) -> None:
        self.shuffle_grouped_batches = shuffle_grouped_batches
        self.mean_batch_targets = mean_batch_targets
        self.loss_spans_accumulation = loss_spans_accumulation and mean_batch_targets is None
        self.loss_is_scaled_for_ga = None if self.loss_spans_accumulation else False
        if isinstance(model, PeftModel) or not getattr(model, "is_quantized", False):
            super().__init__(model=model, **kwargs)
            return
        if not any(parameter.requires_grad for parameter in model.parameters()):
            raise ValueError("nothing in this quantized model trains: attach a method that trains beside the base.")
        model.is_quantized = False
        try:
            super().__init__(model=model, **kwargs)
        finally:
            model.is_quantized = True

    def compute_loss(
        self, model: torch.nn.Module, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None
    ) -> Any:
        if not self.loss_spans_accumulation:
            num_items_in_batch = None
        targets = target_count(inputs["labels"]) if self.mean_batch_targets and model.training else None
        computed = super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
        if targets is None:
            return computed
        weight = targets / self.mean_batch_targets
        return (computed[0] * weight, computed[1]) if return_outputs else computed * weight

    def _get_eval_sampler(self, eval_dataset: Any) -> Sampler | None:
        return SequentialSampler(eval_dataset) if self.args.world_size <= 1 else None

    def _get_train_sampler(self, train_dataset: Any = None) -> Sampler | None:
        sampler = super()._get_train_sampler(train_dataset)
        if not isinstance(sampler, LengthGroupedSampler):
            return sampler
        seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        return EpochSeededLengthGroupedSampler(sampler.batch_size, sampler.lengths, seed, self.shuffle_grouped_batches)

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        if isinstance(self.model, PeftModel) or state_dict is not None:
            super()._save(output_dir, state_dict)
            return
        if not self.args.should_save:
            return
        directory = Path(output_dir or self.args.output_dir)
        directory.mkdir(parents=True, exist_ok=True)
        save_file(trainable_tensors(self.model), directory / SAFE_WEIGHTS_NAME, metadata={"format": "pt"})

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: torch.nn.Module | None = None) -> None:
        model = model or self.model
        if isinstance(model, PeftModel):
            super()._load_from_checkpoint(resume_from_checkpoint, model)
            return
        saved = load_file(Path(resume_from_checkpoint) / SAFE_WEIGHTS_NAME)
        unexpected = model.load_state_dict(saved, strict=False).unexpected_keys
        missing = [name for name in trainable_tensors(model) if name not in saved]
        if unexpected or missing:
            raise ConfigError(
                f"the checkpoint {resume_from_checkpoint} does not fit this run's model (weights it lacks: "
                f"{sorted(missing)[:3]}; weights the model lacks: {sorted(unexpected)[:3]}): it was saved by another "
                "method, task or backbone. Resume with the command that started the run, or add overwrite=true."
            )


def target_count(labels: torch.Tensor) -> torch.Tensor:
    """The targets a batch's loss averages over: its labels other than the ignored ones (one per
    sentence for classification, one per word for NER, one per completion token for generation)."""
    return labels.ne(IGNORED).sum()


def mean_batch_targets(train: Dataset, batch_size: int) -> float:
    """The targets of the average training batch: all of the split's over its batches per epoch."""
    total = sum(int(target_count(torch.as_tensor(labels))) for labels in train["labels"])
    return total / math.ceil(len(train) / batch_size)


def loss_weighting(trainer: DictConfig, train: Dataset) -> float | None:
    """The average batch's targets, by which each training batch's targets are divided to weigh
    its loss (`trainer.target_weighted_loss`); None where batches are not weighed."""
    return mean_batch_targets(train, trainer.batch_size) if trainer.target_weighted_loss else None


def make_trainer(cfg: DictConfig, prepared: Prepared, output_dir: Path) -> Trainer:
    patience = cfg.trainer.early_stopping_patience
    stop_early = [EarlyStoppingCallback(early_stopping_patience=patience)] if patience is not None else []
    train = prepared.encoded["train"]
    return PeftlabTrainer(
        model=prepared.model,
        loss_spans_accumulation=prepared.task.loss_spans_accumulation,
        mean_batch_targets=loss_weighting(cfg.trainer, train),
        shuffle_grouped_batches=cfg.trainer.shuffle_grouped_batches,
        args=training_arguments(cfg, output_dir, selection_metric(prepared.task)),
        train_dataset=train,
        eval_dataset=evaluation_order(cfg.trainer, prepared.encoded["validation"]),
        data_collator=prepared.task.collator(prepared.tokenizer, prepared.method.input_layout),
        compute_metrics=prepared.task.compute_metrics,
        preprocess_logits_for_metrics=prepared.task.logits_to_predictions,
        callbacks=[StopOnNonFiniteLoss(), *stop_early],
    )


def selection_metric(task: Task) -> str:
    """The validation score that keeps the best checkpoint and stops early: the task's primary
    metric, or the validation loss where Trainer's evaluation during training computes no metric
    (a generation task scores its primary metric by generating, after training only)."""
    return task.primary_metric if task.compute_metrics is not None else "loss"


def run(cfg: DictConfig, run_dir: Path, resume_from: Path | None = None, prepared: Prepared | None = None) -> Result:
    """The run in `run_dir`, from the beginning or continued from the resume checkpoint
    `resume_from`: Trainer restores what trains, the optimizer, the scheduler, the RNG states and
    the position in the data, so the run ends as it would have without the interruption.
    `prepared`: a model made ready by the caller, e.g. a continual stage's, whose body is carried
    over from the stage before (peftlab/continual.py); by default `prepare(cfg)` builds it."""
    reset_peak_memory()
    prepared = prepare(cfg) if prepared is None else prepared
    trainer = make_trainer(cfg, prepared, run_dir / TRAINER_DIR)
    resumed = None if resume_from is None else TrainerState.load_from_json(str(resume_from / TRAINER_STATE))
    if resumed is not None:
        log.info("resuming after step %d from %s", resumed.global_step, resume_from)
    held_out = None if prepared.held_out is None else HeldOutLoss(prepared.held_out, prepared.tokenizer, cfg.forgetting)
    # before training: a resumed run's trained weights are loaded inside trainer.train
    loss_before = None if held_out is None else held_out.score(trainer.model, prepared.method.as_pretrained())
    trained = train(trainer, prepared.method, resume_from)
    selection = _selection(cfg.trainer, trainer.state, selection_metric(prepared.task)) if trained is not None else None
    evaluated = {
        split: prepared.task.evaluate(trainer, evaluation_order(cfg.trainer, prepared.encoded[split]), split)
        for split in EVALUATED_SPLITS
        if split in prepared.encoded
    }
    forgetting = None if held_out is None else held_out.record(loss_before, held_out.score(trainer.model))
    checkpoint_dir = run_dir / CHECKPOINT_DIR
    checkpoint_bytes = 0
    if is_main_process():
        with atomic.folder(checkpoint_dir) as staging:
            checkpoint_bytes = prepared.method.save(staging, base_reference(cfg.backbone))

    primary = prepared.task.primary_metric
    metrics = {split: _strip(values, split, RUNTIME_KEYS) for split, values in evaluated.items()}
    result = _identity(cfg, status="ok")
    result.notes.extend(prepared.task.notes)
    if trained is None:
        result.notes.append(f"method {cfg.method.name} trains nothing: the model was evaluated as loaded")
    result.data_sizes = _data_sizes(prepared.encoded)
    if "test" not in metrics:
        metrics["test"] = None
        result.notes.append(f"{result.dataset} has no test split: the metrics are on validation only")
    result.params = prepared.params
    result.primary_metric = primary
    result.metrics = metrics
    result.history = _history(trainer.state.log_history)
    if resumed is not None:
        result.notes.append(f"resumed after step {resumed.global_step}: timing and memory cover the resumed part only")
    result.timing = _timing(trained, trainer.state, resumed, evaluated)
    result.memory = Memory(**peak_memory(), model_bytes=prepared.model_bytes)
    result.checkpoint = Checkpoint(path=str(checkpoint_dir), size_bytes=checkpoint_bytes)
    result.selection = selection
    result.forgetting = forgetting
    result.notes.extend(_restored_checkpoint_notes(selection, metrics["validation"]))
    scores = "  ".join(f"{split} {primary}={values[primary]:.4f}" for split, values in metrics.items() if values)
    log.info("%s  (train %.1fs)", scores, result.timing.train_seconds)
    if forgetting is not None:
        log.info(
            "held-out LM loss (%s): %.4f before, %.4f after training (%+.4f nats per token)",
            forgetting.texts, forgetting.lm_loss_before, forgetting.lm_loss_after, forgetting.lm_loss_change,
        )
    return result


def train(trainer: Trainer, method: AppliedMethod, resume_from: Path | None) -> TrainOutput | None:
    """Train, unless the method trains nothing by design (`AppliedMethod.trains`, in-context
    prompting): then nothing is trained and None is returned, and the run evaluates the model as
    loaded. The rule is the method's flag, not a count of zero, so a method that should train but
    finds nothing to (BitFit without biases) is still refused in `prepare`. Trainer.train would
    build an optimizer over no parameters (torch refuses an empty list) and save checkpoints of
    nothing; Trainer is still what evaluates."""
    if not method.trains:
        log.info("method %s trains nothing: evaluating the model as loaded", type(method).__name__)
        return None
    return trainer.train(resume_from_checkpoint=None if resume_from is None else str(resume_from))


def _timing(
    trained: TrainOutput | None, state: TrainerState, resumed: TrainerState | None, evaluated: dict[str, dict]
) -> Timing:
    """Training throughput, and None for it where nothing trained (0 s of training, no rate)."""
    eval_seconds = sum(values[f"{split}_runtime"] for split, values in evaluated.items())
    if trained is None:
        return Timing(0.0, None, None, eval_seconds, torch.get_num_threads())
    train_seconds = trained.metrics["train_runtime"]
    tokens_trained_here = state.num_input_tokens_seen - (resumed.num_input_tokens_seen if resumed else 0)
    return Timing(
        train_seconds=train_seconds,
        train_samples_per_second=trained.metrics["train_samples_per_second"],
        train_tokens_per_second=tokens_trained_here / train_seconds,
        eval_seconds=eval_seconds,
        torch_threads=torch.get_num_threads(),
    )


def evaluation_order(trainer: DictConfig, dataset: Any) -> Any:
    """The split as evaluation reads it: longest first with `trainer.group_by_length` (ties keep
    their stored order), so each batch pads to a length close to its own examples'. Every
    metric is computed per example and comes out the same. The loss does not quite: transformers
    averages per-batch token means, so it moves a little whenever batches change (as it does
    with the eval batch size).
    Longest first, as in transformers' grouped sampler: a batch too big for memory fails at once.
    The dataset in `Prepared.encoded` keeps its stored order."""
    if not trainer.group_by_length:
        return dataset
    lengths = [len(ids) for ids in dataset["input_ids"]]
    return dataset.select(sorted(range(len(lengths)), key=lambda index: -lengths[index]))


def training_arguments(cfg: DictConfig, output_dir: Path, selection_metric: str | None = None) -> TrainingArguments:
    """`cfg.trainer` as TrainingArguments. Trainer saves resume checkpoints every
    `trainer.save_every` steps into `output_dir`, the newest `trainer.keep_checkpoints` kept; the
    trained weights of the finished run are the method's to save (`AppliedMethod.save`). Model
    selection on validation (`_selection_arguments`, scored by `selection_metric`) saves at every
    evaluation instead.

    `group_by_length` picks transformers' LengthGroupedSampler: random mega-batches of up to 50
    batches, each sorted by length and cut into batches, so that a batch holds sentences of
    similar lengths and little padding (CoNLL-2003 at batch 32: 95% of the processed tokens are
    real over an epoch, against 38% for random batches). It reads the lengths from the rows once
    per `train()` (about 0.4 s for CoNLL-2003's 14,041 sentences), so no length column is stored."""
    trainer = cfg.trainer
    arguments: dict[str, Any] = dict(
        output_dir=str(output_dir),
        seed=cfg.seed,
        num_train_epochs=trainer.epochs,
        max_steps=trainer.max_steps,
        per_device_train_batch_size=trainer.batch_size,
        per_device_eval_batch_size=trainer.eval_batch_size,
        gradient_accumulation_steps=trainer.grad_accum,
        train_sampling_strategy="group_by_length" if trainer.group_by_length else "random",
        learning_rate=trainer.lr,
        weight_decay=trainer.weight_decay,
        warmup_steps=trainer.warmup,
        lr_scheduler_type=trainer.scheduler,
        eval_strategy=trainer.eval_strategy,
        eval_steps=trainer.eval_steps,
        logging_steps=trainer.logging_steps,
        activation_checkpointing=trainer.gradient_checkpointing,
        disable_tqdm=not trainer.progress_bar,
        save_strategy="steps" if trainer.save_every > 0 else "no",
        save_steps=trainer.save_every or None,
        save_total_limit=trainer.keep_checkpoints,
        report_to="none",
        label_names=["labels"],
        remove_unused_columns=False,  # encode() already keeps exactly the model inputs
        include_num_input_tokens_seen="non_padding",
        dataloader_pin_memory=torch.cuda.is_available(),
    )
    if choose_on_validation(trainer):
        arguments.update(_selection_arguments(trainer, selection_metric))
    arguments.update(OmegaConf.to_container(trainer.extra, resolve=True))
    try:
        return TrainingArguments(**arguments)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"trainer settings rejected by transformers.TrainingArguments: {error}") from error


def _selection_arguments(trainer: DictConfig, metric: str) -> dict[str, Any]:
    """Follow the validation score during training. Trainer saves a checkpoint at every
    evaluation, keeps the newest `trainer.keep_checkpoints` for resuming plus the best one, and
    with `trainer.select_best` loads the best back when training ends, so validation and test are
    scored on it. (Saving only on improvement, save strategy "best", would write less for full
    fine-tuning, but a run resumed from the best checkpoint would retrain from the wrong step.)
    Early stopping (`EarlyStoppingCallback`) counts evaluations since the best, which Trainer
    tracks the same way."""
    return dict(
        metric_for_best_model=metric,
        greater_is_better=not metric.endswith("loss"),
        save_strategy=trainer.eval_strategy,
        save_steps=trainer.eval_steps,
        load_best_model_at_end=trainer.select_best,
    )


def _selection(trainer: DictConfig, state: TrainerState, metric: str) -> Selection | None:
    """What the run chose on validation (None when it chose nothing: last step, whole budget)."""
    if not choose_on_validation(trainer):
        return None
    best_step = state.best_global_step
    restored = trainer.select_best and best_step is not None
    return Selection(
        metric=metric,
        best_step=best_step,
        best_value=state.best_metric if best_step is not None else None,
        selected_step=best_step if restored else state.global_step,
        last_step=state.global_step,
        budget_steps=state.max_steps,
        early_stopped=state.global_step < state.max_steps,
    )


def _restored_checkpoint_notes(selection: Selection | None, validation: dict[str, float]) -> list[str]:
    """A restored checkpoint scores on validation what it scored when it was chosen (same weights,
    same batches). Trainer only warns when it cannot load one back (a prompt-learning adapter,
    peft issue 2256), and the run would then score its last weights as if they were the best."""
    if selection is None or selection.best_step is None or selection.selected_step != selection.best_step:
        return []
    scored = validation[selection.metric]
    if math.isclose(scored, selection.best_value, rel_tol=1e-6, abs_tol=1e-9):
        return []
    return [
        f"the checkpoint of step {selection.best_step} scored validation {selection.metric}={scored:.6g} after "
        f"training, not the {selection.best_value:.6g} it scored when it was selected: it may not have been "
        "restored, and the scores may be the last step's"
    ]



def _check_something_trains(cfg: DictConfig, params: ParamCount, method: AppliedMethod) -> None:
    """Refuse a run that would train nothing: a method whose weights this backbone lacks (BitFit
    on a model without biases) or that trains only the head of a task without one (head-only on
    a causal LM, whose output layer is the pretrained LM head). A method that trains nothing by
    design is evaluated as loaded, so it must not meet a task head, which would be scored untrained."""
    if not method.trains and params.trainable > 0:
        raise ConfigError(
            f"method {cfg.method.name!r} trains nothing, and task {cfg.task.name!r} has a head of {params.head} "
            "parameters that would be evaluated untrained. Use it on a task without a head (a generation task)."
        )
    if method.trains and params.trainable == 0:
        raise ConfigError(
            f"method {cfg.method.name!r} made 0 parameters trainable on backbone {cfg.backbone.name!r}, and "
            f"task {cfg.task.name!r} has no head of its own that trains: nothing would learn. Choose a method "
            "that trains or adds weights in the backbone, e.g. method=lora."
        )


def _identity(cfg: DictConfig, status: str, error: str | None = None) -> Result:
    dataset, fingerprint = dataset_identity(cfg.task.data)
    return Result(
        status=status,
        error=error,
        task=cfg.task.name,
        dataset=dataset,
        dataset_fingerprint=fingerprint,
        method=cfg.method.name,
        backbone=cfg.backbone.name,
        quant=cfg.quant.name,
        seed=cfg.seed,
        config=resolved(cfg),
        versions=package_versions(),
        git_sha=git_sha(),
    )


def _data_sizes(encoded: dict[str, Any]) -> dict[str, int]:
    """Examples per split as trained and scored, after `task.max_*_samples`: a test score on 500
    of 1,287 sentences must say so."""
    return {split: len(examples) for split, examples in encoded.items()}


def _strip(metrics: dict[str, float], prefix: str, drop: tuple[str, ...] = ()) -> dict[str, float]:
    """`validation_f1` -> `f1`, leaving out timing keys that belong in `timing`."""
    stripped = {key.removeprefix(f"{prefix}_"): value for key, value in metrics.items() if key.startswith(prefix)}
    return {key: value for key, value in stripped.items() if key not in drop}


def _history(log_history: list[dict[str, float]]) -> list[dict[str, float]]:
    """Training loss and validation metrics by step, for learning curves."""
    history = []
    for entry in log_history:
        point = {"step": entry["step"], "epoch": entry.get("epoch")}
        if "loss" in entry:
            point["train_loss"] = entry["loss"]
        point.update({f"validation_{k}": v for k, v in _strip(entry, "eval", RUNTIME_KEYS).items()})
        if len(point) > 2:
            history.append(point)
    return history
