"""A finished run folder, loaded back as a model that answers: `python -m peftlab.predict` and
`python -m peftlab.export` start here.

Everything comes from the run folder itself: the run's own config (result.json: backbone,
quant, task, method), the label set of its head (checkpoint/config.json) and the trained
weights (safetensors only). The training data is not needed.

Several runs whose peft adapters were trained on the same base share one loaded base: each is
an adapter of one peft model, added under its own name (peft's multi-adapter API) and switched
on in turn (`set_adapter`), the PEFT promise of one base serving many tasks. Each keeps its own
task head: peft holds one copy of the head per adapter (`modules_to_save`), sized here to that
run's labels."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from peft import PeftConfig, PeftModel, get_peft_model
from peft.utils import ModulesToSaveWrapper
from transformers import AutoConfig, PreTrainedTokenizerBase

from peftlab.backbones import load_tokenizer, model_source
from peftlab.checkpoint import (
    MODEL_CONFIG_FILE, PEFT_CONFIG_FILE, PEFT_WEIGHTS_FILE, TRAINABLE_FILE, load_adapter, read_model_config,
)
from peftlab.config import BackboneConfig
from peftlab.errors import ConfigError, RunError, Unsupported
from peftlab.methods import AppliedMethod, apply_method
from peftlab.methods.peft_method import PeftMethod
from peftlab.result import RESULT_FILE, Result, ResultFileError
from peftlab.tasks import InputLayout, Task, build_task

CHECKPOINT_DIR = "checkpoint"
# Why peftlab's own methods cannot join others on one base, by what their checkpoint holds.
NOT_AN_ADAPTER = (
    "peftlab saves it in its own format (checkpoint/trainable.safetensors), not as a peft adapter: full and bitfit "
    "change the base's own weights, and head_only and the bottleneck adapters are peftlab's modules, which peft "
    "cannot switch on a shared base"
)


@dataclass
class FinishedRun:
    """A run folder that finished: its config, its task (label set restored) and its checkpoint."""

    directory: Path
    config: DictConfig  # the run's composed config, as result.json records it
    task: Task

    @property
    def checkpoint(self) -> Path:
        return self.directory / CHECKPOINT_DIR

    @property
    def peft_type(self) -> str | None:
        """The peft tuner of the checkpoint (LORA, IA3, ...); None for peftlab's own format."""
        adapter_config = self.checkpoint / PEFT_CONFIG_FILE
        return json.loads(adapter_config.read_text(encoding="utf-8"))["peft_type"] if adapter_config.is_file() else None


def read_run(directory: Path, pretrained: str | None = None) -> FinishedRun:
    """A finished run's folder, checked before anything loads. `pretrained` replaces the run's
    `backbone.pretrained`: where this machine has the same weights."""
    result = _read_result(directory)
    if result.status != "ok":
        error = (result.error or "no error recorded").strip().splitlines()
        raise RunError(
            f"{directory} holds a run that failed ({error[-1] if error else 'no error recorded'}), so it has no "
            "trained model. Fix the cause its result.json names and run it again, then predict from the new run."
        )
    checkpoint = directory / CHECKPOINT_DIR
    _require_checkpoint(checkpoint)
    if not result.config:
        raise RunError(f"{directory / RESULT_FILE} records no config, so the run cannot be rebuilt. Run it again.")
    config = OmegaConf.create(result.config)
    # runs recorded before a backbone key existed get its default (trust_remote_code: false)
    config.backbone = OmegaConf.merge(OmegaConf.structured(BackboneConfig), config.backbone)
    if pretrained is not None:
        config.backbone.pretrained = pretrained
    try:
        task = build_task(config.task)
    except ConfigError as error:
        raise RunError(f"{directory}: its task cannot be rebuilt by this peftlab ({error}).") from error
    task.use_trained_labels(read_model_config(checkpoint))
    return FinishedRun(directory, config, task)


@dataclass
class Served:
    """One loaded base serving one run, or several runs' adapters on it."""

    runs: list[FinishedRun]
    tokenizer: PreTrainedTokenizerBase
    method: AppliedMethod  # the model and what it trained; a PeftMethod holding every run's adapter

    def activate(self, index: int) -> InputLayout:
        """Switch the model to run `index` (its adapter and its head); return its input layout."""
        if len(self.runs) > 1:
            self.method.model.set_adapter(adapter_name(index))
        return self.method.input_layout

    def answer(self, index: int, examples: list[dict]) -> list[Any]:
        """Run `index`'s answers to a batch of examples (read by the first run's task)."""
        layout = self.activate(index)
        return self.runs[index].task.predict(self.method.model, self.tokenizer, examples, layout)


def serve(runs: list[FinishedRun], tokenizer: PreTrainedTokenizerBase) -> Served:
    """Load the base once and put each run's trained weights on it, where the run evaluated: on
    the GPU where there is one, unless the run kept to the CPU (`trainer.extra.use_cpu`); a
    quantized base stays where bitsandbytes put it."""
    if len(runs) > 1:
        require_shared_base(runs)
    first = runs[0]
    model = _backbone_or_explain(first, lambda: first.task.build_model(first.config.backbone, first.config.quant))
    if first.peft_type is None:
        method = _own_method(first, model)
    else:
        method = PeftMethod(_attach_adapters(model, runs))
    on_cpu = first.config.trainer.extra.get("use_cpu", False)
    if torch.cuda.is_available() and not on_cpu and not getattr(method.model, "is_quantized", False):
        method.model.to("cuda")
    method.model.eval()
    return Served(runs, tokenizer, method)


def tokenizer_for(run: FinishedRun) -> PreTrainedTokenizerBase:
    return _backbone_or_explain(run, lambda: load_tokenizer(run.config.backbone))


def adapter_name(index: int) -> str:
    """The first run's adapter is peft's `default`, so that saving it writes peft's usual layout."""
    return "default" if index == 0 else f"run{index}"


def require_shared_base(runs: list[FinishedRun]) -> None:
    """Refuse, before anything loads, runs that cannot be adapters of one loaded base."""
    for run in runs:
        if run.peft_type is None:
            raise Unsupported(
                f"{run.directory} trained method={run.config.method.name}, and {NOT_AN_ADAPTER}. Predict that run "
                f"in a command of its own (python -m peftlab.predict {run.directory}), or train a peft method "
                "(lora, dora, ia3, loha, vera, prompt_tuning, prefix_tuning) for several tasks on one base."
            )
    facets = {
        "backbone": lambda run: _base_identity(run.config.backbone),
        "quantization": lambda run: OmegaConf.to_container(run.config.quant),
        "task kind": lambda run: run.config.task.kind,
        "peft type": lambda run: run.peft_type,
    }
    for facet, value_of in facets.items():
        values = {str(run.directory): value_of(run) for run in runs}
        if len({json.dumps(value, sort_keys=True) for value in values.values()}) > 1:
            listed = "; ".join(f"{directory}: {value}" for directory, value in values.items())
            why = (
                "peft holds adapters of one type per model" if facet == "peft type"
                else "one loaded base serves only runs trained on the same base and task kind"
            )
            raise Unsupported(
                f"these runs differ in {facet} ({listed}), and {why}. Predict them in separate commands."
            )


def _base_identity(backbone: DictConfig) -> dict[str, Any]:
    """What makes two backbones one base: the same weights and tokenizer settings, whatever their names."""
    return {key: OmegaConf.to_container(backbone)[key] for key in ("pretrained", "gguf_file", "revision", "tokenizer_kwargs")}


def _own_method(run: FinishedRun, model: torch.nn.Module) -> AppliedMethod:
    """peftlab's own methods, rebuilt as training built them, then their tensors loaded."""
    from peftlab.run import method_context  # run.py pulls in the Trainer; only this path needs it

    head = run.task.head_modules(model, list(run.config.backbone.head_in_body))
    method = apply_method(model, run.config.method, method_context(run.config, run.task, model, head))
    method.load(run.checkpoint)
    return method


def _attach_adapters(model: torch.nn.Module, runs: list[FinishedRun]) -> PeftModel:
    """Each run's adapter on the one base, under its own name, as its checkpoint describes it."""
    peft_model = None
    for index, run in enumerate(runs):
        name = adapter_name(index)
        config = _adapter_config(run)
        if peft_model is None:
            peft_model = get_peft_model(model, config, adapter_name=name)
        else:
            _make_room_for_head(peft_model, run, name)
            peft_model.add_adapter(name, config)
        load_adapter(peft_model, run.checkpoint, adapter_name=name)
    return peft_model


def _adapter_config(run: FinishedRun) -> PeftConfig:
    """The checkpoint's peft config, for the base loaded here from the run's own backbone config:
    peft names that base (and would warn that the portable name it replaces differs; export
    writes the portable one again). A prompt initialised from text reads this machine's copy of
    the tokenizer, though the trained prompt replaces what it builds."""
    config = PeftConfig.from_pretrained(run.checkpoint)
    config.base_model_name_or_path = None
    if getattr(config, "tokenizer_name_or_path", None) is not None:
        config.tokenizer_name_or_path = _backbone_or_explain(run, lambda: model_source(run.config.backbone))
    return config


def _make_room_for_head(peft_model: PeftModel, run: FinishedRun, name: str) -> None:
    """peft gives a new adapter a copy of the base's head, shaped for the first run's labels;
    a run with another label set (9 CoNLL tags, 13 WNUT tags) needs its own shape. The head's
    modules are built for this run's config on the meta device, then given memory, and the
    checkpoint fills them (`load_adapter` refuses one that leaves any of them empty)."""
    trained = AutoConfig.from_pretrained(run.checkpoint, trust_remote_code=run.config.backbone.trust_remote_code)
    with torch.device("meta"):
        skeleton = run.task.auto_model.from_config(trained, trust_remote_code=run.config.backbone.trust_remote_code)
    for path, module in peft_model.get_base_model().named_modules():
        if isinstance(module, ModulesToSaveWrapper):
            device = next(module.original_module.parameters()).device
            module.modules_to_save[name] = skeleton.get_submodule(path).to_empty(device=device)


def _backbone_or_explain(run: FinishedRun, load: Any) -> Any:
    """Load part of the run's backbone; a backbone this machine lacks is named with the fix."""
    try:
        return load()
    except ConfigError as error:
        backbone = run.config.backbone
        raise RunError(
            f"{run.directory} was trained on backbone {backbone.name!r} (backbone.pretrained={backbone.pretrained}), "
            f"which cannot be loaded here: {error} To use a copy of the same weights, pass --pretrained "
            "FOLDER_OR_HUB_ID."
        ) from error


def _read_result(directory: Path) -> Result:
    """The run's result, checked against the schema the report reads it by."""
    result_file = directory / RESULT_FILE
    if not directory.is_dir() or not result_file.is_file():
        what = "is not a folder" if not directory.is_dir() else f"has no {RESULT_FILE}"
        raise RunError(
            f"{directory} {what}, so it is not a peftlab run. Pass the folder a run printed at its end "
            f"(`result: <RUN_DIR>/{RESULT_FILE}`), e.g. outputs/runs/<time>_<task>_<method>_s<seed>."
        )
    try:
        return Result.read(result_file)
    except ResultFileError as error:
        raise RunError(
            f"{error}: the run was probably stopped while writing it, or the file was edited. Run it again."
        ) from None


def _require_checkpoint(checkpoint: Path) -> None:
    """A checkpoint with safetensors weights and the model config; a pickled one is refused unread."""
    weights = [checkpoint / name for name in (PEFT_WEIGHTS_FILE, TRAINABLE_FILE)]
    if not any(path.is_file() for path in weights):
        pickled = sorted(path.name for path in checkpoint.glob("*") if path.suffix in {".bin", ".pt", ".pth", ".pkl"})
        found = (
            f"only pickled weights ({', '.join(pickled)}), which peftlab never loads: unpickling a file can run any "
            "code it holds" if pickled else "no trained weights"
        )
        raise RunError(
            f"{checkpoint} has {found}. A finished run saves {PEFT_WEIGHTS_FILE} or {TRAINABLE_FILE} there; run it "
            "again to get one."
        )
    if not (checkpoint / MODEL_CONFIG_FILE).is_file():
        raise RunError(
            f"{checkpoint} has no {MODEL_CONFIG_FILE}, which names the labels of the trained head: the run was made "
            "by a peftlab that did not save it. Run it again with this one."
        )
