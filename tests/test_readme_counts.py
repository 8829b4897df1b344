"""The README's method table says how many parameters each method trains on MiniLM. Those numbers
are peftlab's own counts (benchmarks/param_counts.py), never typed by hand: this fails when the
README and the code disagree, and says which rows to fix and with what."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tests.conftest import method_names

ROOT = Path(__file__).resolve().parents[1]
COUNT_COLUMN = "method params"


def readme_method_counts() -> dict[str, int]:
    """`method=` -> the number in the `method params` column of the table under "### Methods"."""
    section = (ROOT / "README.md").read_text(encoding="utf-8").split("\n### Methods\n", 1)[1].split("\n#", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    column = header.index(COUNT_COLUMN)
    counts = {}
    for line in lines[2:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        counts[cells[0].strip("`")] = int(cells[column].replace(",", ""))
    return counts


def load_param_counts_script():
    """benchmarks/ is not a package: load the script the README names, so the test checks the
    numbers with the very code that prints them."""
    spec = importlib.util.spec_from_file_location("param_counts", ROOT / "benchmarks" / "param_counts.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_readme_method_table_has_one_row_per_method_file():
    rows, files = set(readme_method_counts()), set(method_names())
    command = f"python benchmarks/param_counts.py {' '.join(load_param_counts_script().README_OVERRIDES)}"
    assert not files - rows, f"add rows to the README's method table for {sorted(files - rows)} (counts: {command})"
    assert not rows - files, f"the README's method table has rows for {sorted(rows - files)}, which conf/method/ lacks"


@pytest.mark.slow
def test_the_readme_method_counts_are_what_peftlab_counts_on_minilm():
    script = load_param_counts_script()
    counted = {method: params.method for method, params in script.method_counts(list(script.README_OVERRIDES)).items()}
    stated = readme_method_counts()
    wrong = {method: f"README {stated[method]:,}, counted {counted[method]:,}"
             for method in counted if stated.get(method) != counted[method]}
    command = f"python benchmarks/param_counts.py {' '.join(script.README_OVERRIDES)}"
    assert not wrong, f"fix the README's method table ({command}): {wrong}"
