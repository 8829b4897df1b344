"""Generation with a decoder (causal LM): prompt -> completion, with the loss on the completion.

Each example is `prompt + completion + EOS` in one sequence; the prompt's positions (and the
padding) carry the label -100, so the model learns to answer, not to recite the question. A
pair longer than `task.max_length` loses the start of its prompt, never its completion: the
completion is both the training target and the reference the metric compares with.

Evaluation generates: greedy decoding of every prompt of the split, scored by exact match
after normalisation and, for free text (`task.rouge`), ROUGE-L F1. A classification dataset
(`text`/`label` rows) becomes prompt -> label word through `task.template`, so the same
decoder answers Banking77 or SST-2 with the name of the class.

The LM head is not a task head: it is the pretrained output layer (in SmolLM2, Qwen2.5 and
GPT-2 the input embedding matrix itself, tied). So `head_modules` is empty and the head stays
frozen with the body; a method trains what it owns, and `full` trains the head with the body.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch
from omegaconf import DictConfig, OmegaConf
from transformers import AutoModelForCausalLM, GenerationConfig, PreTrainedTokenizerBase, Trainer

from peftlab.backbones import load_model
from peftlab.data.sources import arrange_splits, load_splits
from peftlab.errors import ConfigError, DataError
from peftlab.tasks import Task

log = logging.getLogger("peftlab")
IGNORED = -100  # the label id torch's cross-entropy skips
NORMALIZERS: dict[str, Callable[[str], str]] = {
    "strip": str.strip,
    "casefold": str.casefold,
    "squash_spaces": lambda text: " ".join(text.split()),
}


class CompletionTooLong(ValueError):
    """The completion and its EOS leave no room for even one prompt token."""


def to_prompt_completion(example: dict, template: DictConfig, label_words: dict[str, str]) -> dict[str, str]:
    """Fill the template's `prompt` and `completion` with the example's fields; `{label}` is the
    label's word (`task.label_words`, for datasets whose labels are integers) or the label itself.

    `str.format` parses only the template, so braces in the data are safe."""
    fields = dict(example)
    if "label" in fields:
        fields["label"] = label_words.get(str(fields["label"]), str(fields["label"]))
    try:
        return {"prompt": template.prompt.format_map(fields), "completion": template.completion.format_map(fields)}
    except (KeyError, IndexError, ValueError) as error:
        raise ConfigError(
            f"task.template cannot be filled from an example with fields {sorted(example)}: {error!r}. "
            "Use only those fields in task.template.prompt and task.template.completion, as {field}."
        ) from error


def encode_pair(
    prompt_ids: list[int], completion_ids: list[int], max_length: int, keep_first: int = 0
) -> dict[str, Any]:
    """input_ids = prompt + completion (the completion ends with EOS); labels are -100 on the
    prompt. A pair longer than `max_length` drops prompt tokens from the left, after the first
    `keep_first` (a BOS token)."""
    room = max_length - len(completion_ids)
    if room < keep_first + 1:
        raise CompletionTooLong(len(completion_ids))
    if len(prompt_ids) > room:
        prompt_ids = prompt_ids[:keep_first] + prompt_ids[len(prompt_ids) - (room - keep_first) :]
    return {
        "input_ids": prompt_ids + completion_ids,
        "labels": [IGNORED] * len(prompt_ids) + completion_ids,
        "prompt_length": len(prompt_ids),
    }


@dataclass
class CompletionCollator:
    """Pads each batch on the right to its longest sequence: pad id in the inputs, 0 in the
    attention mask, -100 in the labels. Labels are built before padding, so an EOS that is also
    the pad token keeps its label (masking every pad id would teach the model never to stop).
    Prompt tuning needs no shift here: peft's causal-LM forward prepends -100 for its virtual
    tokens itself."""

    pad_token_id: int

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        width = max(len(feature["input_ids"]) for feature in features)
        input_ids, attention_mask, labels = [], [], []
        for feature in features:
            padding = width - len(feature["input_ids"])
            input_ids.append(list(feature["input_ids"]) + [self.pad_token_id] * padding)
            attention_mask.append([1] * len(feature["input_ids"]) + [0] * padding)
            labels.append(list(feature["labels"]) + [IGNORED] * padding)
        return {
            "input_ids": torch.tensor(input_ids),
            "attention_mask": torch.tensor(attention_mask),
            "labels": torch.tensor(labels),
        }


def exact_match(predictions: list[str], references: list[str], normalize: list[str]) -> float:
    """Share of predictions equal to their reference after the `normalize` steps, in order."""

    def normalized(text: str) -> str:
        for step in normalize:
            text = NORMALIZERS[step](text)
        return text

    hits = sum(normalized(p) == normalized(r) for p, r in zip(predictions, references, strict=True))
    return hits / len(references)


def rouge_l(predictions: list[str], references: list[str]) -> float:
    """ROUGE-L F1 (longest common subsequence; Lin 2004) averaged over examples, from
    rouge_score. Its tokenizer lower-cases and keeps only [a-z0-9] runs: text in other
    scripts scores 0."""
    from rouge_score.rouge_scorer import RougeScorer

    scorer = RougeScorer(["rougeL"])
    scores = [scorer.score(r, p)["rougeL"].fmeasure for p, r in zip(predictions, references, strict=True)]
    return sum(scores) / len(scores)


def generate_completions(
    model: torch.nn.Module,
    prompts: list[list[int]],
    generation: GenerationConfig,
    batch_size: int,
) -> list[list[int]]:
    """Greedy completions of token-id prompts, batched and padded on the left (a decoder
    continues from the last position, so the prompts must end together), each cut at its first
    EOS. Works on a PeftModel too: peft adds its virtual tokens or prefix inside `generate`."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    completions = []
    for start in range(0, len(prompts), batch_size):
        batch = prompts[start : start + batch_size]
        width = max(len(prompt) for prompt in batch)
        input_ids = torch.tensor([[generation.pad_token_id] * (width - len(p)) + p for p in batch], device=device)
        attention_mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch], device=device)
        with torch.no_grad():
            output = model.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=generation)
        for row in output[:, width:].tolist():
            completions.append(row[: row.index(generation.eos_token_id)] if generation.eos_token_id in row else row)
    model.train(was_training)
    return completions


class Generation(Task):
    peft_task_type = "CAUSAL_LM"
    # Trainer.evaluate then computes the teacher-forced loss only, without gathering logits over
    # the whole vocabulary; the scores come from generated text in `evaluate`.
    compute_metrics = None

    def __init__(self, task: DictConfig) -> None:
        super().__init__(task)
        self.primary_metric = task.primary_metric
        self.tokenizer: PreTrainedTokenizerBase | None = None
        self._check_config()

    def prepare_data(self) -> dict[str, list[dict]]:
        """Read the splits, turn every row into {prompt, completion}, then the shared split rule
        (validation carved from train when missing, test optional) and the subsample."""
        splits = load_splits(self.config.data)
        pairs = {split: self._prompt_completion_rows(split, rows) for split, rows in splits.items()}
        arranged, self.notes = arrange_splits(pairs, self.config)
        return arranged

    def build_model(self, backbone: DictConfig, quant: DictConfig) -> torch.nn.Module:
        return load_model(AutoModelForCausalLM, backbone, quant)

    def head_modules(self, model: torch.nn.Module) -> list[str]:
        """No task head: the LM head is the backbone's own output layer (see the module docstring)."""
        return []

    def encode(self, splits: dict[str, list[dict]], tokenizer: PreTrainedTokenizerBase) -> dict[str, Any]:
        """Token ids with completion-only labels, plus what generation needs: the prompt length
        and the reference completion as text. The collator passes only the model inputs on."""
        import datasets

        if tokenizer.eos_token_id is None:
            raise ConfigError(
                "the backbone's tokenizer has no EOS token, so a completion cannot be taught to end; "
                "pick a decoder backbone whose tokenizer defines eos_token."
            )
        if self.config.chat_template and not tokenizer.chat_template:
            raise ConfigError(
                "task.chat_template=true, but the backbone's tokenizer has no chat template; "
                "set task.chat_template=false (the prompt is then followed by task.separator)."
            )
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token  # padding is masked; any id works, EOS always exists
        self.tokenizer = tokenizer
        return {split: datasets.Dataset.from_list(self._encode_split(split, rows)) for split, rows in splits.items()}

    def collator(self, tokenizer: PreTrainedTokenizerBase, prepended_positions: int = 0) -> CompletionCollator:
        return CompletionCollator(tokenizer.pad_token_id)

    def evaluate(self, trainer: Trainer, dataset: Any, split: str) -> dict[str, float]:
        """Teacher-forced loss, then greedy generation on the split's prompts and the scores.
        `{split}_runtime` covers both, as the run's eval_seconds should."""
        started = time.perf_counter()
        metrics = trainer.evaluate(dataset, metric_key_prefix=split)
        prompts = [list(ids[:length]) for ids, length in zip(dataset["input_ids"], dataset["prompt_length"])]
        generated = generate_completions(
            trainer.model, prompts, self.generation_config(), trainer.args.per_device_eval_batch_size
        )
        predictions = self.tokenizer.batch_decode(generated, skip_special_tokens=True)
        references = list(dataset["reference"])
        scores = self.score(predictions, references)
        log.info("%s, first example: %r -> %r (reference %r)", split, self.tokenizer.decode(prompts[0]), predictions[0], references[0])
        metrics.update({f"{split}_{name}": value for name, value in scores.items()})
        metrics[f"{split}_runtime"] = time.perf_counter() - started
        metrics[f"{split}_samples_per_second"] = len(dataset) / metrics[f"{split}_runtime"]
        metrics.pop(f"{split}_steps_per_second", None)
        return metrics

    def score(self, predictions: list[str], references: list[str]) -> dict[str, float]:
        scores = {"exact_match": exact_match(predictions, references, list(self.config.normalize))}
        if self.config.rouge:
            scores["rouge_l"] = rouge_l(predictions, references)
        return scores

    def generation_config(self) -> GenerationConfig:
        """Greedy and nothing else: a fresh config, so that sampling settings or a repetition
        penalty in the backbone's generation_config.json cannot change what is scored."""
        return GenerationConfig(
            max_new_tokens=self.config.max_new_tokens,
            do_sample=False,
            num_beams=1,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=self.tokenizer.eos_token_id,
        )

    def _prompt_completion_rows(self, split: str, rows: list[dict]) -> list[dict]:
        template = self.config.template
        if template is not None:
            label_words = {str(key): str(word) for key, word in (self.config.label_words or {}).items()}
            return [to_prompt_completion(row, template, label_words) for row in rows]
        if not {"prompt", "completion"} <= rows[0].keys():
            raise DataError(
                f"the {split!r} split of {self._source()} has rows with fields {sorted(rows[0])}, not prompt and "
                "completion. Map the file's columns with task.data.columns={prompt: COLUMN, completion: COLUMN}, "
                "or set task.template to build them (as conf/task/banking77_gen.yaml does)."
            )
        return [{"prompt": str(row["prompt"]), "completion": str(row["completion"])} for row in rows]

    def _encode_split(self, split: str, rows: list[dict]) -> list[dict]:
        tokenizer = self.tokenizer
        prompts = [self._prompt_text(row["prompt"]) for row in rows]
        prompt_ids = tokenizer(prompts, add_special_tokens=not self.config.chat_template)["input_ids"]
        completion_ids = tokenizer([row["completion"] for row in rows], add_special_tokens=False)["input_ids"]
        encoded = []
        for index, (row, prompt, completion) in enumerate(zip(rows, prompt_ids, completion_ids)):
            keep_first = 1 if prompt[:1] == [tokenizer.bos_token_id] else 0
            try:
                pair = encode_pair(prompt, completion + [tokenizer.eos_token_id], self.config.max_length, keep_first)
            except CompletionTooLong as error:
                raise DataError(
                    f"example {index} of the {split!r} split of {self._source()}: its completion takes {error} tokens "
                    f"with EOS, which leaves no room for the prompt in task.max_length={self.config.max_length}. "
                    "Raise task.max_length or shorten the completion; peftlab never truncates a completion."
                ) from None
            encoded.append({**pair, "reference": row["completion"]})
        return encoded

    def _prompt_text(self, prompt: str) -> str:
        """The prompt as the model sees it, in training and in generation alike."""
        if not self.config.chat_template:
            return prompt + self.config.separator
        return self.tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )

    def _check_config(self) -> None:
        """Refuse what would fail after training, before anything loads."""
        task = self.config
        available = ["exact_match"] + (["rouge_l"] if task.rouge else [])
        if task.primary_metric not in available:
            raise ConfigError(
                f"task.primary_metric={task.primary_metric!r} is not computed by task {task.name!r}; "
                f"it computes {available} (rouge_l needs task.rouge=true)."
            )
        if task.rouge and importlib.util.find_spec("rouge_score") is None:
            raise ConfigError("task.rouge=true needs the rouge-score package: pip install 'peftlab[gen]'.")
        unknown = [step for step in task.normalize if step not in NORMALIZERS]
        if unknown:
            raise ConfigError(f"task.normalize has unknown steps {unknown}; use any of {sorted(NORMALIZERS)}.")
        if not isinstance(task.max_new_tokens, int) or task.max_new_tokens < 1:
            raise ConfigError(f"task.max_new_tokens must be an integer >= 1, got {task.max_new_tokens!r}.")
        if task.template is not None and not {"prompt", "completion"} <= set(OmegaConf.to_container(task.template)):
            raise ConfigError("task.template needs both keys: prompt and completion (format strings over the row's fields).")

    def _source(self) -> str:
        data = self.config.data
        return f"task.data.path={data.path}" if data.path else f"task.data (format {data.format!r}, hub_id {data.hub_id!r})"
