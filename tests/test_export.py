"""`python -m peftlab.export`: what it writes loads with plain transformers or peft, without
peftlab, names its labels, and answers what the run's evaluation scored."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from peft import AutoPeftModelForCausalLM, PeftConfig, PeftModel
from transformers import (
    AutoConfig, AutoModelForSequenceClassification, AutoModelForTokenClassification, AutoTokenizer,
)

from peftlab.export import main
from tests.trained_runs import trained  # noqa: F401  (a fixture)

ROOT = Path(__file__).resolve().parents[1]


def export(capsys, *arguments: str) -> tuple[int, str]:
    capsys.readouterr()  # what training printed is not export's
    code = main([str(argument) for argument in arguments])
    return code, capsys.readouterr().err


def plain_tags(model: torch.nn.Module, tokenizer, sentences: list[str]) -> list[list[str]]:
    """Tags by the model's own label names, read on each word's first piece, as a user of plain
    transformers would."""
    model.eval()
    tagged = []
    for sentence in sentences:
        encoded = tokenizer(sentence.split(), is_split_into_words=True, return_tensors="pt")
        with torch.no_grad():
            predicted = model(**encoded).logits.argmax(dim=-1)[0].tolist()
        firsts = {}
        for position, word in enumerate(encoded.word_ids(0)):
            if word is not None:
                firsts.setdefault(word, position)
        tagged.append([model.config.id2label[predicted[firsts[word]]] for word in sorted(firsts)])
    return tagged


def test_a_merged_export_loads_in_plain_transformers_with_its_label_names(trained, capsys, tmp_path):
    run = trained("ner", "ner_lora", "method=lora")
    code, err = export(capsys, run.directory, tmp_path / "merged")
    assert code == 0, err
    model = AutoModelForTokenClassification.from_pretrained(tmp_path / "merged")
    assert not hasattr(model, "peft_config") and "B-PER" in model.config.label2id
    assert plain_tags(model, AutoTokenizer.from_pretrained(tmp_path / "merged"), run.test_inputs) == run.evaluated_test
    assert sorted(path.suffix for path in (tmp_path / "merged").iterdir() if path.suffix in {".bin", ".pt", ".safetensors"}) == [
        ".safetensors"
    ]


def test_an_adapter_export_loads_in_plain_peft_on_the_base_it_names(trained, tiny_backbone, capsys, tmp_path):
    run = trained("ner", "ner_lora", "method=lora")
    out = tmp_path / "adapter"
    assert export(capsys, run.directory, out, "--adapter")[0] == 0
    named = PeftConfig.from_pretrained(out).base_model_name_or_path
    assert named == str(tiny_backbone)  # the folder the run was configured with, as written
    base = AutoModelForTokenClassification.from_pretrained(named, config=AutoConfig.from_pretrained(out))
    model = PeftModel.from_pretrained(base, out)
    assert plain_tags(model, AutoTokenizer.from_pretrained(out), run.test_inputs) == run.evaluated_test


def test_a_generation_adapter_export_loads_with_auto_peft_and_completes_as_evaluated(trained, capsys, tmp_path):
    run = trained("generation", "generation_lora", "method=lora")
    out = tmp_path / "adapter"
    assert export(capsys, run.directory, out, "--adapter")[0] == 0
    model = AutoPeftModelForCausalLM.from_pretrained(out).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    completions = []
    for prompt in run.test_inputs:  # the run's task.separator, a line break, ends each prompt
        encoded = tokenizer(prompt + "\n", return_tensors="pt")
        generated = model.generate(**encoded, max_new_tokens=2, do_sample=False, pad_token_id=tokenizer.eos_token_id)
        completions.append(tokenizer.decode(generated[0, encoded["input_ids"].shape[1] :], skip_special_tokens=True))
    assert completions == run.evaluated_test


def test_peftlabs_own_methods_export_the_trained_model_itself(trained, capsys, tmp_path):
    run = trained("classification", "classification_full", "method=full", "trainer.lr=1e-2")
    assert export(capsys, run.directory, tmp_path / "model")[0] == 0
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "model").eval()
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "model")
    with torch.no_grad():
        predicted = model(**tokenizer(run.test_inputs, padding=True, return_tensors="pt")).logits.argmax(dim=-1)
    assert [model.config.id2label[i] for i in predicted.tolist()] == run.evaluated_test
    assert set(run.evaluated_test) == {"person", "other"}  # not a constant answer that agrees by accident


@pytest.mark.parametrize(
    "name, method, adapter, named",
    [
        ("ner_head_only", "head_only", True, ["--adapter writes peft's format", "method=head_only", "without --adapter"]),
        ("ner_prompt_tuning", "prompt_tuning", False, ["nothing to merge", "--adapter"]),
        ("ner_adapter", "adapter", False, ["nothing to merge", "peftlab.predict"]),
    ],
)
def test_what_a_method_cannot_export_is_refused_saying_what_to_do(name, method, adapter, named, trained, capsys, tmp_path):
    run = trained("ner", name, f"method={method}")
    code, err = export(capsys, run.directory, tmp_path / "out", *(["--adapter"] if adapter else []))
    assert code == 2 and all(fragment in err for fragment in named), err
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.*"))  # nothing half-written


def test_an_existing_folder_is_not_overwritten(trained, capsys, tmp_path):
    run = trained("ner", "ner_lora", "method=lora")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    code, err = export(capsys, run.directory, tmp_path / "out")
    assert code == 2 and "already exists" in err and (tmp_path / "out" / "keep.txt").read_text() == "mine"


def test_export_from_the_command_line_answers_a_non_run_in_one_paragraph(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    completed = subprocess.run(
        [sys.executable, "-m", "peftlab.export", str(tmp_path), str(tmp_path / "out")],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 2 and "Traceback" not in completed.stderr
    assert "not a peftlab run" in completed.stderr and not (tmp_path / "out").exists()
