"""The bad-input catalogue: one row per way a user can get a run wrong (config, data, run folder,
command line), each run as the command line runs it and each held to the same four promises:

- the exit code: 2 for what peftlab refuses, 1 for what Hydra refuses while composing the config;
- the message names the cause (the key, file and line, value) and the fix;
- no traceback;
- nothing partial is left behind: files that were there are untouched (a finished run's
  result.json and .hydra/ byte for byte), and the only new things are Hydra's log and .hydra/
  and, for a run that started, a result.json that says `failed` with the cause. Never a
  checkpoint, resume checkpoints, or a half-written file.

The rows call `peftlab.__main__.main` in this process with `sys.argv` set, the way
`python -m peftlab ARGS` calls it (Hydra parses the same argv, runs the same callbacks, exits
with the same codes): a subprocess per row would spend minutes importing torch. `isolated_cli`
puts back the global state a run changes (logging, Hydra's singleton). tests/test_cli.py runs
the real subprocess for a few of the same inputs."""

from __future__ import annotations

import json
import logging
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from peftlab.errors import USER_ERROR_EXIT_CODE
from peftlab.result import Result
from tests.conftest import TINY_CLASSIFIED, TINY_SENTENCES, write_conll, write_csv

HYDRA_EXIT_CODE = 1  # Hydra's own, for a config it cannot compose
HYDRA_OWN = {".hydra", "__main__.log"}  # what Hydra writes into a run folder it starts


@dataclass(frozen=True)
class Ground:
    """What the test built for a row: the tiny model, tiny data folders, the run folder."""

    tmp: Path
    backbone: Path
    ner: Path
    cls: Path

    @property
    def run_dir(self) -> Path:
        return self.tmp / "run"

    def ner_run(self, *more: str) -> list[str]:
        """A tiny token-classification run, then `more` (a later value of a key wins)."""
        return ["task=conll2003", f"task.data.path={self.ner}", *self._tiny(), *more]

    def cls_run(self, *more: str) -> list[str]:
        return ["task=classification", f"task.data.path={self.cls}", *self._tiny(), *more]

    def _tiny(self) -> list[str]:
        return [f"backbone.pretrained={self.backbone}", "trainer=smoke", "method=lora", f"hydra.run.dir={self.run_dir}"]


@dataclass(frozen=True)
class Row:
    args: Callable[[Ground], list[str]]
    cause: tuple[str, ...]  # fragments that name what is wrong
    fix: tuple[str, ...]  # fragments that name what to do
    exit_code: int = USER_ERROR_EXIT_CODE
    setup: Callable[[Ground], None] = field(default=lambda ground: None)


def overwrite(path: Path, text: str | bytes) -> None:
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))


def finished_run(ground: Ground, status: str = "ok") -> None:
    ground.run_dir.mkdir()
    Result(status=status, task="conll2003", dataset="tiny_ner", method="lora", backbone="minilm", quant="none", seed=0,
           error=None if status == "ok" else "tiny_ner/train.txt:3: boom").write(ground.run_dir)
    (ground.run_dir / ".hydra").mkdir()
    (ground.run_dir / ".hydra" / "overrides.yaml").write_text("- method=lora\n")


def unfinished_run(ground: Ground) -> None:
    checkpoint = ground.run_dir / "trainer" / "checkpoint-20"
    checkpoint.mkdir(parents=True)
    (checkpoint / "trainer_state.json").write_text(json.dumps({"global_step": 20}))


def ner_file_with_line(line_number: int, line: str) -> Callable[[Ground], None]:
    def setup(ground: Ground) -> None:
        lines = (ground.ner / "train.txt").read_text().splitlines()
        lines[line_number - 1] = line
        overwrite(ground.ner / "train.txt", "\n".join(lines))

    return setup


ROWS = {
    # --- config: refused by Hydra while it composes (exit 1) ---------------------------------
    "wrong type": Row(lambda g: g.ner_run("trainer.batch_size=abc"), ("trainer.batch_size", "'abc'"), ("Integer",),
                      HYDRA_EXIT_CODE),
    "value not among the choices": Row(lambda g: g.ner_run("quant=nf4", "quant.quant_type=nf5"),
                                       ("quant.quant_type", "nf5"), ("nf4, fp4",), HYDRA_EXIT_CODE),
    "unknown method": Row(lambda g: g.ner_run("method=lorra"), ("method/lorra",), ("lora", "head_only"),
                          HYDRA_EXIT_CODE),
    "unknown task": Row(lambda g: g.ner_run("task=nerr"), ("task/nerr",), ("conll2003", "wnut17"), HYDRA_EXIT_CODE),
    "a bool that is not one": Row(lambda g: g.ner_run("resume=maybe"), ("resume", "'maybe'"), ("valid bool",),
                                  HYDRA_EXIT_CODE),
    # Hydra's advice for a typo (+key) leads to the next row, which names the key meant
    "typo in a key": Row(lambda g: g.ner_run("trainer.batch_sise=8"), ("batch_sise", "not in 'TrainerConfig'"),
                         ("+trainer.batch_sise=8",), HYDRA_EXIT_CODE),
    # --- config: refused by peftlab before anything loads (exit 2) ---------------------------
    "typo in a key added with +": Row(lambda g: g.ner_run("+trainer.batch_sise=8"), ("trainer.batch_sise",),
                                      ("did you mean trainer.batch_size",)),
    "number below its minimum": Row(lambda g: g.ner_run("trainer.batch_size=0"), ("trainer.batch_size=0",),
                                    ("must be >= 1",)),
    "neither epochs nor steps": Row(lambda g: g.ner_run("trainer.epochs=0", "trainer.max_steps=-1"),
                                    ("trainer.epochs=0",), ("must be > 0", "trainer.max_steps > 0")),
    "negative checkpoint interval": Row(lambda g: g.ner_run("trainer.save_every=-5"), ("trainer.save_every=-5",),
                                        ("must be >= 0",)),
    "method value out of range": Row(lambda g: g.ner_run("method.r=0"), ("method.r=0", "'lora'"),
                                     ("must be >= 1", "conf/method/lora.yaml")),
    "encoding Python does not know": Row(lambda g: g.ner_run("task.data.encoding=utf9"),
                                         ("task.data.encoding='utf9'",), ("utf-8, latin-1",)),
    "option TrainingArguments refuses": Row(lambda g: g.ner_run("+trainer.extra.optim=adamw_nonsense"),
                                            ("TrainingArguments", "adamw_nonsense"), ("trainer settings",)),
    "backbone folder that is not there": Row(lambda g: g.ner_run(f"backbone.pretrained={g.tmp / 'no_model'}"),
                                             ("no_model' does not exist",), ("Point it at a model folder",)),
    "backbone folder without a model": Row(lambda g: g.ner_run(f"backbone.pretrained={g.ner}"),
                                           ("tiny_ner' is a folder without config.json",),
                                           ("the folder that holds config.json",)),
    "resume and overwrite together": Row(lambda g: g.ner_run("resume=true", "overwrite=true"),
                                         ("resume=true and overwrite=true",), ("keep one",)),
    # --- data (exit 2) -----------------------------------------------------------------------
    "data folder missing": Row(lambda g: g.ner_run(f"task.data.path={g.tmp / 'nowhere'}"), ("nowhere", "does not exist"),
                               ("Point task.data.path at the folder",)),
    "a file where the data folder should be": Row(lambda g: g.ner_run(f"task.data.path={g.ner / 'train.txt'}"),
                                                  ("train.txt", "is not a directory"), ("task.data.path",)),
    "no training file": Row(lambda g: g.ner_run(), ("no training file",), ("rename the training file",),
                            setup=lambda g: (g.ner / "train.txt").rename(g.ner / "tarin.txt")),
    "empty training file": Row(lambda g: g.ner_run(), ("train.txt (the train split) has no sentences",),
                               ("Put the data in that file or remove it",),
                               setup=lambda g: overwrite(g.ner / "train.txt", "")),
    "file not in UTF-8": Row(lambda g: g.ner_run(), ("train.txt:1: not valid UTF-8",), ("task.data.encoding=latin-1",),
                             setup=lambda g: overwrite(g.ner / "train.txt", "M\u00fcnchen B-LOC\n".encode("latin-1"))),
    "file in another encoding than task.data.encoding": Row(
        lambda g: g.ner_run("task.data.encoding=utf-16"), ("train.txt:1: not valid utf-16",),
        ("Set task.data.encoding to the file's encoding",),
        setup=lambda g: overwrite(g.ner / "train.txt", b"anna B-PER\n")),
    "CoNLL line with one column": Row(lambda g: g.ner_run(), ("train.txt:5", "single column"),
                                      ("Fix or remove that line",), setup=ner_file_with_line(5, "brokenline")),
    "tag that is not IOB2": Row(lambda g: g.ner_run(), ("train.txt:3", "'S-PER'"), ("convert IOBES",),
                                setup=ner_file_with_line(3, "anna S-PER")),
    "label in dev the training split lacks": Row(
        lambda g: g.cls_run(), ("'validation' split", "['surprise']"), ("task.labels=[...]",),
        setup=lambda g: write_csv(g.cls / "dev.csv", ["text", "label"], [*TINY_CLASSIFIED, ("odd one", "surprise")])),
    "a single label": Row(lambda g: g.cls_run(), ("1 label(s)",), ("task.labels=[...]", "task.data.columns.label"),
                          setup=lambda g: write_csv(g.cls / "train.csv", ["text", "label"],
                                                    [(text, "person") for text, _ in TINY_CLASSIFIED])),
    "column the config names is missing": Row(lambda g: g.cls_run("task.data.columns.text=sentence"),
                                              ("task.data.columns.text='sentence'", "['text', 'label']"), ("train.csv",)),
    "CSV row with an unclosed quote": Row(
        lambda g: g.cls_run(), ("dev.csv:18",), ("Fix or remove that row",),
        setup=lambda g: overwrite(g.cls / "dev.csv", (g.cls / "dev.csv").read_text() + '"an unclosed quote,person\n')),
    "label names listed twice": Row(lambda g: g.cls_run("task.labels=[person,person]"), ("['person']",),
                                    ("more than once",)),
    "held-out text for an encoder task": Row(
        lambda g: g.cls_run(f"forgetting.texts={g.cls / 'train.csv'}"), ("forgetting.texts=", "task=classification"),
        ("Set forgetting.texts=null", "use a generation task")),
    "format peftlab cannot read": Row(lambda g: g.ner_run("task.data.format=xml"), ("task.data.format='xml'",),
                                      ("known formats",)),
    # --- run folder and command line (exit 2) --------------------------------------------------
    "a file where the run folder should be": Row(
        lambda g: g.ner_run(f"hydra.run.dir={g.tmp / 'taken' / 'run'}"), ("taken is a file",), ("hydra.run.dir=DIR",),
        setup=lambda g: overwrite(g.tmp / "taken", "a file")),
    "finished run would be overwritten": Row(lambda g: g.ner_run(), ("holds a finished run",),
                                             ("overwrite=true", "resume=true"), setup=finished_run),
    "unfinished run would be started over": Row(lambda g: g.ner_run(), ("unfinished run", "checkpoint-20"),
                                                ("resume=true to continue", "overwrite=true"), setup=unfinished_run),
    "resume of a run that never started": Row(lambda g: g.ner_run("resume=true"), ("holds no run to resume",),
                                              ("hydra.run.dir=FOLDER", "leave out resume=true")),
    "resume of a run that failed before a checkpoint": Row(
        lambda g: g.ner_run("resume=true"), ("failed before its first checkpoint", "train.txt:3: boom"),
        ("without resume=true",), setup=lambda g: finished_run(g, status="failed")),
    "resume of a sweep that never ran": Row(lambda g: ["-m", *g.ner_run("resume=true", "seed=0,1",
                                                                         f"hydra.sweep.dir={g.tmp / 'sweep'}")],
                                            ("sweep folder", "does not exist"), ("hydra.sweep.dir=FOLDER",)),
    "loss that turns nan": Row(lambda g: g.ner_run("method=full", "trainer.lr=1e30", "trainer.warmup=0"),
                               ("training stopped at step", "nan"), ("Lower trainer.lr",)),
}


@pytest.fixture
def ground(tmp_path: Path, tiny_backbone: Path) -> Ground:
    ner, cls = tmp_path / "tiny_ner", tmp_path / "tiny_cls"
    ner.mkdir()
    cls.mkdir()
    for name in ("train", "dev", "test"):
        write_conll(ner / f"{name}.txt", TINY_SENTENCES)
        write_csv(cls / f"{name}.csv", ["text", "label"], TINY_CLASSIFIED)
    return Ground(tmp_path, tiny_backbone, ner, cls)


@pytest.fixture
def isolated_cli(monkeypatch: pytest.MonkeyPatch):
    """call(args) -> exit code, as `python -m peftlab ARGS` would end; afterwards the logging
    setup, transformers' logging, the warnings hook and Hydra's singleton are as they were."""
    import transformers
    from hydra.core.global_hydra import GlobalHydra

    from peftlab.__main__ import main

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    showwarning = warnings.showwarning

    def call(args: list[str]) -> int:
        monkeypatch.setattr(sys, "argv", ["peftlab", *args])
        try:
            main()
        except SystemExit as ended:
            return ended.code
        return 0

    yield call
    for handler in root.handlers:
        if handler not in handlers:
            handler.close()
    root.handlers[:], root.level = handlers, level
    logging.captureWarnings(False)
    warnings.showwarning = showwarning
    transformers.logging.disable_propagation()
    transformers.logging.enable_default_handler()
    GlobalHydra.instance().clear()


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in folder.rglob("*") if path.is_file()}


@pytest.mark.parametrize("row", [pytest.param(row, id=name) for name, row in ROWS.items()])
def test_bad_input_exits_naming_cause_and_fix_and_leaves_nothing_partial(row, ground, isolated_cli, capsys):
    row.setup(ground)
    before = snapshot(ground.tmp)
    code = isolated_cli(row.args(ground))
    captured = capsys.readouterr()
    said = captured.out + captured.err

    assert code == row.exit_code, said
    assert "Traceback" not in said
    for fragment in (*row.cause, *row.fix):
        assert fragment in said, f"{fragment!r} not in:\n{said}"
    if row.exit_code == USER_ERROR_EXIT_CODE:
        assert said.count("peftlab: error:") == 1, "the error is said once, as one paragraph"
    after = snapshot(ground.tmp)
    changed = [path for path in before if after.get(path) != before[path]]
    assert changed == [], "a file that was there changed"
    for path in sorted(set(after) - set(before)):
        assert Path(path).parts[0] == ground.run_dir.name, f"{path} written outside the run folder"
        inside = Path(*Path(path).parts[1:])
        if str(inside) == "result.json":
            result = json.loads(after[path])
            assert result["status"] == "failed" and row.cause[0] in result["error"]
        else:
            assert inside.parts[0] in HYDRA_OWN, f"{path} left behind"


def test_the_catalogue_covers_config_data_and_the_run_folder():
    assert len(ROWS) >= 25
    assert {row.exit_code for row in ROWS.values()} == {HYDRA_EXIT_CODE, USER_ERROR_EXIT_CODE}
