"""`python -m peftlab.predict`: a trained run answers new inputs exactly as its evaluation did;
several adapters share one base; bad input gets one paragraph and exit code 2."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from peftlab.predict import main
from tests.trained_runs import trained  # noqa: F401  (a fixture)

ROOT = Path(__file__).resolve().parents[1]


def predict(capsys, *arguments: str) -> tuple[int, str, str]:
    capsys.readouterr()  # what training printed is not predict's
    code = main([str(argument) for argument in arguments])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def predictions(capsys, *arguments: str) -> list[dict]:
    code, out, err = predict(capsys, *arguments, "--format", "jsonl")
    assert code == 0, err
    return [json.loads(line) for line in out.splitlines()]


def answers(records: list[dict], run) -> list:
    return [record["predictions"][str(run.directory)] for record in records]


def flat(answers: list) -> list:
    """Every label or tag answered, the tags of all sentences in one list."""
    return [tag for answer in answers for tag in (answer if isinstance(answer, list) else [answer])]


def text_arguments(lines: list[str]) -> list[str]:
    return [argument for line in lines for argument in ("--text", line)]


@pytest.mark.parametrize(
    "kind, name, overrides, words",
    [
        ("ner", "ner_lora", ["method=lora"], True),
        ("ner", "ner_prompt_tuning", ["method=prompt_tuning"], True),  # virtual tokens first: tags read after them
        ("ner", "ner_adapter", ["method=adapter"], True),  # peftlab's own format, rebuilt from the run's config
        ("ner", "ner_qlora", ["method=lora", "quant=nf4"], True),  # the base quantized again as the run did
        ("classification", "classification_lora", ["method=lora"], False),
        ("generation", "generation_lora", ["method=lora"], False),
        # nothing trained: the demonstrations come from the checkpoint, not the training data
        ("generation", "generation_in_context", ["method=in_context", "method.shots=3"], False),
    ],
)
def test_predictions_on_the_test_split_are_the_ones_the_run_evaluated(kind, name, overrides, words, trained, capsys, tmp_path):
    run = trained(kind, name, *overrides)
    assert run.result["status"] == "ok"
    test_file = tmp_path / "test_inputs.txt"
    test_file.write_text("\n".join(run.test_inputs) + "\n")
    records = predictions(capsys, run.directory, "--input", test_file, *(["--words"] if words else []))
    assert [record["text"] for record in records] == run.test_inputs
    assert answers(records, run) == run.evaluated_test
    assert len(set(flat(run.evaluated_test))) > 1, "a trivial predictor would agree by accident"


def test_ner_text_output_is_conll_columns_and_plain_text_is_cut_at_punctuation(trained, capsys):
    run = trained("ner", "ner_lora", "method=lora")
    code, out, _ = predict(capsys, run.directory, "--text", "anna visited paris.", "--text", "maria left")
    assert code == 0
    blocks = [block.splitlines() for block in out.strip().split("\n\n")]
    assert [[line.split("\t")[0] for line in block] for block in blocks] == [["anna", "visited", "paris", "."], ["maria", "left"]]
    labels = set(json.loads((run.directory / "checkpoint" / "config.json").read_text())["label2id"])
    assert all(len(line.split("\t")) == 2 and line.split("\t")[1] in labels for block in blocks for line in block)


def test_words_beyond_max_length_are_left_untagged_and_said(trained, capsys):
    run = trained("ner", "ner_lora", "method=lora")
    long_line = " ".join(["anna"] * 40)  # 40 words, 42 tokens with [CLS] and [SEP]; the run reads 32
    records = predictions(capsys, run.directory, "--words", "--text", long_line)
    tags = answers(records, run)[0]
    assert len(tags) == 40 and all(tags[:30]) and tags[30:] == [None] * 10
    code, _, err = predict(capsys, run.directory, "--words", "--text", long_line)
    assert code == 0 and "10 word tags left empty" in err and "task.max_length" in err


def test_several_adapters_on_one_base_answer_as_each_run_alone(trained, capsys):
    """Two NER runs with different label sets (so heads of different sizes) and two peft types of
    the same tuner family (LoRA, DoRA): one base, one column each."""
    nine = trained("ner", "ner_lora", "method=lora")
    eleven = trained("ner", "ner_dora_more_labels", "method=dora",
                     "task.labels=[O,B-PER,I-PER,B-ORG,I-ORG,B-LOC,I-LOC,B-MISC,I-MISC,B-DATE,I-DATE]")
    inputs = text_arguments(nine.test_inputs[:6])
    together = predictions(capsys, nine.directory, eleven.directory, "--words", *inputs)
    assert answers(together, nine) == answers(predictions(capsys, nine.directory, "--words", *inputs), nine)
    assert answers(together, eleven) == answers(predictions(capsys, eleven.directory, "--words", *inputs), eleven)
    assert answers(together, nine) != answers(together, eleven)  # each column is its own run's
    assert {"O"} < set(flat(answers(together, nine)))
    code, out, _ = predict(capsys, nine.directory, eleven.directory, "--words", "--text", "anna left")
    assert out.splitlines()[0] == f"# word\t{nine.directory}\t{eleven.directory}"
    assert [len(line.split("\t")) for line in out.splitlines()[1:3]] == [3, 3]


def test_classification_columns_put_the_label_first_as_label_text_files_do(trained, capsys):
    run = trained("classification", "classification_lora", "method=lora")
    code, out, _ = predict(capsys, run.directory, "--text", "anna visited paris today .")
    label, text = out.rstrip("\n").split("\t")
    assert code == 0 and label in {"person", "other"} and text == "anna visited paris today ."


@pytest.mark.parametrize(
    "second, named",
    [
        (("ner", "ner_head_only", "method=head_only"), ["method=head_only", "own format", "command of its own"]),
        (("classification", "classification_lora", "method=lora"), ["task kind", "separate commands"]),
        (("ner", "ner_ia3", "method=ia3"), ["peft type", "LORA", "IA3", "one type per model"]),
        (("ner", "ner_qlora", "method=lora", "quant=nf4"), ["differ in quantization", "nf4"]),
        (("generation", "generation_lora", "method=lora"), ["differ in backbone", "tiny_llama", "tiny_bert"]),
    ],
)
def test_runs_that_cannot_share_a_base_are_refused_saying_why(second, named, trained, capsys):
    first = trained("ner", "ner_lora", "method=lora")
    other = trained(*second)
    code, out, err = predict(capsys, first.directory, other.directory, "--text", "anna left")
    assert code == 2 and out == ""
    assert all(fragment in err for fragment in named), err


def test_a_folder_that_is_not_a_run_is_one_paragraph_and_exit_code_2_from_the_command_line(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    completed = subprocess.run(
        [sys.executable, "-m", "peftlab.predict", str(tmp_path), "--text", "anna"],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 2 and "Traceback" not in completed.stderr
    assert f"{tmp_path} has no result.json, so it is not a peftlab run" in completed.stderr


@pytest.mark.parametrize("content, named", [('{"status": "ok", ', "not valid JSON"), ('{"status": "ok"}', "task")])
def test_a_result_file_that_does_not_fit_the_schema_is_refused_naming_the_file(content, named, capsys, tmp_path):
    (tmp_path / "result.json").write_text(content)
    code, out, err = predict(capsys, tmp_path, "--text", "anna")
    assert code == 2 and out == "" and str(tmp_path / "result.json") in err and named in err and "Run it again" in err


def test_bad_input_is_named_with_its_fix(trained, tiny_backbone, capsys, tmp_path):
    run = trained("ner", "ner_lora", "method=lora")
    (tmp_path / "empty.txt").write_text("\n  \n")
    cases = [
        ([tmp_path / "nowhere"], ["nowhere is not a folder", "not a peftlab run"]),
        ([run.directory, "--input", tmp_path / "empty.txt"], ["no input", "empty.txt held no non-blank line"]),
        ([run.directory, "--input", tmp_path / "missing.txt"], ["--input", "missing.txt: no such file"]),
        ([run.directory, run.directory, "--text", "anna"], ["given more than once"]),
    ]
    for arguments, named in cases:
        code, out, err = predict(capsys, *arguments)
        assert code == 2 and out == "" and all(fragment in err for fragment in named), err
    with pytest.raises(SystemExit) as refused:  # argparse's own exit: usage and the conflict
        predict(capsys, run.directory, "--text", "anna", "--input", tmp_path / "empty.txt")
    assert refused.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


def test_words_are_refused_for_a_task_that_reads_text(trained, capsys):
    run = trained("classification", "classification_lora", "method=lora")
    code, _, err = predict(capsys, run.directory, "--words", "--text", "anna left")
    assert code == 2 and "--words" in err and "token classification" in err


def test_a_failed_run_is_refused_naming_its_error(tiny_config, capsys, tmp_path):
    from peftlab.run import execute

    with pytest.raises(Exception):
        execute(tiny_config("method=lora", "method.r=0"), tmp_path)
    code, _, err = predict(capsys, tmp_path, "--text", "anna")
    assert code == 2 and "a run that failed" in err and "method.r=0" in err and "run it again" in err


def test_a_run_whose_backbone_is_gone_names_it_and_reads_a_copy_with_pretrained(trained, tiny_backbone, capsys, tmp_path):
    run = trained("ner", "ner_lora", "method=lora")
    moved = tmp_path / "run"
    shutil.copytree(run.directory, moved)
    result = json.loads((moved / "result.json").read_text())
    result["config"]["backbone"]["pretrained"] = str(tmp_path / "deleted_backbone")
    (moved / "result.json").write_text(json.dumps(result))
    code, _, err = predict(capsys, moved, "--words", "--text", "anna left")
    assert code == 2 and "deleted_backbone" in err and "--pretrained" in err and "Traceback" not in err
    elsewhere = predictions(capsys, moved, "--words", "--text", "anna left", "--pretrained", tiny_backbone)
    alone = predictions(capsys, run.directory, "--words", "--text", "anna left")
    assert elsewhere[0]["predictions"][str(moved)] == alone[0]["predictions"][str(run.directory)]


def test_a_checkpoint_with_pickled_weights_only_is_refused_unread(trained, capsys, tmp_path):
    run = trained("ner", "ner_lora", "method=lora")
    tampered = tmp_path / "run"
    shutil.copytree(run.directory, tampered)
    (tampered / "checkpoint" / "adapter_model.safetensors").rename(tampered / "checkpoint" / "adapter_model.bin")
    code, _, err = predict(capsys, tampered, "--text", "anna")
    assert code == 2 and "adapter_model.bin" in err and "never loads" in err


@pytest.mark.parametrize(
    "kind, name, overrides",
    [("ner", "ner_lora", ["method=lora"]), ("classification", "classification_lora", ["method=lora"]),
     ("generation", "generation_lora", ["method=lora"])],
)
def test_the_agreement_script_scores_predicts_answers_as_the_run_did(kind, name, overrides, trained):
    """benchmarks/predict_agreement.py, the real-data check, on tiny runs: the same scores."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("predict_agreement", ROOT / "benchmarks" / "predict_agreement.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    run = trained(kind, name, *overrides)
    recorded, predicted = script.agreement(run.directory)
    assert predicted and all(recorded[metric] == pytest.approx(value, abs=1e-12) for metric, value in predicted.items())
