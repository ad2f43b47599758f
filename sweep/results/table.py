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
    """Write rows (sorted by trial) to path via a temporary file and an atomic rename."""
    frame = pd.DataFrame(rows) if rows else pd.DataFrame(columns=COLUMNS)
    frame = frame.sort_values("trial", kind="stable")
    ordered = [c for c in COLUMNS if c in frame.columns]
    frame = frame[ordered + [c for c in frame.columns if c not in ordered]]
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    frame.to_csv(tmp, index=False)
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return frame
