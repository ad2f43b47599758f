"""The bridge from a job to its Optuna trial: what a finished job leaves in the study.

A row is stored whole (user attribute `row`, what results.csv is rebuilt from) and, for tools
such as optuna-dashboard that sort and plot only numeric user attributes, each of its numeric
figures again as a float attribute of its own name. The job's validation accuracies per epoch
become the trial's intermediate values (its learning curve). The sweeper records them after
the job returns, so a job never writes to the study, whatever launcher ran it.
"""

from __future__ import annotations

import math
from numbers import Real

import optuna

ROW_ATTR = "row"


def figures(row: dict) -> dict[str, float]:
    """The row's finite numbers (not booleans), as floats."""
    return {
        k: float(v)
        for k, v in row.items()
        if isinstance(v, Real) and not isinstance(v, bool) and math.isfinite(v)
    }


def record(trial: optuna.Trial, row: dict, curve: list, single_objective: bool) -> None:
    """Store the row and its figures in the trial, and `curve` ([epoch, val_acc], ...) as its
    intermediate values (Optuna keeps those for single-objective studies only)."""
    trial.set_user_attr(ROW_ATTR, row)
    for key, value in figures(row).items():
        trial.set_user_attr(key, value)
    if single_objective:
        for step, value in curve:
            trial.report(float(value), int(step))
