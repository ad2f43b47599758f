"""Which trials are best: methods, dense baselines, Pareto fronts, knees, the best trial.

Every function takes a frame of `sweep.analysis.load.load` (or any frame with its columns) and
follows the directions each sweep was run with (`objectives(frame).front()`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from sweep.analysis.load import FRONT, UNRECORDED, complete, objectives
from sweep.errors import UserError

METHOD_COLUMNS = ("model", "regularizer", "prune")
# A trial `--max-drop` measures its drop from: (near) zero exact zeros and no pruning.
DENSE_SPARSITY = 0.01
DENSE_RULE = f"complete, sparsity < {DENSE_SPARSITY:g}, prune=none"


def direction_word(maximize: bool) -> str:
    """A column's direction as the summary and plots name it: "max" or "min"."""
    return "max" if maximize else "min"


def knee_rule(cols: Sequence[str], maximize: Sequence[bool]) -> str:
    """How `knee` picks its point, in words."""
    ideal = ", ".join(f"{direction_word(m)} {c}" for c, m in zip(cols, maximize))
    return f"the front's point nearest the ideal ({ideal}), each axis min-max scaled over the front"


KNEE_RULE = knee_rule(FRONT, (True, True))


def methods(frame: pd.DataFrame, by: Sequence[str] | None = None) -> pd.Series:
    """Each row's method label: the values of the `by` columns, joined by ' / '. Default: the
    sweep where the frame holds several, and each of model, regularizer, prune that varies
    within a sweep (so one sweep per method is labelled by its name alone). Raises UserError
    where a `by` column is not in the frame."""
    if by:
        missing = [c for c in by if c not in frame.columns]
        if missing:
            raise UserError(
                f"--by {','.join(missing)}: no such column; use one of "
                f"{', '.join(c for c in frame.columns if c != 'csv')}"
            )
    else:
        varies = [c for c in METHOD_COLUMNS if c in frame
                  and frame.groupby("sweep")[c].nunique(dropna=False).gt(1).any()]  # fmt: skip
        by = ["sweep"] * (frame["sweep"].nunique() > 1 or not varies) + varies
    return frame[list(by)].astype("string").fillna("-").agg(" / ".join, axis=1)


def _dense(frame: pd.DataFrame) -> pd.Series:
    """True for complete trials with no regularizer and no pruning."""
    dense = complete(frame) & (frame["regularizer"].eq("none").fillna(False)
                               if "regularizer" in frame else False)  # fmt: skip
    return dense & (frame["prune"].fillna("none").eq("none") if "prune" in frame else True)


def near_dense(frame: pd.DataFrame) -> pd.Series:
    """True for the trials `sweep.analyze --max-drop` may measure its drop from (DENSE_RULE):
    complete, under DENSE_SPARSITY exact zeros, and not pruned (`prune` none or unrecorded),
    whatever their regularizer (a weak L1 that zeroes almost nothing counts as dense)."""
    sparse = frame["sparsity"].lt(DENSE_SPARSITY).fillna(False)
    unpruned = frame["prune"].fillna("none").eq("none") if "prune" in frame else True
    return complete(frame) & sparse & unpruned & frame["val_acc"].notna()


def baseline_run(csv: str | Path) -> float | None:
    """Validation accuracy of the dense baseline run an objective=within_drop sweep trains
    (baseline/metrics.json beside its results.csv `csv`), or None where it has none."""
    run = Path(csv).parent / "baseline" / "metrics.json"
    return float(json.loads(run.read_text())["val_acc"]) if run.is_file() else None


def baselines(frame: pd.DataFrame) -> dict[str, float]:
    """Validation accuracy of the dense models the frame knows of: its trials with no
    regularizer and no pruning (their mean, per sweep), and the baseline run that an
    objective=within_drop sweep trains (baseline/metrics.json beside its CSV)."""
    known = {}
    for sweep, rows in frame.groupby("sweep", sort=False):
        dense = _dense(rows)
        if dense.any():
            known[f"{sweep}: dense trials"] = float(rows.loc[dense, "val_acc"].mean())
        run = baseline_run(rows["csv"].iloc[0])
        if run is not None:
            known[f"{sweep}: baseline run"] = run
    return known


def pareto_front(
    frame: pd.DataFrame,
    cols: Sequence[str] = FRONT,
    maximize: Sequence[bool] = (True, True),
    by: str | None = None,
) -> pd.Series:
    """True for the non-dominated complete trials: no other trial is at least as good in every
    column and strictly better in one. Exact duplicates of a front point are on the front too.
    by="sweep": one front per sweep of a combined frame."""
    if by is not None:
        parts = [pareto_front(g, cols, maximize) for _, g in frame.groupby(by, sort=False)]
        return pd.concat(parts).reindex(frame.index)
    ok = complete(frame) & frame[list(cols)].notna().all(axis=1)
    signs = np.array([1.0 if m else -1.0 for m in maximize])
    values = frame.loc[ok, list(cols)].to_numpy(dtype=float) * signs
    geq = (values[:, None, :] >= values[None, :, :]).all(axis=2)
    gt = (values[:, None, :] > values[None, :, :]).any(axis=2)
    dominated = (geq & gt).any(axis=0)  # [i, j]: i dominates j
    front = pd.Series(False, index=frame.index)
    front[ok[ok].index] = ~dominated
    return front


def fronts(frame: pd.DataFrame) -> pd.Series:
    """True for the rows on their method's front (`method` column, else their sweep's), each
    of its own sweep's front columns in their directions (Objective.front)."""
    by = "method" if "method" in frame else "sweep"
    parts = [pareto_front(g, *objectives(g).front()) for _, g in frame.groupby(by, sort=False)]
    return pd.concat(parts).reindex(frame.index)


def knee(
    frame: pd.DataFrame, cols: Sequence[str] = FRONT, maximize: Sequence[bool] = (True, True)
) -> int:
    """Index label of the knee of the front of `cols` (each maximized or not): see knee_rule.
    Ties go to the point best in the first column. Raises UserError where no complete trial
    has both columns."""
    front = frame[pareto_front(frame, cols, maximize)]
    if front.empty:
        raise UserError(f"no complete trial has {' and '.join(cols)}; nothing to pick a knee from")
    signs = np.array([1.0 if m else -1.0 for m in maximize])
    vals = front[list(cols)].to_numpy(dtype=float) * signs  # larger is better on each axis
    span = vals.max(axis=0) - vals.min(axis=0)
    scaled = (vals - vals.min(axis=0)) / np.where(span > 0, span, 1.0)
    distance = np.sqrt(((1.0 - scaled) ** 2).sum(axis=1))
    order = np.lexsort((-vals[:, 0], distance))  # ties: the better in the first column
    return int(front.index[order[0]])


def best(frame: pd.DataFrame) -> tuple[int, str]:
    """The best trial of one sweep's rows by its objective, in the sweep's direction (see
    objective_of), and how it was chosen: a single objective's best value (the `objective`
    column), else the knee of the front of the sweep's objectives. Raises UserError where no
    trial completed."""
    done = frame[complete(frame)]
    if done.empty:
        raise UserError(f"no complete trials in {frame['csv'].iloc[0]}; see their run.log")
    objective = objectives(frame)
    names = ", ".join(objective.metrics)
    if len(objective.metrics) == 1 and "objective" in done and done["objective"].notna().any():
        up = objective.directions[0] == "maximize"
        index = done["objective"].idxmax() if up else done["objective"].idxmin()
        verb = "maximized" if up else "minimized"
        guess = "" if objective is not UNRECORDED else "; the direction was not recorded"
        how = f"{direction_word(up)} objective ({names}, the value the sweep {verb}{guess})"
        return int(index), how
    cols, maximize = objective.front()
    axes = " and ".join(f"{c} ({direction_word(m)})" for c, m in zip(cols, maximize))
    return knee(done, cols, maximize), f"knee of the Pareto front of {axes} (multi-objective sweep)"
