"""Read sweeps back: best trial, accuracy-vs-sparsity Pareto front, knee, plots.

    python -m sweep.analyze outputs/sweeps/NAME [MORE ...] [--out DIR] [--by COLUMN[,COLUMN]]
                            [--trial N] [--no-mask] [--kept-axis]

Trials are split into methods, each with its own front, knee, table and plot markers: by
default by the sweep (where several are read) and by whichever of model, regularizer and
prune vary within a sweep; `--by` names the columns instead. The dense baseline (rows with
no regularizer and no pruning, or a within_drop sweep's baseline run) is drawn for reference.

Best trial, fronts, knees, plots and their wording follow the objectives the sweep was run
with (`objective.metrics` and `objective.direction`: from optimization_results.yaml, else from
a trial's .hydra/config.yaml; see `objective_of`). A sweep of one objective has its best
trial by that objective in its direction, and its front of that metric against sparsity; a
sweep of several has the front of its own metrics, in their directions, and its knee.

Works from results.csv and the files beside it (the trials' model.pt for the input mask): no
Hydra, no Optuna storage. In a notebook: `load(paths)`, `pareto_front(frame)`, `knee(frame)`,
`input_mask(frame, index)`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from sweep.analysis.fronts import best, knee, methods, pareto_front
from sweep.analysis.importance import what_mattered
from sweep.analysis.load import DIRECTIONS_COLUMN, METRICS_COLUMN, load, trial_dir
from sweep.analysis.plots import input_mask
from sweep.analysis.report import analyze
from sweep.errors import UserError

# The work is done in sweep.analysis (load, fronts, summary, plots, features, hypervolume,
# importance, speed; report.analyze puts them together). These names stay importable from here
# because others call them by this path: the docstring above and docs/outputs.md (notebooks),
# sweep.export (load, best, pareto_front, and this module's old private _trial_dir) and tests
# (analyze, load, pareto_front, what_mattered and the objective columns).
__all__ = ["DIRECTIONS_COLUMN", "METRICS_COLUMN", "analyze", "best", "input_mask", "knee",
           "load", "main", "methods", "pareto_front", "what_mattered"]  # fmt: skip
_trial_dir = trial_dir


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m sweep.analyze PATHS [--out DIR] [--trial N]`: the summary on stdout, files
    in DIR; 0 on success, 2 with one line on bad input."""
    parser = argparse.ArgumentParser(prog="python -m sweep.analyze", description=__doc__)
    parser.add_argument("paths", nargs="+", help="sweep directories or results.csv files")
    parser.add_argument("--out", type=Path, help="where to write (default: the first sweep)")
    parser.add_argument(
        "--trial",
        type=int,
        help="the first sweep's trial for the input mask and the feature list (default: the knee)",
    )
    parser.add_argument("--no-mask", action="store_true", help="skip the input-mask image")
    parser.add_argument(
        "--by",
        type=lambda v: [c for c in v.split(",") if c],
        help="the columns that split trials into methods, e.g. regularizer,prune "
        "(default: the sweep, and model/regularizer/prune where they vary within one)",
    )
    parser.add_argument(
        "--kept-axis",
        action="store_true",
        help="plot accuracy against the fraction of weights kept (log scale), not sparsity",
    )
    args = parser.parse_args(argv)
    try:
        print(analyze(args.paths, args.out, args.trial, not args.no_mask, args.by, args.kept_axis))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
