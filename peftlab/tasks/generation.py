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
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
from omegaconf import DictConfig
from transformers import AutoModelForCausalLM, DynamicCache, GenerationConfig, PreTrainedTokenizerBase, Trainer

from peftlab.data.sources import Splits
from peftlab.errors import ConfigError, DataError
from peftlab.tasks import IGNORED, PLAIN_INPUT, InputLayout, Task, refuse_pre_split

log = logging.getLogger("peftlab")
NORMALIZERS: dict[str, Callable[[str], str]] = {
    "strip": str.strip,
    "casefold": str.casefold,
    "squash_spaces": lambda text: " ".join(text.split()),
}


Demonstrations = tuple[tuple[str, str], ...]  # (prompt, completion) pairs a method puts before every prompt


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
    max_tokens: int,
) -> list[list[int]]:
    """Greedy completions of token-id prompts, in the order given, each cut at its first EOS.

    Prompts are batched by length (`length_batches`, then put back in order) and padded on the
    left: a decoder continues from the last position, so the prompts must end together. In the
    order of a dataset a batch is padded to its longest prompt: Banking77's prompts, batched by
    64 that way, are 60% padding. The KV cache is kept and the LM head runs on the last position
    only; a model that can continue from a cache decodes through `_greedy_decode`, which drops
    each row once it ends. Works on a PeftModel too: a prompt method (virtual tokens or a prefix
    that peft adds inside every forward) goes through `generate`, which knows where they go."""
    completions: list[list[int]] = [[] for _ in prompts]
    decode_batch = _continue_batch if continues_from_cache(model) else _generate_batch
    with evaluation_mode(model):
        for batch in length_batches([len(prompt) for prompt in prompts], max_tokens):
            for index, completion in zip(batch, decode_batch(model, [prompts[i] for i in batch], generation)):
                completions[index] = completion
    return completions


def complete_and_score(
    model: torch.nn.Module,
    prompts: list[list[int]],
    references: list[list[int]],
    generation: GenerationConfig,
    max_tokens: int,
    loss_tokens: int,
) -> tuple[list[list[int]], list[float]]:
    """Greedy completions as `generate_completions` makes them, and the summed cross-entropy of
    each reference completion (its tokens, EOS included) after its prompt, from one prefill.

    The teacher-forced loss and generation both start by running the prompt; here it runs once:
    the reference continues the prompt's KV cache (in chunks of at most `loss_tokens` tokens a
    forward, so the logits stay small), the cache is cropped back to the prompt, and greedy
    decoding continues it. Only for a model that `continues_from_cache`."""
    completions: list[list[int]] = [[] for _ in prompts]
    losses = [0.0] * len(prompts)
    with evaluation_mode(model):
        for batch in length_batches([len(prompt) for prompt in prompts], max_tokens):
            batch_references = [references[i] for i in batch]
            batch_prompts = [prompts[i] for i in batch]
            generated, batch_losses = _continue_batch_scored(model, batch_prompts, batch_references, generation, loss_tokens)
            for index, completion, loss in zip(batch, generated, batch_losses):
                completions[index], losses[index] = completion, loss
    return completions, losses


def continues_from_cache(model: torch.nn.Module) -> bool:
    """Whether a forward with `past_key_values` continues the sequence the cache holds. Not for
    peft's prompt methods: their forward puts the virtual tokens before its input (prompt
    tuning) or replaces the cache with the trained prefix (prefix tuning) at every call."""
    active = getattr(model, "active_peft_config", None)
    return active is None or not active.is_prompt_learning


def length_batches(lengths: list[int], max_tokens: int) -> list[list[int]]:
    """Indices sorted by length, cut into batches of at most `max_tokens` tokens once padded to
    their longest; a longer sequence makes a batch alone. A budget in tokens rather than rows
    keeps the few long sequences of a split from padding a whole batch of short ones."""
    batches: list[list[int]] = []
    for index in sorted(range(len(lengths)), key=lengths.__getitem__):
        if not batches or (len(batches[-1]) + 1) * lengths[index] > max_tokens:
            batches.append([])
        batches[-1].append(index)
    return batches


def _generate_batch(model: torch.nn.Module, prompts: list[list[int]], generation: GenerationConfig) -> list[list[int]]:
    device = next(model.parameters()).device
    width = max(len(prompt) for prompt in prompts)
    input_ids = torch.tensor([[generation.pad_token_id] * (width - len(p)) + p for p in prompts], device=device)
    attention_mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
    with torch.no_grad():
        output = model.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=generation)
    rows = output[:, width:].tolist()
    return [row[: row.index(generation.eos_token_id)] if generation.eos_token_id in row else row for row in rows]


def _continue_batch(model: torch.nn.Module, prompts: list[list[int]], generation: GenerationConfig) -> list[list[int]]:
    cache, attention_mask, positions, logits = _prefill(model, prompts, generation.pad_token_id)
    return _greedy_decode(model, cache, attention_mask, positions, logits, generation)


def _continue_batch_scored(
    model: torch.nn.Module,
    prompts: list[list[int]],
    references: list[list[int]],
    generation: GenerationConfig,
    loss_tokens: int,
) -> tuple[list[list[int]], list[float]]:
    cache, attention_mask, positions, logits = _prefill(model, prompts, generation.pad_token_id)
    losses = _reference_losses(model, cache, attention_mask, positions, logits, references, loss_tokens)
    cache.crop(attention_mask.shape[1] - cache.get_seq_length())  # back to the prompts alone
    return _greedy_decode(model, cache, attention_mask, positions, logits, generation), losses


def _prefill(
    model: torch.nn.Module, prompts: list[list[int]], pad_token_id: int
) -> tuple[DynamicCache, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run the left-padded prompts as `generate` does: positions count the real tokens only
    (a pad never shifts them), and the LM head scores the last position alone. Returns the
    cache, the attention mask, each row's last position and the next token's logits."""
    device = next(model.parameters()).device
    width = max(len(prompt) for prompt in prompts)
    input_ids = torch.tensor([[pad_token_id] * (width - len(p)) + p for p in prompts], device=device)
    attention_mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
    positions = (attention_mask.cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)
    cache = DynamicCache(config=model.config)
    with torch.no_grad():
        outputs = model(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=positions,
            past_key_values=cache, use_cache=True, logits_to_keep=1,
        )
    return cache, attention_mask, positions[:, -1], outputs.logits[:, -1].float()


def _reference_losses(
    model: torch.nn.Module,
    cache: DynamicCache,
    attention_mask: torch.Tensor,
    positions: torch.Tensor,
    logits: torch.Tensor,
    references: list[list[int]],
    loss_tokens: int,
) -> list[float]:
    """Each reference's summed cross-entropy, teacher-forced after its prompt: the prefill's
    logits predict its first token, and the reference itself (right-padded, its last token
    left out: it predicts nothing) continues the cache to predict the rest."""
    device = attention_mask.device
    width = max(len(reference) for reference in references)
    targets = torch.tensor([r + [IGNORED] * (width - len(r)) for r in references], device=device)
    sums = torch.nn.functional.cross_entropy(logits, targets[:, 0], ignore_index=IGNORED, reduction="none")
    inputs = targets[:, :-1].clamp(min=0)  # a padded position's input is masked, any id will do
    chunk = max(1, loss_tokens // len(references))
    for start in range(0, inputs.shape[1], chunk):
        end = min(start + chunk, inputs.shape[1])
        attention_mask = torch.cat([attention_mask, (targets[:, start:end] != IGNORED).long()], dim=1)
        with torch.no_grad():
            outputs = model(
                input_ids=inputs[:, start:end], attention_mask=attention_mask,
                position_ids=positions[:, None] + torch.arange(start + 1, end + 1, device=device),
                past_key_values=cache, use_cache=True,
            )
        sums += torch.nn.functional.cross_entropy(
            outputs.logits.float().transpose(1, 2), targets[:, start + 1 : end + 1], ignore_index=IGNORED, reduction="none"
        ).sum(dim=1)
    return sums.tolist()


def _greedy_decode(
    model: torch.nn.Module,
    cache: DynamicCache,
    attention_mask: torch.Tensor,
    positions: torch.Tensor,
    logits: torch.Tensor,
    generation: GenerationConfig,
) -> list[list[int]]:
    """Greedy decoding from a prefilled cache, up to `max_new_tokens`, cut at EOS. Unlike
    `generate`, which runs every row until the last one ends, a row leaves the batch (and its
    cache) at its EOS: on a trained model most answers end in a few tokens, and one that runs on
    would otherwise hold the whole batch to the end."""
    rows = torch.arange(len(positions))
    completions: list[list[int]] = [[] for _ in rows]
    for step in range(generation.max_new_tokens):
        tokens = logits.argmax(dim=-1)
        for row, token in zip(rows.tolist(), tokens.tolist()):
            completions[row].append(token)
        running = (tokens != generation.eos_token_id).nonzero().squeeze(1)
        if step + 1 == generation.max_new_tokens or len(running) == 0:
            break
        if len(running) < len(rows):
            cache.batch_select_indices(running)
            rows, tokens, attention_mask, positions = rows[running], tokens[running], attention_mask[running], positions[running]
        attention_mask = torch.nn.functional.pad(attention_mask, (0, 1), value=1)
        positions = positions + 1
        with torch.no_grad():
            outputs = model(
                input_ids=tokens[:, None], attention_mask=attention_mask, position_ids=positions[:, None],
                past_key_values=cache, use_cache=True,
            )
        logits = outputs.logits[:, -1].float()
    eos = generation.eos_token_id
    return [completion[: completion.index(eos)] if eos in completion else completion for completion in completions]


def teacher_forced_loss(
    model: torch.nn.Module,
    examples: list[dict],
    collator: Callable[[list[dict]], dict[str, torch.Tensor]],
    batch_size: int,
    max_tokens: int,
) -> float:
    """The loss `Trainer.evaluate` reports for a causal LM, without its cost: consecutive batches
    of `batch_size` examples, each scored by its mean over the completion tokens, the batch means
    averaged with the batches' sizes as weights.

    Trainer runs a whole batch at once and its LM head scores every position: fp32 logits of
    [batch, length, vocabulary], up to 1.5 GB for 64 Banking77 examples on SmolLM2's 49k tokens,
    and as much again for the log-softmax of the cross-entropy. Here each batch runs in slices of
    examples of similar length (`length_batches`, `max_tokens` tokens once padded), and the LM
    head scores only the positions that predict a completion token, through transformers' own
    loss arguments: `logits_to_keep` keeps the last positions of the right-padded slice,
    `shift_labels` are their targets, and `num_items_in_batch` (the batch's target count)
    makes each slice's loss its share of the batch mean."""
    weighted_sum = 0.0
    with evaluation_mode(model), torch.no_grad():
        for start in range(0, len(examples), batch_size):
            batch = examples[start : start + batch_size]
            lengths = [len(example["input_ids"]) for example in batch]
            slices = [collator([batch[i] for i in part]) for part in length_batches(lengths, max_tokens)]
            targets = [_shifted(inputs["labels"]) for inputs in slices]
            batch_targets = sum(int((shifted != IGNORED).sum()) for shifted in targets)
            batch_mean = sum(_loss_share(model, inputs, shifted, batch_targets) for inputs, shifted in zip(slices, targets))
            weighted_sum += batch_mean * len(batch)
    return weighted_sum / len(examples)


def batch_weighted_loss(sums: list[float], counts: list[int], batch_size: int) -> float:
    """Trainer's evaluation loss from each example's summed cross-entropy and target count:
    consecutive batches of `batch_size`, each its mean over its targets, the batch means
    averaged with the batches' sizes as weights (`teacher_forced_loss` computes the same)."""
    weighted_sum = 0.0
    for start in range(0, len(sums), batch_size):
        end = start + batch_size
        weighted_sum += sum(sums[start:end]) / sum(counts[start:end]) * len(sums[start:end])
    return weighted_sum / len(sums)


def _loss_share(model: torch.nn.Module, inputs: dict[str, torch.Tensor], shifted: torch.Tensor, batch_targets: int) -> float:
    """A slice's summed cross-entropy over its targets, divided by the whole batch's target count."""
    device = next(model.parameters()).device
    first = int((shifted != IGNORED).any(dim=0).int().argmax())  # the first position that predicts a target
    outputs = model(
        **{name: tensor.to(device) for name, tensor in inputs.items()},
        shift_labels=shifted[:, first:].contiguous().to(device),
        logits_to_keep=shifted.shape[1] - first,
        num_items_in_batch=batch_targets,
    )
    return outputs.loss.item()


def _shifted(labels: torch.Tensor) -> torch.Tensor:
    """The target of each position: the next position's label (-100 after the last), as
    transformers' causal-LM loss shifts them."""
    return torch.nn.functional.pad(labels[:, 1:], (0, 1), value=IGNORED)


@contextmanager
def evaluation_mode(model: torch.nn.Module) -> Iterator[None]:
    """Dropout off (LoRA's included), then back to the mode the model was in."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


class Generation(Task):
    peft_task_type = "CAUSAL_LM"
    auto_model = AutoModelForCausalLM
    loss_spans_accumulation = True
    # Trainer's own evaluation during training (the learning curve) then computes the teacher-forced
    # loss only, without gathering logits over the whole vocabulary; `evaluate` generates and scores.
    compute_metrics = None

    def __init__(self, task: DictConfig) -> None:
        super().__init__(task)
        self.primary_metric = str(task.primary_metric)
        self.tokenizer: PreTrainedTokenizerBase | None = None
        self._check_config()

    def check(self, splits: Splits) -> Splits:
        """Every row as {prompt, completion}: built by `task.template`, or read as they are."""
        return {split: self._prompt_completion_rows(split, rows) for split, rows in splits.items()}

    def head_modules(self, model: torch.nn.Module, head_in_body: list[str]) -> list[str]:
        """No task head: the LM head is the backbone's own output layer (see the module docstring)."""
        return []

    def encode(
        self, splits: dict[str, list[dict]], tokenizer: PreTrainedTokenizerBase, layout: InputLayout = PLAIN_INPUT
    ) -> dict[str, Any]:
        """Token ids with completion-only labels, plus what generation needs: the prompt length
        and the reference completion as text. The collator passes only the model inputs on.
        The method's demonstrations (`layout`) go before every prompt (`_prompt_text`)."""
        import datasets

        self._adopt(tokenizer)
        tokenized = {split: self._tokenize_split(rows, layout.demonstrations) for split, rows in splits.items()}
        if layout.demonstrations:
            self._require_room_for_demonstrations(tokenized, len(layout.demonstrations))
        return {
            split: datasets.Dataset.from_list(self._encode_split(split, rows, *tokenized[split]))
            for split, rows in splits.items()
        }

    def read_input(self, line: str, tokenizer: PreTrainedTokenizerBase, pre_split: bool) -> dict[str, Any]:
        """The prompt: the line itself, or with `task.template` the template's prompt around
        the line as `{text}` (the line is what a data row holds as its text)."""
        refuse_pre_split(self, pre_split)
        template = self.config.template
        if template is None:
            return {"prompt": line}
        try:
            return {"prompt": template.prompt.format_map({"text": line})}
        except (KeyError, IndexError) as error:
            raise ConfigError(
                f"task.template.prompt of task {self.config.name!r} uses the field {error}, and predict fills only "
                "{text}, from each input line. Predict with a run whose prompt template uses {text} alone."
            ) from error

    def predict(
        self, model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, examples: list[dict], layout: InputLayout
    ) -> list[str]:
        """Greedy completions, generated as evaluation generates them. A prompt keeps at most
        `task.max_length` - 1 tokens (its end, and a BOS it starts with): training never showed
        the model a longer one, nor one without room for an answer."""
        self._adopt(tokenizer)
        prompts = []
        for ids in self._prompt_ids([example["prompt"] for example in examples], layout.demonstrations):
            keep_first = 1 if ids[:1] == [tokenizer.bos_token_id] else 0
            prompts.append(encode_pair(ids, [], self.config.max_length - 1, keep_first)["input_ids"])
        generated = generate_completions(model, prompts, self.generation_config(), self.config.generation_batch_tokens)
        return tokenizer.batch_decode(generated, skip_special_tokens=True)

    def _adopt(self, tokenizer: PreTrainedTokenizerBase) -> None:
        """Check the backbone's tokenizer can frame a completion, give it a pad token, keep it."""
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

    def collator(self, tokenizer: PreTrainedTokenizerBase, layout: InputLayout = PLAIN_INPUT) -> CompletionCollator:
        return CompletionCollator(tokenizer.pad_token_id)

    def evaluate(self, trainer: Trainer, dataset: Any, split: str) -> dict[str, float]:
        """Teacher-forced loss, then greedy generation on the split's prompts and the scores.
        `{split}_runtime` covers both, as the run's eval_seconds should. The loss is the one
        `trainer.evaluate` would report (its batches, each the mean over its completion tokens)."""
        started = time.perf_counter()
        prompts = [list(ids[:length]) for ids, length in zip(dataset["input_ids"], dataset["prompt_length"])]
        loss, generated = self._loss_and_completions(trainer, dataset, prompts)
        predictions = self.tokenizer.batch_decode(generated, skip_special_tokens=True)
        references = list(dataset["reference"])
        scores = self.score(predictions, references)
        log.info("%s, first example: %r -> %r (reference %r)", split, self.tokenizer.decode(prompts[0]), predictions[0], references[0])
        metrics = {f"{split}_loss": loss, **{f"{split}_{name}": value for name, value in scores.items()}}
        metrics[f"{split}_runtime"] = time.perf_counter() - started
        metrics[f"{split}_samples_per_second"] = len(dataset) / metrics[f"{split}_runtime"]
        return metrics

    def _loss_and_completions(self, trainer: Trainer, dataset: Any, prompts: list[list[int]]) -> tuple[float, list[list[int]]]:
        """A model that continues from a cache runs each prompt once for the loss and the
        completion (`complete_and_score`); a prompt method runs it twice: the loss in slices,
        then `generate`."""
        model, batch_size, generation = trainer.model, trainer.args.eval_batch_size, self.generation_config()
        if continues_from_cache(model):
            targets = [list(labels[length:]) for labels, length in zip(dataset["labels"], dataset["prompt_length"])]
            generated, sums = complete_and_score(
                model, prompts, targets, generation, self.config.generation_batch_tokens, self.config.loss_batch_tokens
            )
            return batch_weighted_loss(sums, [len(target) for target in targets], batch_size), generated
        examples = [{"input_ids": ids, "labels": labels} for ids, labels in zip(dataset["input_ids"], dataset["labels"])]
        loss = teacher_forced_loss(model, examples, trainer.data_collator, batch_size, self.config.loss_batch_tokens)
        return loss, generate_completions(model, prompts, generation, self.config.generation_batch_tokens)

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
                f"the {split!r} split of {self.data_source()} has rows with fields {sorted(rows[0])}, not prompt and "
                "completion. Map the file's columns with task.data.columns={prompt: COLUMN, completion: COLUMN}, "
                "or set task.template to build them (as conf/task/banking77_gen.yaml does)."
            )
        return [{"prompt": str(row["prompt"]), "completion": str(row["completion"])} for row in rows]

    def _tokenize_split(self, rows: list[dict], demonstrations: Demonstrations) -> tuple[list[list[int]], ...]:
        """Token ids of each row's prompt (after the demonstrations) and of its completion."""
        prompt_ids = self._prompt_ids([row["prompt"] for row in rows], demonstrations)
        completion_ids = self.tokenizer([row["completion"] for row in rows], add_special_tokens=False)["input_ids"]
        return prompt_ids, completion_ids

    def _encode_split(
        self, split: str, rows: list[dict], prompt_ids: list[list[int]], completion_ids: list[list[int]]
    ) -> list[dict]:
        tokenizer = self.tokenizer
        encoded = []
        for index, (row, prompt, completion) in enumerate(zip(rows, prompt_ids, completion_ids)):
            keep_first = 1 if prompt[:1] == [tokenizer.bos_token_id] else 0
            try:
                pair = encode_pair(prompt, completion + [tokenizer.eos_token_id], self.config.max_length, keep_first)
            except CompletionTooLong as error:
                raise DataError(
                    f"example {index} of the {split!r} split of {self.data_source()}: its completion takes {error} tokens "
                    f"with EOS, which leaves no room for the prompt in task.max_length={self.config.max_length}. "
                    "Raise task.max_length or shorten the completion; peftlab never truncates a completion."
                ) from None
            encoded.append({**pair, "reference": row["completion"]})
        return encoded

    def _prompt_ids(self, prompts: list[str], demonstrations: Demonstrations = ()) -> list[list[int]]:
        """Token ids of the prompts as the model sees them; the chat template brings its own BOS."""
        texts = [self._prompt_text(prompt, demonstrations) for prompt in prompts]
        return self.tokenizer(texts, add_special_tokens=not self.config.chat_template)["input_ids"]

    def _prompt_text(self, prompt: str, demonstrations: Demonstrations = ()) -> str:
        """The prompt as the model sees it, in training and in generation alike. Demonstrations
        come first, each written as a training pair is (prompt, separator, completion, EOS; then
        a line break), so that they also show where an answer ends; in the chat template, as
        earlier user and assistant turns."""
        if not self.config.chat_template:
            shown = "".join(f"{p}{self.config.separator}{c}{self.tokenizer.eos_token}\n" for p, c in demonstrations)
            return shown + prompt + self.config.separator
        turns = [[{"role": "user", "content": p}, {"role": "assistant", "content": c}] for p, c in demonstrations]
        messages = [message for turn in turns for message in turn] + [{"role": "user", "content": prompt}]
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def _require_room_for_demonstrations(self, tokenized: dict[str, tuple[list, list]], shots: int) -> None:
        """Refuse prompts that would lose the start of their demonstrations to `task.max_length`,
        naming the longest example of all splits: every example is shown all of them, or the run
        does not start."""
        needed = {
            (split, index): (len(prompt), len(prompt) + len(completion) + 1)
            for split, (prompt_ids, completion_ids) in tokenized.items()
            for index, (prompt, completion) in enumerate(zip(prompt_ids, completion_ids))
        }
        (split, index), (prompt, total) = max(needed.items(), key=lambda item: item[1][1])
        if total > self.config.max_length:
            raise ConfigError(
                f"with {shots} demonstrations (method.shots), example {index} of the {split!r} split, the longest, "
                f"takes {prompt} prompt tokens and {total - prompt} for its completion and EOS: {total} tokens, "
                f"more than task.max_length={self.config.max_length}, and demonstrations are never cut. Raise "
                f"task.max_length to at least {total}, or lower method.shots."
            )

    def _check_config(self) -> None:
        """Refuse what would fail after training, before anything loads. Names, types and ranges
        of the keys are the schema's (peftlab/config.py, GenerationTask)."""
        task = self.config
        available = ["exact_match"] + (["rouge_l"] if task.rouge else [])
        if task.primary_metric not in available:
            raise ConfigError(
                f"task.primary_metric={str(task.primary_metric)!r} is not computed by task {task.name!r}; "
                f"it computes {available} (rouge_l needs task.rouge=true)."
            )
        if task.rouge and importlib.util.find_spec("rouge_score") is None:
            raise ConfigError("task.rouge=true needs the rouge-score package: pip install 'peftlab[gen]'.")
