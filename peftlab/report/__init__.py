"""`python -m peftlab.report DIR [--out OUTDIR]`: the comparison a sweep was run for, read from
its result.json files only (never a model), so it can be regenerated wherever the files are copied.

One table per set of runs that differ only in method and seed (comparison.py: task, dataset and
its fingerprint, model source, subsample, data seed, max length, quantization; numbers from
different ones are never pooled), one row per method, or per method and variant where its runs'
training settings differ (aggregate.variant_labels): trainable parameters, the primary metric
as mean ± sample std over seeds, the gap to full fine-tuning, memory, time and checkpoint size.
Beside the numbers, what a reader must know before acting on them: a Δ against full fine-tuning
trained on another budget, a run still improving when it stopped, seeds that split into learned
and not, the runs' own notes and the examples actually used. Where a method ran on more than one
quantized base (`quant`), one more table per method compares them with the float base; where runs
differ in training-set size (`task.shots_per_class`, `task.max_train_samples`), a data-efficiency
table and efficiency.png/.csv put the metric against the training examples. Writes
report.md, a self-contained report.html, results.csv (one row per run) and, with matplotlib (the
`report` extra), pareto.png and curves.png.

The package, in the order a report is made:
- read.py: result.json files -> typed Results (peftlab/result.py; unusable files set aside
  with the reason)
- comparison.py: which runs may share a table, and the checks on a number (budget,
  convergence, bimodal seeds)
- aggregate.py: groups and rows, pure numbers, so the tests check numbers, not text
- quantization.py: the same runs by quantized base, where a method ran on more than one
- efficiency.py: the same runs by training-set size (data efficiency), where they differ in it
- tables.py: the document (headings, tables, notes) built from the groups
- renderers.py: that document as Markdown and as self-contained HTML
- results_csv.py, plots.py: results.csv, pareto.png and curves.png
- cli.py: `write_report` and the command line
- continual.py: the report of a `python -m peftlab.continual` folder (continual.json: accuracy
  matrices, backward transfer, forgetting, heat map), which the command line writes for a folder
  that holds one

matplotlib is imported only when a plot is drawn: a Hydra callback can import this package at
the end of a sweep for free."""

from peftlab.report.aggregate import Report, Thresholds, build_report
from peftlab.report.cli import main, write_report
from peftlab.report.read import NoResultsError, read_runs
from peftlab.report.tables import error_summary

__all__ = [
    "NoResultsError", "Report", "Thresholds", "build_report", "error_summary", "main", "read_runs", "write_report",
]
