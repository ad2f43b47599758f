"""What the sweep optimizes: values computed from a run's metrics, per `objective` config."""

from __future__ import annotations

import math

from omegaconf import DictConfig


def values(metrics: dict, objective: DictConfig) -> list[float]:
    """One value per entry of objective.direction; nan for a run that did not complete."""
    if metrics["status"] != "complete":
        return [math.nan] * len(objective.direction)
    if "max_drop" in objective:
        if objective.baseline_val_acc is None:  # the baseline run itself: nothing to compare
            return [math.nan]
        floor = objective.baseline_val_acc - objective.max_drop
        if metrics["val_acc"] < floor:
            # Infeasible runs score below every feasible one (>= 0) but still rank by how
            # close they came, so the sampler is led back towards the accuracy floor.
            return [metrics["val_acc"] - floor]
    # None: a figure the run could not measure (flops of a model compact cannot follow)
    return [math.nan if metrics[m] is None else float(metrics[m]) for m in objective.metrics]
