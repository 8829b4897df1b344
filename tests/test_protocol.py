"""The comparison protocol (`python -m peftlab.protocol`): per-method learning rates tuned on
validation, then seeds at the chosen rate, one budget for all, resumable; its experiment
configs; and bad input refused before anything trains."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from peftlab.config import check_config, config_dir
from peftlab.errors import ProtocolError
import peftlab.protocol as protocol_module
from peftlab.protocol import main, tune_learning_rate, write_summary
from tests.conftest import compose_config
from tests.helpers import failed, read_results, result

ROOT = Path(__file__).resolve().parents[1]
PROTOCOL_EXPERIMENTS = sorted(path.stem for path in (Path(config_dir()) / "experiment").glob("*_protocol.yaml"))
TRIAL_STEPS, FINAL_STEPS = 2, 4


def protocol(*overrides: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "peftlab.protocol", *overrides], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=600,
    )


@pytest.mark.parametrize("experiment", PROTOCOL_EXPERIMENTS)
def test_a_protocol_experiment_gives_every_method_one_budget_and_chooses_on_validation(experiment):
    header = (Path(config_dir()) / "experiment" / f"{experiment}.yaml").read_text()
    assert f"python -m peftlab.protocol experiment={experiment}" in header and "hours" in header
    cfg = compose_config([f"experiment={experiment}"])
    methods, search = list(cfg.protocol.methods), cfg.protocol.search
    assert "full" in methods and len(cfg.protocol.seeds) >= 3 and len(search.lr_factors) >= 3
    assert cfg.trainer.select_best and cfg.trainer.eval_strategy != "no"
    budgets = []
    for method in methods:
        method_cfg = compose_config([f"experiment={experiment}", f"method={method}"])
        check_config(method_cfg)
        budgets.append({key: value for key, value in method_cfg.trainer.items() if key != "lr"})
    assert all(budget == budgets[0] for budget in budgets)
    trial = compose_config([f"experiment={experiment}", *search.overrides])
    assert trial.trainer.epochs < cfg.trainer.epochs  # trials are shorter than the final runs


def test_a_protocol_tunes_each_method_on_validation_runs_the_seeds_and_resumes(tiny_backbone, tiny_ner_dir, tmp_path):
    out = tmp_path / "protocol"
    command = (
        "experiment=conll2003_protocol", f"task.data.path={tiny_ner_dir}", f"backbone.pretrained={tiny_backbone}",
        "task.max_length=32", "+trainer.extra.use_cpu=true", "trainer.batch_size=4", "trainer.eval_steps=2",
        f"trainer.max_steps={FINAL_STEPS}", f'protocol.search.overrides=["trainer.max_steps={TRIAL_STEPS}"]',
        "protocol.methods=[lora,bitfit]", "protocol.seeds=[0,1]", "protocol.search.lr_factors=[1]",
        f"protocol.dir={out}",
    )
    completed = protocol(*command, cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr[-3000:]

    summary = json.loads((out / "protocol.json").read_text())
    default_lr = {"lora": 5e-4, "bitfit": 1e-3}  # conf/method/*.yaml: one trial, at factor 1
    for method, lr in default_lr.items():
        trials = read_results(out / "search" / method)
        assert len(trials) == 1 and trials[0]["config"]["trainer"]["max_steps"] == TRIAL_STEPS
        assert trials[0]["config"]["trainer"]["lr"] == lr and trials[0]["status"] == "ok"
        runs = read_results(out / "runs" / method)
        assert sorted(run["seed"] for run in runs) == [0, 1]
        assert all(run["status"] == "ok" and run["config"]["trainer"]["lr"] == lr for run in runs)
        assert all(run["config"]["trainer"]["max_steps"] == FINAL_STEPS for run in runs)
        assert all(run["config"]["protocol"] is None for run in runs)  # protocol.json records it, once
        assert all(run["selection"]["selected_step"] == run["selection"]["best_step"] for run in runs)
        recorded = summary["methods"][method]
        assert recorded["tuned_lr"] == lr and recorded["metric"] == "f1"
        assert recorded["trials"][0]["validation"] == trials[0]["metrics"]["validation"]["f1"]
        validation = [run["metrics"]["validation"]["f1"] for run in runs]
        assert [seed["validation"] for seed in recorded["seeds"]] == validation
    assert summary["budget"]["max_steps"] == FINAL_STEPS and summary["budget"]["select_best"] is True
    markdown = (out / "protocol.md").read_text()
    assert "| lora | 0.0005 | 0.0005: " in markdown and "| bitfit | 0.001 | 0.001: " in markdown
    assert "2/2" in markdown and "Test chose nothing" in markdown
    report = (out / "report.md").read_text()
    assert "4 runs ok" in report  # one report over both methods, beside protocol.md
    # named as a clone has the folder (relative to where the command ran), not as this machine does
    assert "`python -m peftlab.report protocol/runs --out protocol`" in report and str(tmp_path) not in report

    lost = out / "runs" / "bitfit" / "bitfit_s1" / "result.json"
    lost.unlink()
    kept = {path: path.stat().st_mtime_ns for path in out.rglob("result.json")}
    resumed = protocol(*command, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "lora: seeds 0, 1 finished before; skipped" in resumed.stdout
    assert "bitfit: trainer.lr=0.001, seeds 1" in resumed.stdout
    assert json.loads(lost.read_text())["status"] == "ok"
    assert all(path.stat().st_mtime_ns == mtime for path, mtime in kept.items())  # nothing else ran again


def write_trial(out: Path, method: str, lr: float, validation: float | None, test: float = 0.5) -> Path:
    """A trial's result.json as a run writes it, in the folder the search gives that rate;
    `validation=None` is a trial that failed."""
    folder = out / "search" / method / f"{method}_lr{lr}"
    folder.mkdir(parents=True)
    data = failed(method, 0, "Traceback ...\nValueError: loss is nan")
    if validation is not None:
        data = result(method, 0, test, validation_f1=validation, config={"trainer": {"lr": lr}})
    (folder / "result.json").write_text(json.dumps(data))
    return folder / "result.json"


def test_the_search_chooses_the_best_validation_score_never_test_and_skips_failed_trials(tmp_path):
    cfg = compose_config(["experiment=conll2003_protocol", "method=lora"])  # lora's 5e-4 x 1/3, 1, 3
    write_trial(tmp_path, "lora", 0.000167, validation=0.70, test=0.95)  # best on test: must not matter
    write_trial(tmp_path, "lora", 0.0005, validation=0.80, test=0.60)
    write_trial(tmp_path, "lora", 0.0015, validation=None)  # diverged
    outcome = tune_learning_rate("lora", cfg, [], tmp_path)  # every rate tried: nothing runs
    assert outcome.rates_tried == [0.000167, 0.0005, 0.0015]
    assert (outcome.tuned_lr, outcome.best_validation, outcome.metric) == (0.0005, 0.80, "f1")
    assert [(trial.lr, trial.status, trial.validation) for trial in outcome.trials] == [
        (0.000167, "ok", 0.70), (0.0005, "ok", 0.80), (0.0015, "failed", None)]
    assert not outcome.at_grid_edge


def test_a_best_rate_at_the_top_of_the_grid_sends_one_more_trial_beyond_it(tmp_path, monkeypatch):
    """The grid x1/3, x1, x3 of lora's 5e-4: 1.5e-3 scores best, so 4.5e-3 (one step of 3 further)
    runs as its own sweep; it scores lower, so the search stops there with 1.5e-3 inside."""
    cfg = compose_config(["experiment=conll2003_protocol", "method=lora", "protocol.search.extend_at_edge=2"])
    for lr, validation in ((0.000167, 0.60), (0.0005, 0.70), (0.0015, 0.80)):
        write_trial(tmp_path, "lora", lr, validation=validation)
    sweeps = []

    def sweep(overrides: list[str]) -> None:  # stands in for the `python -m peftlab -m` process
        sweeps.append(overrides)
        write_trial(tmp_path, "lora", 0.0045, validation=0.75)

    monkeypatch.setattr(protocol_module, "peftlab_sweep", sweep)
    outcome = tune_learning_rate("lora", cfg, ["experiment=conll2003_protocol"], tmp_path)
    assert len(sweeps) == 1 and "trainer.lr=0.0045" in sweeps[0] and "trainer.epochs=1" in sweeps[0]
    assert outcome.rates_tried == [0.000167, 0.0005, 0.0015, 0.0045] and outcome.rates_added == [0.0045]
    assert outcome.tuned_lr == 0.0015 and not outcome.at_grid_edge

    write_summary(tmp_path, cfg, ["experiment=conll2003_protocol"], [outcome])
    table = (tmp_path / "protocol.md").read_text()
    assert "0.0045 (added): 0.7500" in table and "up to 2 more rate(s) beyond it" in table
    assert json.loads((tmp_path / "protocol.json").read_text())["methods"]["lora"]["rates_added"] == [0.0045]


def test_the_grid_extends_downwards_at_most_extend_at_edge_times_and_says_when_still_at_the_edge(tmp_path):
    cfg = compose_config(["experiment=conll2003_protocol", "method=lora", "protocol.search.extend_at_edge=2"])
    scores = {1.86e-05: 0.85, 5.58e-05: 0.80, 0.000167: 0.70, 0.0005: 0.60, 0.0015: None}
    for lr, validation in scores.items():
        write_trial(tmp_path, "lora", lr, validation=validation)
    write_trial(tmp_path, "lora", 6.2e-06, validation=0.9)  # a third step down: beyond the limit, never read
    outcome = tune_learning_rate("lora", cfg, [], tmp_path)  # every rate it asks for exists: nothing runs
    assert outcome.rates_tried == sorted(scores) and outcome.rates_added == [1.86e-05, 5.58e-05]
    assert outcome.tuned_lr == 1.86e-05 and outcome.at_grid_edge


def test_without_extend_at_edge_the_grid_is_the_grid(tmp_path):
    cfg = compose_config(["experiment=conll2003_protocol", "method=lora"])
    for lr, validation in ((0.000167, 0.60), (0.0005, 0.70), (0.0015, 0.80), (0.0045, 0.95)):
        write_trial(tmp_path, "lora", lr, validation=validation)
    outcome = tune_learning_rate("lora", cfg, [], tmp_path)
    assert outcome.rates_tried == [0.000167, 0.0005, 0.0015] and outcome.rates_added == []
    assert outcome.tuned_lr == 0.0015 and outcome.at_grid_edge


def test_a_diverged_trial_whose_validation_score_is_nan_is_never_chosen(tmp_path):
    cfg = compose_config(["experiment=conll2003_protocol", "method=lora"])
    write_trial(tmp_path, "lora", 0.000167, validation=0.70)
    write_trial(tmp_path, "lora", 0.0005, validation=0.60)
    write_trial(tmp_path, "lora", 0.0015, validation=float("nan"))  # ok status, NaN score: json writes NaN
    outcome = tune_learning_rate("lora", cfg, [], tmp_path)
    assert outcome.tuned_lr == 0.000167 and outcome.trials[-1].validation is None


@pytest.mark.parametrize("damage", ["truncated", "key missing"])
def test_a_result_file_that_does_not_fit_the_schema_stops_the_protocol_naming_it_and_the_fix(tmp_path, damage):
    cfg = compose_config(["experiment=conll2003_protocol", "method=lora"])
    for lr in (0.000167, 0.0005):
        write_trial(tmp_path, "lora", lr, validation=0.7)
    broken = write_trial(tmp_path, "lora", 0.0015, validation=0.8)
    if damage == "truncated":
        broken.write_text(broken.read_text()[:100])
    else:
        broken.write_text(json.dumps({key: value for key, value in json.loads(broken.read_text()).items()
                                      if key != "metrics"}))
    with pytest.raises(ProtocolError) as refused:
        tune_learning_rate("lora", cfg, [], tmp_path)
    message = str(refused.value)
    assert str(broken) in message and f"Delete the folder {broken.parent}" in message
    assert ("not valid JSON" if damage == "truncated" else "metrics") in message


def test_a_search_whose_every_trial_failed_says_why(tmp_path):
    cfg = compose_config(["experiment=conll2003_protocol", "method=lora", "protocol.search.lr_factors=[1]"])
    write_trial(tmp_path, "lora", 0.0005, validation=None)
    with pytest.raises(ProtocolError, match="every learning-rate trial of method 'lora' failed.*loss is nan"):
        tune_learning_rate("lora", cfg, [], tmp_path)


@pytest.mark.parametrize(
    "overrides, fragments",
    [
        ([], ["no protocol in this config", "experiment=conll2003_protocol"]),
        (["experiment=sst2_protocol", "protocol.methods=[full,lorra]"], ["protocol.methods names 'lorra'", "lora"]),
        (["experiment=sst2_protocol", "method=lora"], ["set protocol.methods instead"]),
        (["experiment=sst2_protocol", "seed=1"], ["set protocol.seeds instead"]),
        (["experiment=sst2_protocol", "trainer.lr=0.1"], ["set protocol.search.lr_factors instead"]),
        (["experiment=sst2_protocol", "hydra.sweep.dir=x"], ["set protocol.dir instead"]),
        (["-m", "experiment=sst2_protocol"], ["Hydra overrides only"]),
        (["experiment=sst2_protocol", "protocol.seeds=[]"], ["protocol.seeds is empty"]),
        (["experiment=sst2_protocol", "protocol.search.lr_factors=[1,0]"], ["must be factors > 0"]),
        (["experiment=sst2_protocol", "protocol.search.extend_at_edge=-1"], ["extend_at_edge=-1 must be >= 0"]),
        (["experiment=sst2_protocol", "trainer.eval_strategy=no"], ["trainer.eval_strategy='no' takes none"]),
    ],
)
def test_bad_protocol_input_is_refused_before_anything_runs(overrides, fragments, tmp_path, capsys):
    assert main([*overrides, f"protocol.dir={tmp_path / 'out'}"] if overrides else []) == 2
    error = capsys.readouterr().err
    assert all(fragment in error for fragment in fragments), error
    assert not (tmp_path / "out").exists()


def test_help_says_what_the_protocol_does(capsys):
    assert main(["--help"]) == 0
    assert "python -m peftlab.protocol experiment=conll2003_protocol" in capsys.readouterr().out


def test_missing_data_is_refused_before_any_run(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["experiment=sst2_protocol", f"task.data.path={tmp_path / 'nowhere'}", f"protocol.dir={out}"]) == 2
    assert "task.data.path" in capsys.readouterr().err
    assert not out.exists()


def test_a_protocol_folder_resumes_only_the_protocol_that_made_it(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    made_with = ["experiment=sst2_protocol", "task.data.path=/data/a", f"protocol.dir={out}", "protocol.seeds=[0]"]
    (out / "protocol.json").write_text(json.dumps({"overrides": made_with}))
    assert main(["experiment=sst2_protocol", "task.data.path=/data/b", f"protocol.dir={out}"]) == 2
    assert "holds a protocol run with other overrides" in capsys.readouterr().err
    # more trials beyond the grid's edge may be added; a wider grid (other trials) may not
    assert main([*made_with, "protocol.search.extend_at_edge=1"]) == 2  # passes the resume check, then: no data
    assert "holds a protocol run" not in capsys.readouterr().err
    assert main([*made_with, "protocol.search.lr_factors=[1,3,9]"]) == 2
    assert "holds a protocol run with other overrides" in capsys.readouterr().err
