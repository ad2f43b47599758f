"""Read sweeps back: best trial, accuracy-vs-sparsity Pareto front, knee, plots.

    python -m sweep.analyze outputs/sweeps/NAME [MORE ...] [--out DIR] [--by COLUMN[,COLUMN]]
                            [--trial N] [--no-mask] [--kept-axis]
                            [--max-drop POINTS [--pick bytes|sparsity|flops]
                             [--reference VAL_ACC | --reference-trial N]]

Trials are split into methods, each with its own front, knee, table and plot markers: by
default by the sweep (where several are read) and by whichever of model, regularizer and
prune vary within a sweep; `--by` names the columns instead. The dense baseline (rows with
no regularizer and no pruning, or a within_drop sweep's baseline run) is drawn for reference.

Best trial, fronts, knees, plots and their wording follow the objectives the sweep was run
with (`objective.metrics` and `objective.direction`: from optimization_results.yaml, else from
a trial's .hydra/config.yaml; see `objective_of`). A sweep of one objective has its best
trial by that objective in its direction, and its front of that metric against sparsity; a
sweep of several has the front of its own metrics, in their directions, and its knee.

`--max-drop POINTS` names the configuration to use (sweep.analysis.choice): the smallest
(archive bytes), sparsest or fastest (FLOPs) complete trial whose validation accuracy is at
most POINTS points (of 100) below the best dense trial (sparsity < 0.01, prune=none) or a
reference given, as the command that reproduces it, with its test accuracy and size; the last
section of the summary, and choice.csv.

Works from results.csv and the files beside it (the trials' model.pt for the input mask): no
Hydra, no Optuna storage. In a notebook: `load(paths)`, `pareto_front(frame)`, `knee(frame)`,
`input_mask(frame, index)`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from sweep.analysis.choice import PICKS, Want
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


def _parser() -> argparse.ArgumentParser:
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
    choice = parser.add_argument_group("the configuration to use")
    choice.add_argument(
        "--max-drop",
        type=float,
        metavar="POINTS",
        help="name the configuration to use: at most POINTS points of val_acc (1.0: 0.01) "
        "below the best dense trial (sparsity < 0.01, prune=none) or the reference given",
    )
    choice.add_argument(
        "--pick",
        choices=list(PICKS),
        help="within the drop, the fewest archive_bytes, the highest sparsity or the fewest "
        "flops (default: bytes where the trials have archive_bytes, else sparsity)",
    )
    given = choice.add_mutually_exclusive_group()
    given.add_argument(
        "--reference", type=float, metavar="VAL_ACC", help="measure the drop from this val_acc"
    )
    given.add_argument(
        "--reference-trial", type=int, metavar="N", help="measure it from the first sweep's trial N"
    )
    return parser


def _want(args: argparse.Namespace) -> Want | None:
    """The choice asked for (None: no --max-drop). Raises UserError for a choice's option
    given without --max-drop."""
    if args.max_drop is None:
        given = [f"--{k.replace('_', '-')}" for k in ("pick", "reference", "reference_trial")
                 if getattr(args, k) is not None]  # fmt: skip
        if given:
            raise UserError(f"{given[0]} needs --max-drop; e.g. --max-drop 1.0 {given[0]} ...")
        return None
    return Want(args.max_drop, args.pick, args.reference, args.reference_trial)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m sweep.analyze PATHS [--out DIR] [--trial N] [--max-drop POINTS ...]`: the
    summary on stdout, files in DIR; 0 on success (nothing within --max-drop included), 2 with
    one line on bad input."""
    args = _parser().parse_args(argv)
    try:
        want = _want(args)
        print(analyze(args.paths, args.out, args.trial, not args.no_mask, args.by, args.kept_axis,
                      want))  # fmt: skip
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
