"""A plain PyTorch + peft training loop, without Trainer and without peftlab in the step: the
yardstick for peftlab's step in benchmarks/step_speed.py.

The model is built the way a user of transformers and peft builds it (a token classifier, then
`get_peft_model` for LoRA); the loop is forward, backward, gradient clipping at 1.0, fused AdamW
and a linear schedule with warmup: Trainer's defaults, so both do the same work. The loss is
weighed by the batch's targets as peftlab weighs it (`trainer.target_weighted_loss`). The batches are
peftlab's own (its data, collator and length-grouped sampler, drawn after the same seed), so the
difference between the two is what peftlab's step costs beyond the work itself.

    python benchmarks/plain_loop.py --method lora --steps 30 task.data.path=../shared/data/conll2003
"""

from __future__ import annotations

import argparse
import logging
import math
import tempfile
import time
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Iterable, Iterator

import torch
import transformers
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForTokenClassification, get_linear_schedule_with_warmup

from peftlab.__main__ import config_dir
from peftlab.backbones import model_source
from peftlab.run import Prepared, loss_weighting, make_trainer, prepare, target_count

METHODS = ("full", "lora", "dora")  # the plain builds; every other method is peftlab's own
MAX_GRAD_NORM = 1.0  # TrainingArguments.max_grad_norm's default
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "conll2003"


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """The benchmark's data and batches, shared by this loop and step_speed.py."""
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="CoNLL-2003 folder (../shared/data/conll2003)")
    parser.add_argument("--train-samples", type=int, default=2000, help="random training subset (task.data_seed 0)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=30, help="optimizer steps per measurement; the first is not timed")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("overrides", nargs="*", help="more Hydra overrides for every run, e.g. backbone.pretrained=DIR")


def benchmark_config(args: argparse.Namespace, *overrides: str) -> DictConfig:
    """peftlab's config for MiniLM on the CoNLL-2003 subset: `steps` steps, no evaluation."""
    common = [
        "backbone=minilm", "task=conll2003", f"task.data.path={args.data}",
        f"task.max_train_samples={args.train_samples}", f"trainer.batch_size={args.batch_size}",
        f"trainer.max_steps={args.steps}", "trainer.eval_strategy=no", "trainer.progress_bar=false",
    ]
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose(config_name="config", overrides=[*common, *args.overrides, *overrides])


def quiet_libraries() -> None:
    """Fifteen model loads and data preparations: keep their load reports and progress bars out
    of the benchmark's output."""
    import datasets

    transformers.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    logging.getLogger("peftlab").setLevel(logging.WARNING)


def check_steps(args: argparse.Namespace, train_sentences: int) -> None:
    """Refuse a measurement the batches cannot give: the first step is not timed, and after one
    epoch Trainer draws a new order that the plain loop would not see."""
    epoch = math.ceil(train_sentences / args.batch_size)
    if not 2 <= args.steps <= epoch:
        raise SystemExit(
            f"--steps {args.steps}: use 2 to {epoch}, the batches of one epoch of {train_sentences} training "
            f"sentences at batch {args.batch_size} (or raise --train-samples)."
        )


@dataclass
class PlainRun:
    """What the loop measured: the clock and the real (unpadded) tokens seen after each step."""

    step_ends: list[float] = field(default_factory=list)
    tokens_seen: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)

    def seconds_per_step(self) -> float:
        """Mean over every step but the first, which pays for lazy set-up (optimizer state)."""
        return (self.step_ends[-1] - self.step_ends[0]) / (len(self.step_ends) - 1)

    def tokens_after_first_step(self) -> int:
        return self.tokens_seen[-1] - self.tokens_seen[0]


def plain_model(cfg: DictConfig, num_labels: int) -> torch.nn.Module:
    """The token classifier of `cfg.backbone`, fully trainable (`full`) or wrapped by peft with
    the LoRA (or DoRA) settings of `cfg.method`, seeded as peftlab seeds a run."""
    if cfg.method.name not in METHODS:
        raise SystemExit(f"plain_loop builds {list(METHODS)} only, not method={cfg.method.name}")
    transformers.set_seed(cfg.seed)
    model = AutoModelForTokenClassification.from_pretrained(
        model_source(cfg.backbone), num_labels=num_labels, dtype=torch.float32, use_safetensors=True
    )
    if cfg.method.name == "full":
        return model
    slots = "|".join(cfg.backbone.slots[slot] for slot in cfg.method.targets)
    config = LoraConfig(
        r=cfg.method.r,
        lora_alpha=cfg.method.alpha,
        lora_dropout=cfg.method.dropout,
        use_dora=cfg.method.use_dora,
        target_modules=rf".*\.({slots})",  # a string is a regex over the full module name
        modules_to_save=["classifier"],
        task_type="TOKEN_CLS",
    )
    return get_peft_model(model, config)


def peftlab_batches(cfg: DictConfig, prepared: Prepared, steps: int) -> Iterator[dict[str, torch.Tensor]]:
    """The first `steps` batches peftlab's Trainer trains on: its dataloader, drawn right after
    `set_seed(cfg.seed)`, as a Trainer that was just made (and seeded) draws it in `train()`.
    Collated lazily, as in training."""
    with tempfile.TemporaryDirectory() as scratch:
        loader = make_trainer(cfg, prepared, Path(scratch)).get_train_dataloader()
    transformers.set_seed(cfg.seed)
    return islice(loader, steps)


def train(
    model: torch.nn.Module,
    batches: Iterable[dict[str, torch.Tensor]],
    cfg: DictConfig,
    steps: int,
    mean_targets: float | None,
) -> PlainRun:
    """Forward, backward, clip, step: one optimizer step per batch, at `cfg.trainer`'s learning
    rate, weight decay and warmup; each batch's loss weighed by its targets over `mean_targets`
    (peftlab.run's `loss_weighting`) unless that is None."""
    trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=cfg.trainer.lr, weight_decay=cfg.trainer.weight_decay, fused=True)
    warmup = cfg.trainer.warmup if isinstance(cfg.trainer.warmup, int) else math.ceil(cfg.trainer.warmup * steps)
    schedule = get_linear_schedule_with_warmup(optimizer, warmup, steps)
    model.train()
    run, seen = PlainRun(), 0
    for batch in batches:
        loss = model(**batch).loss
        if mean_targets is not None:
            loss = loss * (target_count(batch["labels"]) / mean_targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, MAX_GRAD_NORM)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        seen += int(batch["attention_mask"].sum())
        run.losses.append(loss.item())
        run.step_ends.append(time.perf_counter())
        run.tokens_seen.append(seen)
    return run


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--method", choices=METHODS, default="lora")
    add_data_arguments(parser)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    quiet_libraries()
    cfg = benchmark_config(args, f"method={args.method}")
    prepared = prepare(cfg)
    check_steps(args, len(prepared.encoded["train"]))
    model = plain_model(cfg, len(prepared.task.labels))
    weighting = loss_weighting(cfg.trainer, prepared.encoded["train"])
    run = train(model, peftlab_batches(cfg, prepared, args.steps), cfg, args.steps, weighting)
    print(f"plain loop, method={args.method}: {run.seconds_per_step():.4f} s/step over steps 2-{len(run.step_ends)}, "
          f"{run.tokens_after_first_step() / (run.step_ends[-1] - run.step_ends[0]):.0f} real tokens/s")
    print("losses:", " ".join(f"{loss:.4f}" for loss in run.losses))


if __name__ == "__main__":
    main()
