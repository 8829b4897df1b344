"""Generation with a decoder on the tiny Llama: how pairs are built and encoded (loss on the
completion only), how batches are padded, how completions are generated and scored, and what
a run reports. Scores are checked against values worked out by hand on outputs we control."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, GPT2Config, GPT2LMHeadModel

import peftlab.tasks.generation
from peftlab.errors import ConfigError, DataError
from peftlab.run import execute, make_trainer, prepare
from peftlab.tasks.generation import (
    IGNORED,
    CompletionTooLong,
    Generation,
    batch_weighted_loss,
    complete_and_score,
    continues_from_cache,
    encode_pair,
    exact_match,
    generate_completions,
    length_batches,
    rouge_l,
    teacher_forced_loss,
    to_prompt_completion,
)
from tests.conftest import GEN_WORDS, TINY_DECODER, compose_config, tiny_word_tokenizer

BANKING_TEMPLATE = OmegaConf.create(
    {"prompt": "Classify the banking query into one of the intents.\nQuery: {text}\nIntent:", "completion": " {label}"}
)


@pytest.fixture(scope="session")
def echo_decoder(tiny_decoder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Llama made predictable: every embedding row gets norm 100, which dwarfs what the
    layers add to the residual stream (their inputs are normalised, their weights small), so the
    last hidden state points along the last token's embedding; with tied embeddings of equal
    norm, the most likely next token is then that token again (Cauchy-Schwarz). Greedy
    generation repeats the prompt's last word. No weight is zero, so DoRA's norms stay finite."""
    model = AutoModelForCausalLM.from_pretrained(tiny_decoder)
    with torch.no_grad():
        embeddings = model.model.embed_tokens.weight
        embeddings.mul_(100 / embeddings.norm(dim=1, keepdim=True))
    folder = tmp_path_factory.mktemp("echo_llama")
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_decoder).save_pretrained(folder)
    return folder


# --- pairs from classification rows ---------------------------------------------------------


def test_a_template_turns_a_classification_row_into_a_prompt_and_its_label_word():
    pair = to_prompt_completion({"text": "Where is my card?", "label": "card_arrival"}, BANKING_TEMPLATE, {})
    assert pair == {
        "prompt": "Classify the banking query into one of the intents.\nQuery: Where is my card?\nIntent:",
        "completion": " card_arrival",
    }


def test_integer_labels_become_their_words_and_braces_in_the_data_are_kept():
    template = OmegaConf.create({"prompt": "Review: {text}\nSentiment:", "completion": " {label}"})
    words = {"0": "negative", "1": "positive"}
    assert to_prompt_completion({"text": "a {great} film", "label": "1"}, template, words) == {
        "prompt": "Review: a {great} film\nSentiment:", "completion": " positive",
    }
    assert to_prompt_completion({"text": "dull", "label": 0}, template, words)["completion"] == " negative"


def test_a_template_field_the_rows_lack_is_refused_with_the_fields_they_have():
    template = OmegaConf.create({"prompt": "{sentence}", "completion": " {label}"})
    with pytest.raises(ConfigError, match=r"task.template.*\['label', 'text'\]"):
        to_prompt_completion({"text": "hi", "label": "x"}, template, {})


# --- encoding and loss masking --------------------------------------------------------------


def test_prompt_tokens_carry_minus_100_and_the_completion_and_eos_their_ids():
    pair = encode_pair([5, 6, 7], [8, 9, 1], max_length=16)
    assert pair == {"input_ids": [5, 6, 7, 8, 9, 1], "labels": [IGNORED] * 3 + [8, 9, 1], "prompt_length": 3}


def test_a_long_pair_loses_the_start_of_its_prompt_never_the_completion_nor_the_bos():
    pair = encode_pair([0, 11, 12, 13, 14], [8, 9, 1], max_length=6, keep_first=1)
    assert pair["input_ids"] == [0, 13, 14, 8, 9, 1]
    assert pair["labels"] == [IGNORED] * 3 + [8, 9, 1]
    with pytest.raises(CompletionTooLong):
        encode_pair([11, 12], [8, 9, 1], max_length=3)


def test_encoded_splits_mask_the_prompt_and_the_collator_masks_the_padding(tiny_gen_config):
    prepared = prepare(tiny_gen_config("method=lora"))
    tokenizer = prepared.tokenizer
    assert tokenizer.pad_token_id == tokenizer.eos_token_id  # the tiny tokenizer has no pad token
    first, second = prepared.encoded["train"][0], prepared.encoded["train"][8]
    prompt = tokenizer("review : a good film\n")["input_ids"]
    positive = tokenizer.convert_tokens_to_ids("positive")
    assert first["input_ids"] == prompt + [positive, tokenizer.eos_token_id]
    assert first["labels"] == [IGNORED] * len(prompt) + [positive, tokenizer.eos_token_id]
    assert first["reference"] == "positive" and first["prompt_length"] == len(prompt)

    batch = prepared.task.collator(tokenizer)([first, second])  # "review : good city" is one word shorter
    assert batch["input_ids"].shape == batch["labels"].shape == (2, len(first["input_ids"]))
    assert batch["attention_mask"][1].tolist() == [1] * len(second["input_ids"]) + [0]
    assert batch["labels"][1].tolist() == second["labels"] + [IGNORED]
    assert batch["labels"][1, len(second["input_ids"]) - 1] == tokenizer.eos_token_id  # EOS = pad, still learned


def test_a_completion_that_fills_max_length_is_refused_with_the_example(tiny_gen_config):
    with pytest.raises(DataError, match=r"example 0 of the 'train' split.*task.max_length=2"):
        prepare(tiny_gen_config("method=lora", "task.max_length=2"))


def test_the_chat_template_wraps_the_prompt_in_training_and_generation_alike():
    chat = "{% for message in messages %}<user> {{ message['content'] }}{% endfor %} :"
    task = Generation(compose_config(["task=jsonl_gen", "task.chat_template=true"]).task)
    tokenizer = tiny_word_tokenizer(GEN_WORDS, chat_template=chat)
    encoded = task.encode({"train": [{"prompt": "a good film", "completion": "positive"}]}, tokenizer)["train"][0]
    words = tokenizer.convert_ids_to_tokens(encoded["input_ids"])
    assert words == ["<user>", "a", "good", "film", ":", "positive", "</s>"]
    assert encoded["prompt_length"] == 5

    without = Generation(compose_config(["task=jsonl_gen", "task.chat_template=true"]).task)
    with pytest.raises(ConfigError, match="task.chat_template=true"):
        without.encode({"train": []}, tiny_word_tokenizer(GEN_WORDS))


# --- configuration and data errors ----------------------------------------------------------


def test_a_primary_metric_the_task_does_not_compute_is_refused_at_once():
    """The keys' types and ranges are the schema's (tests/test_config.py); this rule spans two keys."""
    with pytest.raises(ConfigError, match=r"task.primary_metric='rouge_l'.*task.rouge=true"):
        Generation(compose_config(["task=jsonl_gen", "task.rouge=false"]).task)


def test_every_normalisation_the_schema_offers_is_one_exact_match_applies():
    from peftlab.config import Normalizer
    from peftlab.tasks.generation import NORMALIZERS

    assert set(NORMALIZERS) == {step.value for step in Normalizer}


def test_classification_rows_without_a_template_are_refused_with_the_fix(tiny_gen_config, monkeypatch):
    cfg = tiny_gen_config("method=lora")
    rows = [{"text": "good", "label": "1"}]
    monkeypatch.setattr(peftlab.tasks, "load_splits", lambda data: {"train": rows, "validation": rows})
    with pytest.raises(DataError, match=r"\['label', 'text'\], not prompt and completion.*task.template"):
        prepare(cfg)


def test_a_missing_validation_split_is_carved_from_train_and_noted(tiny_gen_config, monkeypatch):
    cfg = tiny_gen_config("method=lora")
    rows = [{"prompt": f"p{i}", "completion": f"c{i}"} for i in range(20)]
    monkeypatch.setattr(peftlab.tasks, "load_splits", lambda data: {"train": rows})
    task = Generation(cfg.task)
    splits = task.prepare_data()
    assert len(splits["validation"]) == 2 and len(splits["train"]) == 18 and "test" not in splits
    assert not {r["prompt"] for r in splits["validation"]} & {r["prompt"] for r in splits["train"]}
    assert "no validation split" in task.notes[0]


def test_classification_configs_compose_and_build_label_word_pairs(monkeypatch):
    rows = [{"text": "i loved it", "label": "1"}, {"text": "dull", "label": "0"}]
    monkeypatch.setattr(peftlab.tasks, "load_splits", lambda data: {"train": rows, "validation": rows})
    task = Generation(compose_config(["task=sst2_gen"]).task)
    pairs = task.prepare_data()["train"]
    assert [pair["completion"] for pair in pairs] == [" positive", " negative"]
    assert pairs[1]["prompt"].endswith("Review: dull\nSentiment:")
    banking = compose_config(["task=banking77_gen"]).task
    assert banking.data.format == "csv" and dict(banking.data.columns) == {"text": "text", "label": "category"}
    assert banking.primary_metric == "exact_match" and not banking.rouge


# --- scoring and generation -----------------------------------------------------------------


def test_exact_match_normalises_both_sides():
    predictions = [" Card_Arrival ", "card arrival", "exchange_rate", "top  up"]
    references = ["card_arrival", "card_arrival", "exchange_rate", "top up"]
    assert exact_match(predictions, references, ["strip", "casefold"]) == 0.5
    assert exact_match(predictions, references, ["strip", "casefold", "squash_spaces"]) == 0.75
    assert exact_match(predictions, references, []) == 0.25


def test_rouge_l_is_the_mean_lcs_f1():
    # LCS 2 of 3 predicted and 4 reference words: P 2/3, R 1/2, F 4/7; identical: 1; disjoint: 0
    predictions = ["the cat sat", "a b", "x"]
    references = ["the big cat ran", "a b", "y"]
    assert rouge_l(predictions, references) == pytest.approx((4 / 7 + 1 + 0) / 3)


def test_greedy_generation_pads_on_the_left_and_stops_at_eos(echo_decoder):
    model = AutoModelForCausalLM.from_pretrained(echo_decoder)
    tokenizer = AutoTokenizer.from_pretrained(echo_decoder)
    ids = tokenizer.convert_tokens_to_ids
    prompts = [ids(["review", ":", "film"]), ids(["dog"]), ids(["cat", "</s>"])]
    generation = GenerationConfig(max_new_tokens=3, do_sample=False, pad_token_id=0, eos_token_id=tokenizer.eos_token_id)
    scored = []
    hook = model.get_output_embeddings().register_forward_hook(lambda module, inputs, output: scored.append(inputs[0].shape[0]))
    completions = generate_completions(model, prompts, generation, max_tokens=4)  # [dog] and [cat </s>] together
    hook.remove()
    assert completions == [ids(["film"] * 3), ids(["dog"] * 3), []]
    assert scored == [2, 1, 1, 1, 1, 1]  # [cat </s>] ends at once and leaves its batch: [dog] goes on alone


def tiny_gpt2(vocab_size: int) -> GPT2LMHeadModel:
    """A 2-layer, 32-wide GPT-2: learned absolute positions, so a left-padded prompt that kept
    the pads' positions would change its answer."""
    torch.manual_seed(7)
    config = GPT2Config(vocab_size=vocab_size, n_positions=64, n_embd=32, n_layer=2, n_head=4, initializer_range=0.2)
    return GPT2LMHeadModel(config)


def test_length_batches_sort_and_cut_by_padded_tokens_a_long_one_alone():
    lengths = [3, 9, 1, 6, 9, 2, 5, 12, 4, 7]
    assert length_batches(lengths, max_tokens=16) == [[2, 5, 0, 8], [6, 3], [9], [1], [4], [7]]
    assert length_batches(lengths, max_tokens=1) == [[i] for i in sorted(range(10), key=lengths.__getitem__)]


@pytest.mark.parametrize("architecture", ["llama", "gpt2"])
def test_batched_greedy_completions_equal_one_prompt_at_a_time_in_the_order_given(architecture, tiny_decoder):
    model = AutoModelForCausalLM.from_pretrained(tiny_decoder) if architecture == "llama" else tiny_gpt2(len(GEN_WORDS) + 2)
    model.train()  # as after training: generation must switch dropout off, and back on after
    lengths = [3, 9, 1, 6, 9, 2, 5, 12, 4, 7]  # unsorted, with a tie
    generator = torch.Generator().manual_seed(0)
    prompts = [torch.randint(2, len(GEN_WORDS) + 2, (length,), generator=generator).tolist() for length in lengths]
    generation = GenerationConfig(max_new_tokens=6, do_sample=False, pad_token_id=0, eos_token_id=1)

    alone = [generate_completions(model, [prompt], generation, max_tokens=1)[0] for prompt in prompts]
    assert len({tuple(completion) for completion in alone}) > 3, alone  # the prompts get different answers

    scored, embedded = [], []
    hook = model.get_output_embeddings().register_forward_hook(lambda module, inputs, output: scored.append(inputs[0].shape))
    embedding = model.get_input_embeddings().register_forward_hook(lambda module, inputs, output: embedded.append(inputs[0].shape))
    assert generate_completions(model, prompts, generation, max_tokens=16) == alone
    hook.remove()
    embedding.remove()
    assert {shape[1] for shape in scored} == {1}  # KV cache, and the LM head on the last position only
    prefills = [tuple(shape) for shape in embedded if shape[1] > 1]
    assert prefills == [(4, 4), (2, 6), (1, 7), (1, 9), (1, 9), (1, 12)]  # length_batches(lengths, 16), left-padded
    descending = sorted(range(len(prompts)), key=lambda i: len(prompts[i]), reverse=True)
    assert generate_completions(model, [prompts[i] for i in descending], generation, max_tokens=16) == [alone[i] for i in descending]
    assert model.training


def generated_alone(model: torch.nn.Module, prompt: list[int], generation: GenerationConfig) -> list[int]:
    """The straightforward path: `generate` on one unpadded prompt, cut at its first EOS."""
    model.eval()
    with torch.no_grad():
        row = model.generate(input_ids=torch.tensor([prompt]), generation_config=generation)[0, len(prompt) :].tolist()
    return row[: row.index(generation.eos_token_id)] if generation.eos_token_id in row else row


def reference_loss_alone(model: torch.nn.Module, prompt: list[int], reference: list[int]) -> float:
    """The straightforward path: one forward of prompt + reference, cross-entropy summed over the reference."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt + reference])).logits[0, len(prompt) - 1 : -1]
    return torch.nn.functional.cross_entropy(logits, torch.tensor(reference), reduction="sum").item()


@pytest.mark.parametrize("architecture", ["llama", "gpt2"])
@pytest.mark.parametrize("max_tokens", [1, 16, 1000])  # a prompt a batch; a few; all in one batch
def test_one_prefill_scores_the_references_and_completes_as_generate_does_alone(architecture, max_tokens, tiny_decoder):
    """The reference continues the prompt's cache and the cache is cropped back before decoding:
    a crop that kept a reference token, a position shifted by the left padding, or a row dropped
    at its EOS taking another row's cache would change an answer or a loss."""
    model = AutoModelForCausalLM.from_pretrained(tiny_decoder) if architecture == "llama" else tiny_gpt2(len(GEN_WORDS) + 2)
    model.train()
    lengths = [3, 9, 1, 6, 9, 2, 5, 12, 4, 7, 3, 3]  # unsorted, with ties
    generator = torch.Generator().manual_seed(1)
    prompts = [torch.randint(2, len(GEN_WORDS) + 2, (length,), generator=generator).tolist() for length in lengths]
    generation = GenerationConfig(max_new_tokens=6, do_sample=False, pad_token_id=0, eos_token_id=1)
    # a random model seldom says its EOS: make EOS the word it says most after the first, so rows end at different steps
    said = [token for prompt in prompts for token in generated_alone(model, prompt, generation)[1:]]
    generation.eos_token_id = max(set(said), key=said.count)
    references = [torch.randint(2, len(GEN_WORDS) + 2, (i % 4,), generator=generator).tolist() + [generation.eos_token_id] for i in range(12)]

    alone = [generated_alone(model, prompt, generation) for prompt in prompts]
    assert len({len(completion) for completion in alone}) > 2, alone
    losses_alone = [reference_loss_alone(model, prompt, reference) for prompt, reference in zip(prompts, references)]
    model.train()

    completions, losses = complete_and_score(model, prompts, references, generation, max_tokens, loss_tokens=8)
    assert completions == alone
    assert losses == pytest.approx(losses_alone, rel=1e-5)
    assert model.training


def test_the_batch_weighted_loss_is_trainers_batch_means_weighted_by_size():
    sums, counts = [2.0, 4.0, 3.0, 1.0, 6.0], [1, 3, 2, 2, 3]
    # batches of 2: (2 + 4) / 4 = 1.5 and (3 + 1) / 4 = 1 (two examples each), 6 / 3 = 2 (one)
    assert batch_weighted_loss(sums, counts, batch_size=2) == pytest.approx((1.5 * 2 + 1 * 2 + 2 * 1) / 5)
    assert batch_weighted_loss(sums, counts, batch_size=5) == pytest.approx(16 / 11)


VARIED_ROWS = [  # prompts of 1 to 7 words, completions of 1 to 4: slices and batches of uneven target counts
    {"prompt": "review : a good film", "completion": "positive"},
    {"prompt": "bad", "completion": "negative negative"},
    {"prompt": "review : the great play of the team", "completion": "positive"},
    {"prompt": "the awful river", "completion": "negative film bad awful"},
    {"prompt": "good city", "completion": "positive game"},
    {"prompt": "review : a bad report", "completion": "negative"},
    {"prompt": "the great festival", "completion": "positive positive positive"},
    {"prompt": "review : awful game", "completion": "negative"},
    {"prompt": "a good", "completion": "positive city"},
    {"prompt": "review : the bad film of the city", "completion": "negative"},
    {"prompt": "great", "completion": "positive"},
]


@pytest.mark.parametrize("method", ["lora", "prompt_tuning", "prefix_tuning"])
def test_the_sliced_loss_equals_trainer_evaluate_and_never_scores_a_whole_batch(method, tiny_gen_config, monkeypatch, tmp_path):
    """Batches of 4 in dataset order (the last one of 3), cut into slices of at most 16 padded
    tokens: the loss must still be Trainer's per-batch means weighted by batch size, and the LM
    head must see only each slice's last positions, never a batch."""
    monkeypatch.setattr(peftlab.tasks, "load_splits", lambda data: {"train": VARIED_ROWS, "validation": VARIED_ROWS})
    cfg = tiny_gen_config(f"method={method}", "trainer.eval_batch_size=4")
    prepared = prepare(cfg)
    trainer = make_trainer(cfg, prepared, tmp_path)
    trainer.train()  # so that the method's weights count
    dataset = prepared.encoded["validation"]
    expected = trainer.evaluate(dataset)["eval_loss"]

    scored = []
    head = prepared.model.get_output_embeddings()
    hook = head.register_forward_hook(lambda module, inputs, output: scored.append(tuple(inputs[0].shape[:2])))
    examples = [{"input_ids": ids, "labels": labels} for ids, labels in zip(dataset["input_ids"], dataset["labels"])]
    prepared.model.train()  # Trainer.evaluate left it in eval mode; the loss must switch LoRA's dropout off itself
    loss = teacher_forced_loss(prepared.model, examples, trainer.data_collator, batch_size=4, max_tokens=16)
    hook.remove()

    assert loss == pytest.approx(expected, abs=1e-5)
    assert prepared.model.training  # and switch it back
    lengths = [len(ids) for ids in dataset["input_ids"]]
    scored_by_trainer = sum(max(lengths[i : i + 4]) * len(lengths[i : i + 4]) for i in range(0, len(lengths), 4))
    assert len(scored) == 7 and all(rows * positions <= 16 for rows, positions in scored)  # slices of length_batches
    assert sum(rows * positions for rows, positions in scored) < 0.6 * scored_by_trainer


@pytest.mark.parametrize("method", ["lora", "prompt_tuning", "prefix_tuning"])
def test_evaluation_reports_trainers_loss_and_the_completions_generate_makes(method, tiny_gen_config, monkeypatch, tmp_path):
    """LoRA runs each prompt once for loss and completion (`complete_and_score`), and each
    completion is what `generate` makes alone. Prompt and prefix tuning cannot continue a cache
    through peft's forward and keep the two-pass way (the loss in slices, then `generate` in
    left-padded batches, whose answers can differ from one prompt alone here). The loss is
    Trainer's either way."""
    monkeypatch.setattr(peftlab.tasks, "load_splits", lambda data: {"train": VARIED_ROWS, "validation": VARIED_ROWS})
    cfg = tiny_gen_config(
        f"method={method}", "trainer.eval_batch_size=4", "task.loss_batch_tokens=8", "task.generation_batch_tokens=16",
        "task.max_new_tokens=4",
    )
    prepared = prepare(cfg)
    trainer = make_trainer(cfg, prepared, tmp_path)
    trainer.train()
    dataset = prepared.encoded["validation"]
    expected_loss = trainer.evaluate(dataset)["eval_loss"]
    generation = prepared.task.generation_config()
    prompts = [ids[:length] for ids, length in zip(dataset["input_ids"], dataset["prompt_length"])]

    loss, completions = prepared.task._loss_and_completions(trainer, dataset, prompts)
    assert continues_from_cache(prepared.model) == (method == "lora")
    assert loss == pytest.approx(expected_loss, abs=1e-5)
    if method == "lora":
        assert completions == [generated_alone(prepared.model, prompt, generation) for prompt in prompts]
    else:
        assert completions == generate_completions(prepared.model, prompts, generation, cfg.task.generation_batch_tokens)


ECHO_ROWS = [  # the echo model answers each prompt's last word, twice (max_new_tokens=2)
    {"prompt": "review : a good film", "completion": "film film"},  # exact; ROUGE-L 1
    {"prompt": "review : a bad game", "completion": "game"},  # not exact; P 1/2, R 1, F 2/3
    {"prompt": "review : the great play", "completion": "positive"},  # wrong; 0
    {"prompt": "review : good city", "completion": "  City City "},  # exact after strip + casefold; 1
]


@pytest.mark.parametrize("method", ["lora", "dora", "ia3", "prompt_tuning", "prefix_tuning", "full"])
def test_evaluation_generates_through_the_method_and_scores_by_hand(method, echo_decoder, tiny_gen_config, monkeypatch, tmp_path):
    """No method changes the echo model's answers before training (LoRA and DoRA start at
    zero, (IA)^3 at one; virtual tokens and prefixes reach the last position only through the
    layers' small outputs), so the scores are known by hand."""
    cfg = tiny_gen_config(f"method={method}", f"backbone.pretrained={echo_decoder}")
    splits = {"train": ECHO_ROWS, "validation": ECHO_ROWS}
    monkeypatch.setattr(peftlab.tasks, "load_splits", lambda data: splits)
    prepared = prepare(cfg)
    trainer = make_trainer(cfg, prepared, tmp_path)
    metrics = prepared.task.evaluate(trainer, prepared.encoded["validation"], "validation")
    assert metrics["validation_exact_match"] == 0.5
    assert metrics["validation_rouge_l"] == pytest.approx((1 + 2 / 3 + 0 + 1) / 4)
    assert metrics["validation_loss"] > 0
    assert metrics["validation_runtime"] > 0


def test_max_eval_samples_bounds_what_is_generated(tiny_gen_config):
    prepared = prepare(tiny_gen_config("method=lora", "task.max_eval_samples=3"))
    assert len(prepared.encoded["validation"]) == len(prepared.encoded["test"]) == 3
    assert len(prepared.encoded["train"]) == 16


# --- a whole run ----------------------------------------------------------------------------


def test_a_run_learns_the_pairs_and_reports_generation_metrics(tiny_gen_config, tmp_path):
    cfg = tiny_gen_config("method=lora", "trainer.max_steps=20", "trainer.batch_size=8", "trainer.lr=2e-2")
    execute(cfg, tmp_path)
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["status"] == "ok" and result["task"] == "jsonl_gen" and result["primary_metric"] == "rouge_l"
    params = result["params"]
    assert params["head"] == 0 and params["trainable"] == params["method"] > 0
    for split in ("validation", "test"):
        assert set(result["metrics"][split]) == {"loss", "exact_match", "rouge_l"}
    assert result["metrics"]["test"]["exact_match"] >= 0.75, result["metrics"]
    losses = [point["train_loss"] for point in result["history"] if "train_loss" in point]
    assert losses[-1] < losses[0] * 0.5, losses
    assert (Path(result["checkpoint"]["path"]) / "adapter_model.safetensors").exists()
    assert json.loads((Path(result["checkpoint"]["path"]) / "adapter_config.json").read_text())["modules_to_save"] is None
