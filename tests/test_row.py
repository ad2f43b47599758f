"""The result row is defined once (sweep/results/row.py): the CSV, the analysis and the docs
follow it."""

from __future__ import annotations

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
