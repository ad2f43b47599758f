"""results.csv: one row per finished trial, written atomically so readers never see half a file."""

from __future__ import annotations

import csv
import fcntl
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sweep.results import row

# The order a reader meets them in (sweep/results/row.py); any extra keys a run reports follow
# these.
COLUMNS = row.order()


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive lock beside `path`, so sweep processes sharing a study take turns."""
    with open(path.with_name(path.name + ".lock"), "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def missing(value: Any) -> bool:
    """None or NaN: what pandas calls missing, an empty cell in a CSV file."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def cell(value: Any) -> Any:
    """A value as a CSV cell, as pandas' `to_csv` writes it: a `missing` one as an empty
    cell, anything else as `csv` writes it (`str`: a float's shortest repr, True/False)."""
    return "" if missing(value) else value


def write_rows(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], path: Path) -> None:
    """Write `rows` under the header `columns` (a key a row lacks: an empty cell) to `path`
    via a temporary file and an atomic rename: a reader, or a process killed at any point,
    sees the old file or the new one whole.

    The standard library's `csv` (QUOTE_MINIMAL, "\\n" line ends: pandas' defaults), not a
    DataFrame: `pd.read_csv` reads back the frame pandas would have written (a whole number
    in a column with gaps is written "3" where pandas writes "3.0", read as 3.0 by both).
    results.csv and points.csv are rewritten after every trial: 4 ms at 42 trials (each
    trial's row built once, sweep/search/study.py ResultFiles) against 13-16 ms with pandas
    (benchmarks/trial_cost.py, issue 33). No fsync: see `write_atomic`."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", newline="") as fh:
        out = csv.writer(fh, lineterminator="\n")
        out.writerow(columns)
        out.writerows([cell(r.get(c)) for c in columns] for r in rows)
    os.replace(tmp, path)


def ordered(rows: Sequence[Mapping[str, Any]], first: Sequence[str] = ()) -> list[str]:
    """The columns of `rows`: those of `first` that any row has, in that order, then every
    other key in the order the rows first name it (as `pd.DataFrame(rows)` orders them)."""
    seen = dict.fromkeys(k for r in rows for k in r)
    return [c for c in first if c in seen] + [c for c in seen if c not in set(first)]


def write_atomic(rows: list[dict], path: Path) -> None:
    """Write rows (sorted by trial; the defined columns in the definition's order, a run's
    extra keys after them) to path, whole or not at all (`write_rows`).

    No fsync: a sweep's results.csv is rebuilt from its study after every trial and at every
    start (sweep/search/plan.py), so what an OS crash or a power cut could lose of it (the
    last rename) comes back from the study; the study's own SQLite commits make the same
    trade (sweep/_compat/rdb.py, WAL with synchronous=NORMAL). An fsync was 7-20 ms of every
    trial on this project's machine (issue 33)."""
    rows = sorted(rows, key=lambda r: r["trial"])  # stable: sorted() keeps ties' order
    write_rows(rows, ordered(rows, COLUMNS) if rows else COLUMNS, path)
