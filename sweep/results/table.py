"""results.csv: one row per finished trial, written atomically so readers never see half a file."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

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


def write_atomic(rows: list[dict], path: Path) -> pd.DataFrame:
    """Write rows (sorted by trial) to path via a temporary file and an atomic rename: a
    reader, or a process killed at any point, sees the old file or the new one whole.

    No fsync: a sweep's results.csv is rebuilt from its study after every trial and at every
    start (sweep/search/plan.py), so what an OS crash or a power cut could lose of it (the
    last rename) comes back from the study; the study's own SQLite commits make the same
    trade (sweep/_compat/rdb.py, WAL with synchronous=NORMAL). An fsync was 7-20 ms of every
    trial on this project's machine (issue 33)."""
    frame = pd.DataFrame(rows) if rows else pd.DataFrame(columns=COLUMNS)
    frame = frame.sort_values("trial", kind="stable")
    ordered = [c for c in COLUMNS if c in frame.columns]
    frame = frame[ordered + [c for c in frame.columns if c not in ordered]]
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    frame.to_csv(tmp, index=False)
    os.replace(tmp, path)
    return frame
