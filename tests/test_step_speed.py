"""The step-speed benchmark on the tiny model: benchmarks/plain_loop.py trains on exactly the
batches peftlab's Trainer trains on (same losses, step by step), and step_speed.py --quick
measures every contender and writes its table and CSV."""

from __future__ import annotations

import argparse
import csv
import importlib.util
import logging
import sys
from pathlib import Path

import datasets
import pytest
import torch
import transformers

from peftlab.run import loss_weighting, make_trainer, prepare
from tests.conftest import TOKEN_CLASSIFICATION, method_names

ROOT = Path(__file__).resolve().parents[1]
PEFTLAB_LOG = logging.getLogger("peftlab")
BENCHMARKS = ROOT / "benchmarks"


@pytest.fixture
def plain_loop(monkeypatch: pytest.MonkeyPatch):
    """benchmarks/plain_loop.py as a module (registered, as its dataclasses need)."""
    spec = importlib.util.spec_from_file_location("plain_loop", BENCHMARKS / "plain_loop.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "plain_loop", module)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def process_settings():
    """The scripts' `main` sets torch threads and quiets transformers, datasets and peftlab for
    the whole process: give the other tests theirs back."""
    threads, verbosity, peftlab_level = torch.get_num_threads(), transformers.logging.get_verbosity(), PEFTLAB_LOG.level
    yield
    torch.set_num_threads(threads)
    transformers.logging.set_verbosity(verbosity)
    datasets.enable_progress_bars()
    PEFTLAB_LOG.setLevel(peftlab_level)


def tiny_arguments(data: Path, backbone: Path, steps: int) -> argparse.Namespace:
    return argparse.Namespace(
        data=str(data), train_samples=16, batch_size=4, steps=steps, threads=1,
        overrides=[f"backbone.pretrained={backbone}", "task.max_length=32", "+trainer.extra.use_cpu=true"],
    )


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("method", ["full", "lora"])
def test_the_plain_loop_sees_peftlabs_batches_and_learns_the_same_way(
    method, weighted, plain_loop, tiny_backbone, tiny_ner_dir, tmp_path
):
    """Same seed, same initial weights, same batches, same optimizer and schedule: the plain
    loop's loss at every step is the one peftlab's Trainer logs. A different batch order or a
    different model would show at the first step."""
    loop = plain_loop
    steps = 4  # one epoch of 16 sentences at batch 4
    arguments = tiny_arguments(tiny_ner_dir, tiny_backbone, steps)
    cfg = loop.benchmark_config(
        arguments, f"method={method}", "trainer.logging_steps=1", f"trainer.target_weighted_loss={weighted}"
    )
    prepared = prepare(cfg)
    trainer = make_trainer(cfg, prepared, tmp_path)
    trainer.train()
    peftlab_losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]

    model = loop.plain_model(cfg, len(prepared.task.labels))
    weighting = loss_weighting(cfg.trainer, prepared.encoded["train"])
    plain = loop.train(model, loop.peftlab_batches(cfg, prepared, steps), cfg, steps, weighting)

    assert len(plain.losses) == steps
    assert plain.losses == pytest.approx(peftlab_losses, rel=1e-4)
    assert plain.tokens_seen[-1] == trainer.state.num_input_tokens_seen
    assert plain.seconds_per_step() > 0


def test_the_plain_loop_on_its_own_prints_its_speed_and_losses(plain_loop, tiny_backbone, tiny_ner_dir, capsys,
                                                               process_settings):
    plain_loop.main(["--method", "full", "--steps", "3", "--train-samples", "16", "--batch-size", "4", "--threads", "1",
                     "--data", str(tiny_ner_dir), f"backbone.pretrained={tiny_backbone}", "task.max_length=32"])
    printed = capsys.readouterr().out
    assert "plain loop, method=full:" in printed and "s/step over steps 2-3" in printed
    assert len(printed.split("losses:")[1].split()) == 3


def test_more_steps_than_one_epoch_holds_are_refused(plain_loop):
    arguments = argparse.Namespace(steps=5, batch_size=4)
    with pytest.raises(SystemExit, match="--steps 5: use 2 to 4"):
        plain_loop.check_steps(arguments, 16)
    plain_loop.check_steps(argparse.Namespace(steps=4, batch_size=4), 16)


@pytest.fixture
def step_speed(monkeypatch: pytest.MonkeyPatch):
    """benchmarks/step_speed.py as a module; it imports plain_loop from beside it."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location("step_speed", BENCHMARKS / "step_speed.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "step_speed", module)
    spec.loader.exec_module(module)
    return module


def test_profile_prints_the_operator_table_of_one_contender(step_speed, tiny_backbone, tiny_ner_dir, tmp_path, capsys,
                                                            process_settings):
    out = tmp_path / "results"
    step_speed.main(["--quick", "--threads", "1", "--profile", "lora", "--data", str(tiny_ner_dir),
                     "--out", str(out), f"backbone.pretrained={tiny_backbone}", "task.max_length=32"])
    printed = capsys.readouterr().out
    assert "lora: " in printed and "s/step (under the profiler)" in printed and "aten::mm" in printed
    assert not out.exists()  # a profile writes no table


def test_step_speed_quick_measures_every_contender_and_writes_table_and_csv(
    step_speed, tiny_backbone, tiny_ner_dir, tmp_path, capsys, process_settings
):
    out = tmp_path / "results"
    step_speed.main(["--quick", "--threads", "1", "--data", str(tiny_ner_dir), "--out", str(out),
                     f"backbone.pretrained={tiny_backbone}", "task.max_length=32", "+trainer.extra.use_cpu=true"])
    printed = capsys.readouterr().out

    rows = list(csv.DictReader((out / "step_speed.csv").open()))
    timed = {row["name"]: row for row in rows if row["s_per_step_median"]}
    expected = {"full, random batches", "lora, dropout 0.1", "dora, dropout 0.1", "lora, r 16", "lora, q and v only",
                "plain loop: full", "plain loop: lora", *method_names(TOKEN_CLASSIFICATION)}
    assert set(timed) == expected
    for row in timed.values():
        assert float(row["s_per_step_median"]) > 0 and len(row["s_per_step_rounds"].split()) == 2
    assert float(timed["full"]["ratio_vs_full"]) == 1.0
    assert timed["lora, dropout 0.1"]["overrides"] == "method=lora method.dropout=0.1"
    assert float(timed["full"]["executed_flop_per_step"]) > 0 and float(timed["lora"]["executed_flop_per_step"]) > 0
    assert timed["bitfit"]["executed_flop_per_step"] == "" and float(timed["bitfit"]["useful_flop_per_s"]) > 0
    # the same batches for every grouped contender: 4 steps of 4 of the 16 sentences, the first untimed
    assert {row["real_tokens"] for name, row in timed.items() if "random" not in name} == {timed["full"]["real_tokens"]}
    padding = {row["name"]: float(row["padding_efficiency"]) for row in rows if row["loop"] == "padding only"}
    assert len(padding) == 10 and all(0 < value <= 1 for value in padding.values())
    products = [row for row in rows if row["loop"] == "matmul only"]
    assert len(products) == 8
    assert all(float(row["seconds"]) > 0 and float(row["seconds_transposed"]) > 0 for row in products)

    table = (out / "step_speed.md").read_text()
    assert "--quick" in table and "1 torch threads" in table and "16 training sentences" in table
    assert "| lora | `method=lora` |" in table and "## LoRA's backward products" in table
    assert "lora / full:" in printed and "peftlab / plain loop, lora:" in printed


def test_contender_measures_the_named_rows_and_full_fine_tuning_only(
    step_speed, tiny_backbone, tiny_ner_dir, tmp_path, capsys, process_settings
):
    out = tmp_path / "results"
    step_speed.main(["--quick", "--threads", "1", "--data", str(tiny_ner_dir), "--out", str(out),
                     "--contender", "plain loop: full", "--contender", "plain loop: lora", "--contender", "lora",
                     f"backbone.pretrained={tiny_backbone}", "task.max_length=32", "+trainer.extra.use_cpu=true"])
    printed = capsys.readouterr().out

    rows = list(csv.DictReader((out / "step_speed.csv").open()))
    timed = [row["name"] for row in rows if row["s_per_step_median"]]
    assert timed == ["full, random batches", "full", "lora", "plain loop: full", "plain loop: lora"]  # table order
    assert "peftlab / plain loop, full:" in printed and "peftlab / plain loop, lora:" in printed
    assert "lora / full:" in printed and "bitfit / full" not in printed and "r 16" not in printed


def test_contender_refuses_a_name_it_does_not_know(step_speed, tiny_ner_dir, process_settings):
    with pytest.raises(SystemExit, match=r"--contender: no contender \['qlora'\].*'plain loop: lora'"):
        step_speed.main(["--quick", "--threads", "1", "--data", str(tiny_ner_dir),
                         "--contender", "qlora", "--contender", "lora"])
