"""Forgetting of a decoder (`forgetting.texts`, peftlab/forgetting.py): the held-out LM loss is
the token-weighted cross-entropy a hand computation gives, "before" is the base model's loss
whatever the method put in front of it, nothing trained changes nothing, full fine-tuning moves
it, bad input is refused naming the key, and the report shows it without pooling held-out files."""

from __future__ import annotations

import csv
import hashlib
import json
import math
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from peftlab.errors import ConfigError, DataError
from peftlab.forgetting import language_model_loss
from peftlab.report import build_report, read_runs, write_report
from peftlab.run import execute, prepare
from tests.helpers import result, write_runs

HELD_OUT = [  # words of the tiny tokenizer, none of them a training pair
    "the cat and the dog",
    "a dog",
    "cat cat dog good bad great awful film play game",
    "",  # blank lines are skipped
    "the report : a great river",
]
FORGETTING_KEYS = ["texts", "sha256", "texts_used", "tokens", "lm_loss_before", "lm_loss_after", "lm_loss_change"]


@pytest.fixture
def held_out_file(tmp_path: Path) -> Path:
    path = tmp_path / "held_out.txt"
    path.write_text("\n".join(HELD_OUT) + "\n", encoding="utf-8")
    return path


def loss_by_hand(model: torch.nn.Module, sequences: list[list[int]]) -> tuple[float, int]:
    """Each sequence alone, unpadded: -log p(next token) summed over every sequence, and the count."""
    nats, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for ids in sequences:
            log_probs = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].double(), dim=-1)
            nats -= sum(log_probs[position, token].item() for position, token in enumerate(ids[1:]))
            count += len(ids) - 1
    return nats, count


def base_loss(decoder: Path, texts: list[str], max_length: int = 128) -> float:
    """The pretrained tiny model's held-out loss, from a fresh copy, without peftlab's run."""
    tokenizer = AutoTokenizer.from_pretrained(decoder)
    ids = tokenizer([text for text in texts if text], truncation=True, max_length=max_length)["input_ids"]
    return language_model_loss(AutoModelForCausalLM.from_pretrained(decoder), ids, batch_size=3).mean


def run_result(config, run_dir: Path, *overrides: str) -> dict:
    execute(config(*overrides), run_dir)
    return json.loads((run_dir / "result.json").read_text())


# --- the loss ------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [1, 2, 5])
def test_the_loss_is_every_predicted_tokens_cross_entropy_token_weighted_padding_excluded(tiny_decoder, batch_size):
    model = AutoModelForCausalLM.from_pretrained(tiny_decoder)
    sequences = [[3, 4, 5, 6, 7, 8, 9, 10], [5, 6], [7, 3, 4], [9, 9, 9, 9, 2]]
    nats, count = loss_by_hand(model, sequences)
    measured = language_model_loss(model, sequences, batch_size)
    assert measured.tokens == count == 7 + 1 + 2 + 4
    assert measured.nats == pytest.approx(nats, rel=1e-5)
    assert measured.mean == pytest.approx(nats / count, rel=1e-5)
    per_text_means = [loss_by_hand(model, [ids]) for ids in sequences]
    assert measured.mean != pytest.approx(sum(n / c for n, c in per_text_means) / len(sequences), rel=1e-3)


def test_a_text_of_one_token_predicts_nothing_and_adds_nothing(tiny_decoder):
    model = AutoModelForCausalLM.from_pretrained(tiny_decoder)
    alone = language_model_loss(model, [[3, 4, 5]], batch_size=2)
    beside = language_model_loss(model, [[3, 4, 5], [7]], batch_size=2)
    assert beside.tokens == alone.tokens == 2 and beside.nats == pytest.approx(alone.nats, rel=1e-5)
    assert language_model_loss(model, [[7], [8]], batch_size=2).tokens == 0


# --- runs ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["lora", "prompt_tuning"])
def test_a_peft_run_records_the_measure_and_before_is_the_base_models_loss(
    method, tiny_gen_config, tiny_decoder, held_out_file, tmp_path
):
    written = run_result(
        tiny_gen_config, tmp_path / "run", f"method={method}", f"forgetting.texts={held_out_file}",
        "forgetting.batch_size=2", "forgetting.max_texts=3",
    )
    forgetting = written["forgetting"]
    assert list(forgetting) == FORGETTING_KEYS
    assert forgetting["texts"] == "held_out.txt"
    assert forgetting["sha256"] == hashlib.sha256(held_out_file.read_bytes()).hexdigest()
    used = HELD_OUT[:2] + HELD_OUT[2:3]  # the first three non-blank texts
    assert forgetting["texts_used"] == 3 and forgetting["tokens"] == sum(len(text.split()) - 1 for text in used)
    # prompt tuning's virtual tokens are there before training: "before" switches them off
    assert forgetting["lm_loss_before"] == pytest.approx(base_loss(tiny_decoder, used), rel=1e-6)
    assert forgetting["lm_loss_change"] == forgetting["lm_loss_after"] - forgetting["lm_loss_before"]
    assert forgetting["lm_loss_after"] != pytest.approx(forgetting["lm_loss_before"], rel=1e-6)


def test_full_fine_tuning_moves_the_held_out_loss(tiny_gen_config, tiny_decoder, held_out_file, tmp_path):
    forgetting = run_result(
        tiny_gen_config, tmp_path / "run", "method=full", f"forgetting.texts={held_out_file}", "forgetting.max_length=3",
    )["forgetting"]
    cut = [" ".join(text.split()[:3]) for text in HELD_OUT]  # forgetting.max_length=3 keeps each text's start
    assert forgetting["tokens"] == sum(min(len(text.split()), 3) - 1 for text in HELD_OUT if text)
    assert forgetting["lm_loss_before"] == pytest.approx(base_loss(tiny_decoder, cut), rel=1e-6)
    assert forgetting["lm_loss_after"] != pytest.approx(forgetting["lm_loss_before"], abs=1e-5)  # float noise: 1e-7


def test_in_context_prompting_trains_nothing_and_changes_nothing(tiny_gen_config, held_out_file, tmp_path):
    forgetting = run_result(
        tiny_gen_config, tmp_path / "run", "method=in_context", "method.shots=2", "task.max_length=64",
        f"forgetting.texts={held_out_file}",
    )["forgetting"]
    assert forgetting["lm_loss_after"] == forgetting["lm_loss_before"]
    assert forgetting["lm_loss_change"] == 0.0


def test_without_held_out_text_nothing_is_measured(tiny_gen_config, tmp_path):
    assert run_result(tiny_gen_config, tmp_path / "run", "method=lora")["forgetting"] == {}


def test_held_out_jsonl_reads_the_text_field(tiny_gen_config, tmp_path):
    path = tmp_path / "held_out.jsonl"
    path.write_text("\n".join(json.dumps({"text": text, "source": "sst2"}) for text in HELD_OUT if text) + "\n\n")
    held_out = prepare(tiny_gen_config("method=lora", f"forgetting.texts={path}")).held_out
    assert held_out.texts == [text for text in HELD_OUT if text] and held_out.name == "held_out.jsonl"


# --- bad input -----------------------------------------------------------------------------------


def write(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


BAD_FILES = {  # what is wrong -> (how the test makes it, the words that must name it and the fix)
    "a missing file": (lambda tmp: tmp / "nowhere.txt", r"forgetting.texts=.*nowhere.txt: no such file.*relative"),
    "only blank lines": (lambda tmp: write(tmp / "blank.txt", "\n  \n\n"), r"blank.txt holds no text.*one text a line"),
    "a jsonl line without text": (
        lambda tmp: write(tmp / "rows.jsonl", '{"text": "a dog"}\n{"sentence": "a cat"}\n'),
        r"rows.jsonl:2: forgetting.texts reads a \"text\" string.*\{\"text\": \"...\"\}",
    ),
    "a jsonl line that is no JSON": (
        lambda tmp: write(tmp / "rows.jsonl", '{"text": "a dog"}\n{text: a cat}\n'), r"rows.jsonl:2: not valid JSON",
    ),
    "a file not in UTF-8": (
        lambda tmp: write(tmp / "latin.txt", "M\u00fcnchen".encode("latin-1")),
        r"latin.txt is not UTF-8.*save it as UTF-8",
    ),
    "another format": (lambda tmp: write(tmp / "texts.csv", "text\na dog\n"), r"texts.csv must be a .txt file .* or .jsonl file"),
}


@pytest.mark.parametrize("bad", sorted(BAD_FILES))
def test_bad_held_out_text_is_refused_naming_the_key_before_the_model_loads(bad, tiny_gen_config, tmp_path):
    make, words = BAD_FILES[bad]
    cfg = tiny_gen_config("method=lora", f"forgetting.texts={make(tmp_path)}", "backbone.pretrained=/nowhere/model")
    with pytest.raises((ConfigError, DataError), match=words):
        prepare(cfg)


def test_an_encoder_task_is_refused_naming_the_key_and_the_fix(tiny_cls_config, held_out_file):
    cfg = tiny_cls_config("method=lora", f"forgetting.texts={held_out_file}")
    with pytest.raises(ConfigError, match=r"forgetting.texts=.*task=classification.*Set forgetting.texts=null"):
        prepare(cfg)


def test_texts_that_predict_no_token_are_refused(tiny_gen_config, tmp_path):
    short = write(tmp_path / "short.txt", "dog\ncat\n")
    cfg = tiny_gen_config("method=lora", f"forgetting.texts={short}")
    with pytest.raises(DataError, match="no text has two tokens"):
        execute(cfg, tmp_path / "run")


# --- the report ----------------------------------------------------------------------------------


def measured(run: dict, change: float, texts: str = "held_out.txt", sha256: str = "a" * 64) -> dict:
    run["forgetting"] = {
        "texts": texts, "sha256": sha256, "texts_used": 200, "tokens": 4321,
        "lm_loss_before": 3.0, "lm_loss_after": 3.0 + change, "lm_loss_change": change,
    }
    run["config"]["forgetting"] = {"texts": f"outputs/{texts}", "max_texts": 200, "max_length": 128, "batch_size": 8}
    return run


def test_the_report_shows_the_change_and_the_csv_has_the_record(tmp_path):
    runs = [measured(result("full", 0, 0.80), 0.30), measured(result("full", 1, 0.82), 0.50),
            measured(result("lora", 0, 0.78), 0.05), measured(result("lora", 1, 0.79), 0.07)]
    written = write_report(write_runs(tmp_path, runs))
    markdown = written["markdown"].read_text()
    header = next(line for line in markdown.splitlines() if line.startswith("| method"))
    assert "| Δ vs full | held-out LM loss Δ |" in header
    assert "| +0.400 ± 0.141 |" in markdown and "| +0.060 ± 0.014 |" in markdown
    assert f"Before fine-tuning: 3.000 (perplexity {math.exp(3):,.1f})" in markdown
    assert "`held_out.txt` (200 texts, 4,321 predicted tokens" in markdown
    assert "held-out LM loss Δ" in written["html"].read_text()
    with written["csv"].open(newline="") as file:
        rows = list(csv.DictReader(file))
    assert [f"forgetting_{key}" for key in FORGETTING_KEYS] == [c for c in rows[0] if c.startswith("forgetting_")]
    assert sorted(float(row["forgetting_lm_loss_change"]) for row in rows) == [0.05, 0.07, 0.30, 0.50]


def test_without_the_measure_the_report_has_no_column_and_the_csv_no_columns(tmp_path):
    written = write_report(write_runs(tmp_path, [result("full", 0, 0.80), result("lora", 0, 0.78)]))
    assert "held-out LM loss" not in written["markdown"].read_text()
    assert not any("forgetting" in column for column in written["csv"].read_text().splitlines()[0].split(","))


@pytest.mark.parametrize("other", [dict(sha256="b" * 64), dict(texts="other.txt")])
def test_runs_measured_on_different_held_out_files_land_in_different_tables(tmp_path, other):
    runs = [measured(result("full", 0, 0.80), 0.3), measured(result("lora", 0, 0.78), 0.05),
            measured(result("full", 1, 0.80), 0.9, **other), measured(result("lora", 1, 0.78), 0.1, **other)]
    report = build_report(tmp_path, *read_runs(write_runs(tmp_path, runs)))
    assert len(report.groups) == 2
    assert sorted(row.lm_loss_change for group in report.groups for row in group.rows) == pytest.approx([0.05, 0.1, 0.3, 0.9])
    assert all(group.distinguishing and group.distinguishing[0][0] == "forgetting.texts" for group in report.groups)
