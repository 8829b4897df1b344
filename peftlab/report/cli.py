"""`python -m peftlab.report DIR`: read, aggregate, write report.md, report.html, results.csv and
the plots, and print where they went. `write_report` is the same from Python."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from peftlab.report.aggregate import Thresholds, build_report
from peftlab.report.comparison import DEFAULT_BIMODAL_RATIO, DEFAULT_CONVERGED_DELTA
from peftlab.report.continual import is_continual, write_continual_report
from peftlab.report.efficiency import efficiency_blocks, efficiency_views, write_efficiency
from peftlab.report.plots import write_plots
from peftlab.report.quantization import quantization_groups
from peftlab.report.read import NoResultsError, read_runs
from peftlab.report.renderers import to_html, to_markdown
from peftlab.report.results_csv import results_rows, write_results_csv
from peftlab.report.tables import report_blocks

MARKDOWN_FILE, HTML_FILE, CSV_FILE = "report.md", "report.html", "results.csv"


def write_report(directory: Path, out: Path | None = None, thresholds: Thresholds = Thresholds()) -> dict[str, Path]:
    """Read every result.json under `directory` and write the report into `out` (default:
    `directory`). Returns what was written by name (markdown, html, csv, and pareto and curves
    when drawn; efficiency and efficiency_csv where runs differ in training-set size). Raises
    NoResultsError when the folder is missing or holds no result.json."""
    directory = Path(directory)
    out = directory if out is None else Path(out)
    runs, unreadable = read_runs(directory)
    report = build_report(directory, runs, unreadable, thresholds)
    out.mkdir(parents=True, exist_ok=True)
    plots, plot_notes = write_plots(report.groups, out)
    quantization = quantization_groups(runs)
    views = efficiency_views(runs)
    efficiency, efficiency_notes = write_efficiency(views, out)
    blocks = report_blocks(
        report, quantization, regenerate_command(directory, out, thresholds), plots, plot_notes,
        efficiency_blocks(views, efficiency, efficiency_notes),
    )
    written = {"markdown": out / MARKDOWN_FILE, "html": out / HTML_FILE, "csv": out / CSV_FILE}
    written["markdown"].write_text(to_markdown(blocks), encoding="utf-8")
    written["html"].write_text(to_html(blocks), encoding="utf-8")
    write_results_csv(results_rows(report), written["csv"])
    return {**written, **plots, **efficiency}


def regenerate_command(directory: Path, out: Path, thresholds: Thresholds = Thresholds()) -> str:
    command = ["python", "-m", "peftlab.report", str(directory)]
    if out.resolve() != directory.resolve():
        command += ["--out", str(out)]
    if thresholds.converged_delta != DEFAULT_CONVERGED_DELTA:
        command += ["--converged-delta", f"{thresholds.converged_delta:g}"]
    if thresholds.bimodal_ratio != DEFAULT_BIMODAL_RATIO:
        command += ["--bimodal-ratio", f"{thresholds.bimodal_ratio:g}"]
    return shlex.join(command)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m peftlab.report",
        description="Compare methods from the result.json files under a folder (a run or a sweep); for a "
                    "continual-learning folder (it holds continual.json), its accuracy matrices and forgetting.",
    )
    parser.add_argument("directory", type=Path, help="folder searched recursively for result.json")
    parser.add_argument("--out", type=Path, default=None, help="where to write the report (default: DIRECTORY)")
    parser.add_argument(
        "--converged-delta", type=float, default=DEFAULT_CONVERGED_DELTA, metavar="POINTS",
        help="flag a run 'not converged' when its last validation score beats the best before its last two "
             f"evaluations by more than this, in metric points x100 (default {DEFAULT_CONVERGED_DELTA:g})",
    )
    parser.add_argument(
        "--bimodal-ratio", type=float, default=DEFAULT_BIMODAL_RATIO, metavar="RATIO",
        help="flag a method 'bimodal' when its lowest run scores below RATIO x its highest "
             f"(default {DEFAULT_BIMODAL_RATIO:g})",
    )
    arguments = parser.parse_args(argv)
    if arguments.converged_delta < 0 or not 0 < arguments.bimodal_ratio <= 1:
        parser.error("--converged-delta must be >= 0 and --bimodal-ratio in (0, 1]")
    thresholds = Thresholds(arguments.converged_delta, arguments.bimodal_ratio)
    try:
        if is_continual(arguments.directory):  # a `python -m peftlab.continual` folder: its own report
            written = write_continual_report(arguments.directory, arguments.out)
        else:
            written = write_report(arguments.directory, arguments.out, thresholds)
    except NoResultsError as error:
        print(f"peftlab.report: error: {error}", file=sys.stderr)
        return 2
    for path in written.values():
        print(f"wrote {path}")
    return 0
