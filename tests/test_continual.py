"""Continual learning (`python -m peftlab.continual`): a task sequence on one body, each task with
its own head. adapter_per_task leaves an earlier task exactly as it was; full and shared_lora move
it; R, backward transfer and forgetting by hand; the report; bad input refused naming the key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import DataCollatorWithPadding

from peftlab.continual import REGIMES, TaskSequence, main, run_continual, stage_configs, transfer_metrics
from peftlab.errors import ConfigError
from peftlab.report import main as report_main
from peftlab.report.continual import write_continual_report
from tests.conftest import TINY_CLASSIFIED, TINY_SENTENCES, compose_config, write_csv

# A second task on the same sentences, with another label set: which kind of place or body it names.
TINY_PLACES = [
    (text, "loc" if "B-LOC" in tags else "org" if "B-ORG" in tags else "none") for text, tags in TINY_SENTENCES
]
TINY_RUN = ["task.max_length=32", "trainer.max_steps=4", "trainer.batch_size=4", "trainer.logging_steps=2",
            "trainer.lr=0.01", "+trainer.extra.use_cpu=true"]


def write_task(folder: Path, rows: list[tuple[str, str]]) -> Path:
    folder.mkdir()
    for name in ("train.csv", "dev.csv", "test.csv"):
        write_csv(folder / name, ["text", "label"], rows)
    return folder


@pytest.fixture
def two_tasks(tmp_path: Path) -> tuple[Path, Path]:
    return write_task(tmp_path / "persons", TINY_CLASSIFIED), write_task(tmp_path / "places", TINY_PLACES)


def sequence_overrides(tiny_backbone: Path, first: Path, second: Path, out: Path, *more: str) -> list[str]:
    """The command's overrides for the tiny two-task sequence, as a user writes them."""
    tasks = (f"continual.tasks=[{{task:classification,overrides:['task.data.path={first}']}},"
             f"{{task:classification,overrides:['task.data.path={second}']}}]")
    return ["experiment=continual_classification_minilm", f"backbone.pretrained={tiny_backbone}", tasks,
            f"continual.dir={out}", *TINY_RUN, *more]


def task_one_logits(sequence: TaskSequence) -> torch.Tensor:
    stage = sequence.stages[0]
    model = stage.prepared.model
    model.eval()
    batch = DataCollatorWithPadding(stage.prepared.tokenizer)(list(stage.prepared.encoded["test"]))
    batch.pop("labels")
    with torch.inference_mode():
        return model(**batch).logits.clone()


@pytest.mark.parametrize("regime", sorted(REGIMES))
def test_a_later_task_moves_an_earlier_one_only_where_the_regime_shares_what_trains(
    regime, tiny_backbone, two_tasks, tmp_path
):
    overrides = sequence_overrides(tiny_backbone, *two_tasks, tmp_path)
    first, second = stage_configs(compose_config(overrides), overrides, regime)
    sequence = TaskSequence(REGIMES[regime])
    sequence.train(first, tmp_path / "1")
    logits_before, scores_before = task_one_logits(sequence), sequence.scores(0)
    head_before = {name: p.detach().clone() for name, p in sequence.stages[0].prepared.model.named_parameters()
                   if "classifier" in name or "pooler" in name}
    sequence.train(second, tmp_path / "2")
    logits_after, scores_after = task_one_logits(sequence), sequence.scores(0)

    body_one, body_two = (dict(stage.prepared.model.named_parameters()) for stage in sequence.stages)
    embeddings = next(name for name in body_one if "word_embeddings" in name)
    assert body_one[embeddings] is body_two[embeddings]  # one body in memory in every regime
    for name, before in head_before.items():  # task 1's head is its own, in every regime
        assert torch.equal(body_one[name], before), name
    if regime == "adapter_per_task":
        assert torch.equal(logits_after, logits_before)
        assert scores_after == scores_before  # every metric of both splits, the loss included, bit for bit
        adapter = next(name for name in body_one if "lora_A" in name)
        assert body_one[adapter] is not body_two[adapter]
    else:
        assert not torch.equal(logits_after, logits_before)
        assert scores_after["test"]["loss"] != scores_before["test"]["loss"]
        trained = next(name for name, p in body_two.items() if p.requires_grad and "encoder" in name)
        assert body_one[trained] is body_two[trained]


def test_r_backward_transfer_and_forgetting_by_hand():
    r = [[0.90, None, None],
         [0.95, 0.80, None],
         [0.60, 0.75, 0.95]]
    metrics = transfer_metrics(r)
    assert metrics["final_average"] == pytest.approx((0.60 + 0.75 + 0.95) / 3)
    # BWT: each earlier task's last score against its score right after it trained
    assert metrics["backward_transfer"] == pytest.approx(((0.60 - 0.90) + (0.75 - 0.80)) / 2)
    # F: against its best score before the last stage (task 1 peaked after stage 2, at 0.95)
    assert metrics["forgetting"] == pytest.approx(((0.95 - 0.60) + (0.80 - 0.75)) / 2)
    assert transfer_metrics([[0.9, None], [None, 0.8]]) == dict.fromkeys(metrics)  # a missing score: no metric


def test_the_command_writes_r_per_regime_and_its_report_and_resumes(tiny_backbone, two_tasks, tmp_path, capsys):
    out = tmp_path / "continual"
    overrides = sequence_overrides(tiny_backbone, *two_tasks, out, "continual.regimes=[adapter_per_task,full]")
    assert main(overrides) == 0
    summary = json.loads((out / "continual.json").read_text())
    assert list(summary["regimes"]) == ["adapter_per_task", "full"]
    for name, regime in summary["regimes"].items():
        first = json.loads((out / regime["stages"][0]["run"] / "result.json").read_text())
        second = json.loads((out / regime["stages"][1]["run"] / "result.json").read_text())
        for split in ("validation", "test"):
            r = regime["matrix"][split]
            assert r[0] == [first["metrics"][split]["accuracy"], None]  # the diagonal is each stage's own run
            assert r[1][1] == second["metrics"][split]["accuracy"]
            assert regime["metrics"][split] == transfer_metrics(r)
        assert regime["stages"][1]["budget"]["trainer.max_steps"] == 4 and second["method"] == regime["method"]
        assert "continual stage 2" in second["notes"][-1]
    kept = summary["regimes"]["adapter_per_task"]
    assert kept["scores"][1][0] == kept["scores"][0][0]  # task 1 untouched by task 2, every metric
    assert kept["metrics"]["test"]["backward_transfer"] == 0 and kept["metrics"]["test"]["forgetting"] == 0
    markdown = (out / "continual.md").read_text()
    assert "| adapter_per_task | lora | " in markdown and (out / "continual.png").stat().st_size > 0

    # resumed with one more regime: the finished ones are read back, not run again
    stamp = (out / "full" / "2_classification" / "result.json").stat().st_mtime_ns
    assert main([*overrides[:-1], "continual.regimes=[adapter_per_task,full,shared_lora]"]) == 0
    resumed = json.loads((out / "continual.json").read_text())
    assert list(resumed["regimes"]) == ["adapter_per_task", "full", "shared_lora"]
    assert resumed["regimes"]["full"] == summary["regimes"]["full"]
    assert (out / "full" / "2_classification" / "result.json").stat().st_mtime_ns == stamp
    assert main([*overrides, "seed=1"]) == 2  # other settings into the same folder: refused
    assert "only continual.regimes may change" in capsys.readouterr().err


def test_the_report_shows_r_and_the_metrics_in_points(tmp_path):
    stage = {"task": "sst2", "dataset": "sst2", "primary_metric": "accuracy", "run": "full/1_sst2",
             "budget": {"trainer.epochs": 1, "trainer.max_steps": -1, "trainer.batch_size": 16, "trainer.lr": 5e-5},
             "data_sizes": {"train": 1000, "validation": 500, "test": 500}, "trainable_pct": 100.0,
             "train_seconds": 100.0}
    matrix = [[0.9, None], [0.8, 0.7]]
    summary = {
        "command": "python -m peftlab.continual x", "git_sha": None, "seed": 0, "backbone": "minilm",
        "tasks": ["sst2", "banking77"],
        "regimes": {"full": {"method": "full", "what": "the body drifts",
                             "stages": [stage, {**stage, "task": "banking77", "run": "full/2_banking77"}],
                             "matrix": {"test": matrix, "validation": matrix},
                             "metrics": {split: transfer_metrics(matrix) for split in ("test", "validation")}}},
    }
    (tmp_path / "continual.json").write_text(json.dumps(summary))
    assert report_main([str(tmp_path)]) == 0  # python -m peftlab.report on a continual folder
    markdown = (tmp_path / "continual.md").read_text()
    assert "| 2 banking77 | 80.00 | 70.00 |" in markdown and "| 1 sst2 | 90.00 | — |" in markdown
    assert "| full | full | 75.00 | -10.00 | +10.00 | 80.00 | 70.00 |" in markdown
    assert not (tmp_path / "report.md").exists()
    written = write_continual_report(tmp_path, tmp_path / "elsewhere")
    assert written["heatmap"].stat().st_size > 0 and "<table" in written["html"].read_text()


@pytest.mark.parametrize(
    ("overrides", "fragments"),
    [
        (["continual.tasks=[{task:sst2},{task:conll2003}]"], ["continual.tasks are of different kinds",
                                                               "sst2 (SequenceClassification)"]),
        (["continual.regimes=[full,replay]"], ["continual.regimes", "'replay'", "adapter_per_task"]),
        (["continual.tasks=[{task:sst2}]"], ["continual.tasks names 1 task (sst2)", "at least two"]),
        (["task=sst2"], ["continual.tasks"]),
        (["method=lora"], ["continual.regimes"]),
    ],
)
def test_bad_input_is_refused_naming_the_key(overrides, fragments, capsys):
    assert main(["experiment=continual_classification_minilm", *overrides]) == 2
    error = capsys.readouterr().err
    for fragment in fragments:
        assert fragment in error, error


def test_a_config_without_a_sequence_is_refused_naming_the_experiments():
    with pytest.raises(ConfigError, match="experiment=continual_classification_minilm"):
        run_continual(["seed=0"])
