"""The result row is defined once (sweep/results/row.py): the CSV, the analysis and the docs
follow it."""

from __future__ import annotations

import csv
import re

import pandas as pd

from conftest import REPO
from sweep import analyze
from sweep.results import row
from sweep.results import table as results


def test_the_docs_column_table_is_the_definitions():
    doc = (REPO / "docs" / "outputs.md").read_text()
    table = re.search(r"<!-- row:start -->\n(.*?)\n<!-- row:end -->", doc, re.S)
    assert table is not None, "docs/outputs.md lost its row markers"
    assert table.group(1) == row.markdown(), "run `python -m sweep.results.row` and paste its table"


def test_every_column_has_a_type_and_a_meaning_and_one_name():
    names = [c.name for c in row.DEFINITION]
    assert len(names) == len(set(names))
    assert all(c.meaning.strip() for c in row.DEFINITION)
    assert row.order()[:3] == ["trial", "status", "error"]
    assert row.order().index("val_acc_std") == row.order().index("val_acc") + 1
    assert set(row.CHOICES) == {"data", "model", "regularizer", "optimizer", "schedule", "prune"}


def test_the_csv_and_the_analysis_follow_the_definition(small_sweep, tmp_path):
    cwd, frame, _ = small_sweep
    known = [c for c in frame.columns if c in row.BY_NAME]
    assert known == [c for c in row.order() if c in frame.columns]  # the definition's order
    assert set(frame.columns) <= set(row.order())  # nothing a trial reports is undefined
    loaded = analyze.load([cwd / "outputs" / "sweeps" / "small"])
    for name, dtype in row.dtypes().items():
        if name in loaded:
            assert str(loaded[name].dtype) == dtype, name
    # a row with an extra key (a user callback's figure) is kept, after the defined columns
    out = tmp_path / "results.csv"
    results.write_atomic([{"trial": 1, "mine": 2.0, "status": "complete"}], out)
    assert list(pd.read_csv(out).columns) == ["trial", "status", "mine"]


def test_results_csv_is_renamed_into_place_without_an_fsync(tmp_path, monkeypatch):
    """write_atomic renames a whole file into place (a reader never sees half of it) and no
    longer fsyncs it (issue 33: results.csv is rebuilt from the study at every start)."""
    import os

    synced = []
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd))
    out = tmp_path / "results.csv"
    out.write_text("trial,status\n0,complete\n")
    before = os.stat(out).st_ino
    results.write_atomic([{"trial": 1, "status": "complete"}, {"trial": 0, "status": "pruned"}],
                         out)  # fmt: skip
    assert synced == [] and os.stat(out).st_ino != before  # a new file, renamed over the old
    assert pd.read_csv(out).to_dict("list") == {"trial": [0, 1], "status": ["pruned", "complete"]}
    assert [p.name for p in tmp_path.iterdir()] == ["results.csv"]  # no temporary file left


def test_results_csv_reads_back_as_the_frame_pandas_would_have_written(tmp_path):
    """write_atomic writes with the csv module, not a DataFrame (issue 33): read back, every
    kind of cell a row holds is what pandas' own to_csv gives (gaps, NaN, whole numbers
    beside gaps, bools, quotes, commas and line breaks in a string, tiny and huge floats)."""
    rows = [
        {"trial": 2, "status": "pruned", "stopped_at": 35, "val_acc": float("nan"),
         "error": 'said "no", twice\nthen stopped', "l1_lambda": 1.2345678901234567e-05},
        {"trial": 0, "status": "complete", "stopped_at": None, "val_acc": 0.9721,
         "pareto": True, "overrides": "a=1,b=[2,3]", "nnz": 10**12, "mine": 3.0e300},
        {"trial": 1, "status": "failed", "pareto": False, "val_acc": 0.1, "mine": -0.0},
    ]  # fmt: skip
    ours, pandas_own = tmp_path / "results.csv", tmp_path / "pandas.csv"
    results.write_atomic(rows, ours)
    frame = pd.DataFrame(rows).sort_values("trial", kind="stable")
    first = [c for c in results.COLUMNS if c in frame]
    frame[first + [c for c in frame if c not in first]].to_csv(pandas_own, index=False)
    pd.testing.assert_frame_equal(pd.read_csv(ours), pd.read_csv(pandas_own), check_exact=True)
    header, *cells = list(csv.reader(ours.open()))
    assert [c[header.index("stopped_at")] for c in cells] == ["", "", "35"]  # not 35.0
    assert [c[header.index("val_acc")] for c in cells] == ["0.9721", "0.1", ""]  # NaN: a gap
    results.write_atomic([], ours)  # no trial yet: the defined columns, no row
    assert list(pd.read_csv(ours).columns) == results.COLUMNS and len(pd.read_csv(ours)) == 0
