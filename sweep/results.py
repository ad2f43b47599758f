"""results.csv: one row per finished trial, written atomically so readers never see half a file."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

# The order a reader meets them in; any extra keys a run reports follow these.
COLUMNS = [
    "trial", "status", "l1_lambda", "l2_lambda", "group_lambda", "regularizer", "groups",
    "model", "data", "optimizer",
    "schedule", "prune", "prune_sparsity", "prune_scope", "prune_rounds", "prune_epochs",
    "prune_lr_scale", "seed", "repeats", "epochs", "val_acc", "val_acc_std", "test_acc",
    "test_acc_std", "pruned_val_acc", "pruned_test_acc", "sparsity", "sparsity_std",
    "sparsity_tol", "tol", "sparsity_params", "nnz", "n_params",
    "active_inputs", "n_inputs", "groups_removed", "compact_shape", "flops", "flops_ratio",
    "train_loss", "trained_val_acc", "trained_test_acc",
    "trained_sparsity", "trained_sparsity_tol", "trained_nnz", "trained_active_inputs",
    "trained_train_loss", "oneshot_val_acc", "oneshot_test_acc", "train_seconds", "objective",
    "pareto", "overrides", "run_dir",
]  # fmt: skip


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
