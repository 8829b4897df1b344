"""The report's data-efficiency view (peftlab/report/efficiency.py), from hand-made result.json
files: the method tables still keep each training-set size and data seed apart, while the view
pools the data seeds of one size into mean ± std, orders the sizes by the examples used, draws
full fine-tuning as the reference and a method that trains nothing as a horizontal line."""

from __future__ import annotations

import csv
import re

import pytest

from peftlab.report import build_report, read_runs, write_report
from peftlab.report.efficiency import efficiency_views
from tests.helpers import result, write_runs

SST2_TRAIN = 6920
# method -> shots (None = all) -> the test accuracy of data seeds 0, 1, 2
SCORES = {
    "full": {8: (0.60, 0.64, 0.68), 32: (0.70, 0.72, 0.74), None: (0.90, 0.91, 0.92)},
    "lora": {8: (0.58, 0.60, 0.62), 32: (0.69, 0.70, 0.71), None: (0.88, 0.89, 0.90)},
    "bitfit": {8: (0.55, 0.55, 0.55), 32: (0.66, 0.67, 0.68)},
}


def sst2_run(method: str, shots: int | None, data_seed: int, accuracy: float, **config) -> dict:
    run = result(method, 0, accuracy, task="sst2", dataset="sst2", primary_metric="accuracy",
                 data_sizes={"train": 2 * shots if shots else SST2_TRAIN, "validation": 872, "test": 1821})
    for split in ("validation", "test"):
        run["metrics"][split]["accuracy"] = run["metrics"][split].pop("f1")
    run["config"]["task"] = {"shots_per_class": shots, "max_train_samples": None, "data_seed": data_seed}
    run["config"]["trainer"] = {"max_steps": 150, "batch_size": 8, **config}
    return run


def sweep() -> list[dict]:
    return [
        sst2_run(method, shots, data_seed, accuracy)
        for method, by_size in SCORES.items() for shots, scores in by_size.items()
        for data_seed, accuracy in enumerate(scores)
    ]


def in_context(shots: int, accuracy: float, data_seed: int) -> dict:
    run = sst2_run("head_only", shots, data_seed, accuracy)
    run["method"] = run["config"]["method"]["name"] = "in_context"
    run["params"] = {**run["params"], "trainable": 0, "method": 0, "head": 0, "trainable_pct": 0.0}
    return run


def only_view(folder):
    (view,) = efficiency_views(read_runs(folder)[0])
    return view


def test_the_view_pools_data_seeds_per_size_and_orders_sizes_by_examples(tmp_path):
    view = only_view(write_runs(tmp_path, sweep()))
    assert [view.size_examples(size) for size in view.sizes] == [16, 64, SST2_TRAIN]
    assert view.methods == ["bitfit", "lora", "full"]  # by trainable parameters, full last
    full_8 = view.cells["full", view.sizes[0]]
    assert full_8.mean == pytest.approx(64.0) and full_8.std == pytest.approx(4.0) and full_8.n == 3
    assert full_8.data_seeds == ["0", "1", "2"]
    assert view.cells["bitfit", view.sizes[0]].std == pytest.approx(0.0)
    assert ("bitfit", view.sizes[2]) not in view.cells  # bitfit never ran on all the data


def test_the_method_tables_still_keep_each_size_and_data_seed_apart(tmp_path):
    folder = write_runs(tmp_path, sweep())
    report = build_report(folder, *read_runs(folder))
    assert len(report.groups) == 9  # 3 sizes x 3 data seeds
    assert all(row.n == 1 for group in report.groups for row in group.rows)


def test_the_markdown_table_has_a_row_per_method_and_a_column_per_size(tmp_path):
    runs = sweep() + [in_context(8, 0.52, seed) for seed in range(3)]
    markdown = write_report(write_runs(tmp_path, runs))["markdown"].read_text()
    section = markdown.split("## Data efficiency: `sst2` on `sst2`, backbone `minilm`, quant `none`")[1].split("\n## ")[0]
    assert "data seed is a seed-like axis here" in section
    lines = [line for line in section.splitlines() if line.startswith("|")]
    assert lines[0] == "| method | K=8 (16 examples) | K=32 (64 examples) | all (6,920 examples) |"
    assert lines[2:] == [
        "| bitfit | 55.00 ± 0.00 (n=3) | 67.00 ± 1.00 (n=3) | n/a |",
        "| lora | 60.00 ± 2.00 (n=3) | 70.00 ± 1.00 (n=3) | 89.00 ± 1.00 (n=3) |",
        "| full | 64.00 ± 4.00 (n=3) | 72.00 ± 2.00 (n=3) | 91.00 ± 1.00 (n=3) |",
        "| in_context (trains nothing) | 52.00 ± 0.00 (n=3) | n/a | n/a |",
    ]
    assert "![metric vs training examples](efficiency.png)" in section


def test_csv_png_and_html_carry_the_view(tmp_path):
    written = write_report(write_runs(tmp_path, sweep()))
    with written["efficiency_csv"].open(newline="") as file:
        rows = {(row["method"], row["size"]): row for row in csv.DictReader(file)}
    assert len(rows) == 8
    lora = rows["lora", "K=32"]
    assert (lora["task.shots_per_class"], lora["train_examples_mean"], lora["n"], lora["data_seeds"]) == ("32", "64", "3", "0 1 2")
    assert float(lora["metric_mean"]) == pytest.approx(0.70) and float(lora["metric_std"]) == pytest.approx(0.01)
    assert rows["full", "all"]["task.shots_per_class"] == "" and rows["full", "all"]["metric_split"] == "test"
    assert written["efficiency"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    images = re.findall(r'<img alt="([^"]+)"', written["html"].read_text())
    assert "metric vs training examples" in images


def test_ner_draws_of_one_k_differ_in_size_and_the_column_gives_their_mean(tmp_path):
    runs = [sst2_run("lora", 8, seed, 0.5) for seed in range(3)] + [sst2_run("lora", 32, 0, 0.6)]
    for run, sentences in zip(runs, (30, 33, 39, 120)):
        run["data_sizes"]["train"] = sentences
    view = only_view(write_runs(tmp_path, runs))
    assert [view.size_examples(size) for size in view.sizes] == [pytest.approx(34.0), 120]


def test_one_training_set_size_gives_no_view_and_stale_files_go(tmp_path):
    folder = write_runs(tmp_path, [sst2_run(method, 8, seed, 0.6) for method in ("full", "lora") for seed in range(3)])
    (folder / "efficiency.png").write_bytes(b"stale")
    written = write_report(folder)
    assert "efficiency" not in written and not (folder / "efficiency.png").exists()
    assert "Data efficiency" not in written["markdown"].read_text()


def test_sizes_trained_on_other_budgets_are_flagged(tmp_path):
    runs = sweep()
    for run in runs:
        if run["config"]["task"]["shots_per_class"] is None:
            run["config"]["trainer"]["max_steps"] = 433
    markdown = write_report(write_runs(tmp_path, runs))["markdown"].read_text()
    assert "- trainer.max_steps differs across these runs (150, 433)" in markdown


def test_a_method_swept_over_a_setting_gets_a_line_each_but_a_budget_per_size_makes_none(tmp_path):
    runs = []
    for shots, steps in ((8, 50), (32, 150)):  # more steps for more examples: a budget note, not a variant
        for dropout, accuracy in ((0.0, 0.70), (0.1, 0.60)):
            run = sst2_run("lora", shots, 0, accuracy, max_steps=steps)
            run["config"]["method"].update(dropout=dropout, peft={"lora_dropout": dropout})
            runs.append(run)
    folder = write_runs(tmp_path, runs)
    view = only_view(folder)
    assert view.methods == ["lora (dropout=0.0)", "lora (dropout=0.1)"]
    assert [view.cells["lora (dropout=0.1)", size].mean for size in view.sizes] == pytest.approx([60.0, 60.0])
    assert view.budget_notes == ["trainer.max_steps differs across these runs (150, 50)"]
    with (write_report(folder)["efficiency_csv"]).open(newline="") as file:
        rows = list(csv.DictReader(file))
    assert sorted((row["method"], row["variant"], row["size"]) for row in rows) == [
        ("lora", "dropout=0.0", "K=32"), ("lora", "dropout=0.0", "K=8"),
        ("lora", "dropout=0.1", "K=32"), ("lora", "dropout=0.1", "K=8"),
    ]
