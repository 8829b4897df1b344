"""`python -m peftlab.predict RUN_DIR [RUN_DIR ...]`: a trained run answers new inputs.

Input, one example a line: `--text` (repeatable), `--input FILE`, or stdin. Named entity
recognition reads plain text, cut into words as the backbone's tokenizer cuts them, or with
`--words` words separated by spaces, as CoNLL files hold them. Output on stdout, one answer per
input in input order: tags, labels or completions as text (CoNLL columns for tags, tab-separated
columns otherwise), or JSON Lines with `--format jsonl`.

Several RUN_DIRs trained on the same base (backbone, quant and task kind, each a peft adapter of
one type) load the base once and answer with each adapter in turn: one column per run.

The model is rebuilt from the run folder alone (peftlab/trained.py), with the encoding training
and evaluation used, so on the run's test inputs it answers what the run's evaluation scored."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from contextlib import contextmanager
from typing import Any, Iterator, TextIO

from peftlab.errors import DataError, PeftlabError

FORMATS = ("text", "jsonl")


def main(argv: list[str] | None = None) -> int:
    arguments = _parser().parse_args(argv)
    try:
        predict(arguments, sys.stdout)
    except PeftlabError as error:
        print(f"peftlab: error: {error}", file=sys.stderr)
        return 2
    return 0


def predict(arguments: argparse.Namespace, out: TextIO) -> None:
    """Read the runs and the input, then answer in batches, writing each batch as it is done."""
    from tqdm import tqdm

    from peftlab.trained import read_run, serve, tokenizer_for

    repeated = sorted({name for name in arguments.run_dirs if arguments.run_dirs.count(name) > 1})
    if repeated:
        raise DataError(f"{', '.join(repeated)} given more than once: name each run once.")
    runs = [read_run(Path(directory), arguments.pretrained) for directory in arguments.run_dirs]
    lines = read_lines(arguments)
    with quiet_loading():
        tokenizer = tokenizer_for(runs[0])
        examples = [runs[0].task.read_input(line, tokenizer, arguments.words) for line in lines]
        served = serve(runs, tokenizer)
    names = list(arguments.run_dirs)
    batch_size = arguments.batch_size or runs[0].config.trainer.eval_batch_size
    writer = TextWriter(out, names) if arguments.format == "text" else JsonLinesWriter(out, names)
    # a bar where it helps, while a file is read; on stderr, so stdout holds the answers only
    with tqdm(total=len(examples), unit="example", disable=arguments.input is None, file=sys.stderr) as progress:
        for start in range(0, len(examples), batch_size):
            batch = examples[start : start + batch_size]
            answers = [served.answer(index, batch) for index in range(len(runs))]
            for offset, example in enumerate(batch):
                writer.write(lines[start + offset], example, [column[offset] for column in answers])
            out.flush()
            progress.update(len(batch))
    writer.close()


@contextmanager
def quiet_loading() -> Iterator[None]:
    """While a run loads: the base loads with a head that the checkpoint then fills, so
    transformers' report of new head weights would read as a problem, and its loading bars would
    mix with predict's own. Whatever would make the model wrong is raised as an error instead.
    transformers' settings are put back after, for a caller in the same process."""
    from transformers.utils import logging

    verbosity, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)
        if bars:
            logging.enable_progress_bar()


def read_lines(arguments: argparse.Namespace) -> list[str]:
    """The non-blank input lines, without their line ends: from --text, --input or stdin."""
    if arguments.text:
        lines, source = list(arguments.text), "--text"
    elif arguments.input is not None:
        path = Path(arguments.input)
        if not path.is_file():
            raise DataError(f"--input {path}: no such file. Give a text file with one example a line.")
        try:
            lines, source = path.read_text(encoding="utf-8").splitlines(), str(path)
        except UnicodeDecodeError as error:
            raise DataError(f"--input {path} is not UTF-8 text ({error}). Convert it to UTF-8.") from error
    else:
        lines, source = sys.stdin.read().splitlines(), "stdin"
    kept = [line for line in lines if line.strip()]
    if not kept:
        raise DataError(
            f"no input: {source} held no non-blank line. Give one example a line, with --text TEXT, "
            "--input FILE, or on stdin."
        )
    return kept


class TextWriter:
    """Tab-separated columns, one per run, then the input; CoNLL columns for tags (the word,
    then one tag column per run, a blank line after each sentence). With several runs a first
    line `# ...` names the columns."""

    def __init__(self, out: TextIO, names: list[str]) -> None:
        self.out = out
        self.names = names
        self.header_written = len(names) == 1
        self.untagged = 0

    def write(self, line: str, example: dict[str, Any], answers: list[Any]) -> None:
        words = example.get("words")
        if not self.header_written:
            columns = ["word", *self.names] if words is not None else [*self.names, "input"]
            self.out.write("# " + "\t".join(columns) + "\n")
            self.header_written = True
        if words is None:
            self.out.write("\t".join([*(_escaped(answer) for answer in answers), line]) + "\n")
            return
        for position, word in enumerate(words):
            tags = [answer[position] for answer in answers]
            self.untagged += sum(tag is None for tag in tags)
            self.out.write("\t".join([word, *(tag or "" for tag in tags)]) + "\n")
        self.out.write("\n")

    def close(self) -> None:
        if self.untagged:
            print(
                f"peftlab: {self.untagged} word tags left empty: those words lie beyond the run's task.max_length "
                "tokens, so the model never saw them. Split long lines.",
                file=sys.stderr,
            )


class JsonLinesWriter:
    """One JSON object a line: the input `text` (and its `words` for tags), and `predictions`
    by run folder as given on the command line; a word the model never saw has the tag null."""

    def __init__(self, out: TextIO, names: list[str]) -> None:
        self.out = out
        self.names = names

    def write(self, line: str, example: dict[str, Any], answers: list[Any]) -> None:
        record: dict[str, Any] = {"text": line}
        if "words" in example:
            record["words"] = example["words"]
        record["predictions"] = dict(zip(self.names, answers))
        self.out.write(json.dumps(record, ensure_ascii=False) + "\n")

    def close(self) -> None:
        return None


def _escaped(answer: str) -> str:
    """A completion on one line of its column: backslash, tab and line breaks escaped as in JSON."""
    return json.dumps(answer, ensure_ascii=False)[1:-1]


def _positive(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number of at least 1")
    return int(value)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m peftlab.predict",
        description="Answer new inputs with one trained run, or with several runs' adapters on one shared base.",
    )
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="a finished run's folder (it holds result.json)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--text", action="append", help="an input; repeat for more (without it and --input: stdin)")
    source.add_argument("--input", metavar="FILE", help="a UTF-8 file, one input a line (blank lines skipped)")
    parser.add_argument(
        "--words", action="store_true", help="NER: each line is words separated by spaces, tagged as given"
    )
    parser.add_argument("--format", choices=FORMATS, default="text", help="text columns (default) or JSON Lines")
    parser.add_argument("--batch-size", type=_positive, help="inputs per batch (default: the run's trainer.eval_batch_size)")
    parser.add_argument(
        "--pretrained", metavar="FOLDER_OR_HUB_ID",
        help="where this machine has the run's backbone weights, if not where the run read them",
    )
    return parser


if __name__ == "__main__":
    sys.exit(main())
