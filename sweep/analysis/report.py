"""The whole analysis of `python -m sweep.analyze`: the summary text and every file it writes.

`analyze` reads the sweeps, splits them into methods and puts the summary together (methods,
feature selection, the front over every point, what mattered and, where asked for, the
configuration to use, `choice`); then it writes pareto.csv, choice.csv (where asked for),
summary.md and the plots into a staging directory and moves them into place, so a failure
part-way leaves no half-written analysis.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from sweep.analysis import speed
from sweep.analysis.choice import Want, choice_frame, choice_text, choose
from sweep.analysis.features import feature_report, plot_features
from sweep.analysis.fronts import fronts, methods
from sweep.analysis.hypervolume import hypervolume_report, plot_hypervolume, sweep_points
from sweep.analysis.importance import plot_what_mattered, what_mattered
from sweep.analysis.load import DIRECTIONS_COLUMN, METRICS_COLUMN, csv_path, load
from sweep.analysis.plots import input_mask, plot
from sweep.analysis.summary import summarize
from sweep.errors import UserError


def _masks(
    frame: pd.DataFrame, knees: dict[str, int], trial: int | None
) -> dict[str, tuple[int, np.ndarray]]:
    """method -> (index, input_mask) of the trials whose input masks are drawn: each method's
    knee, and `trial` of the first sweep in place of its method's knee. Raises UserError where
    the first sweep has no such trial or a trial shown saved no weights."""
    # A model whose first layer is a convolution has no per-input mask (active_inputs
    # is empty for it): it is left out rather than drawn from a later layer.
    shown = {m: i for m, i in knees.items() if pd.notna(frame.loc[i].get("active_inputs"))}
    if trial is not None:
        first = frame["sweep"].iloc[0]
        match = frame.index[(frame["sweep"] == first) & (frame["trial"] == trial)]
        if match.empty:
            raise UserError(f"no trial {trial} in {first}; see its results.csv")
        shown[frame.loc[match[0], "method"]] = int(match[0])
    return {name: (index, input_mask(frame, index)) for name, index in shown.items()}


def analyze(
    paths: Sequence[str],
    out: Path | None,
    trial: int | None,
    mask: bool,
    by: Sequence[str] | None = None,
    kept_axis: bool = False,
    want: Want | None = None,
) -> str:
    """Everything the command does; files appear in `out` only once all of them are made.
    `paths`: sweep directories or results.csv files; `out`: where to write (None: beside the
    first sweep's results.csv); `trial`: the first sweep's trial for the input mask and the
    feature list (None: the knee); `mask`: draw input masks; `by`: the columns that split
    trials into methods (see fronts.methods); `kept_axis`: see plots.plot; `want`: the
    configuration to choose (choice.choose: a last section and choice.csv; None: none).
    Returns the summary and a last line naming `out`. Raises UserError on bad input, before
    writing."""
    frame = load(paths)
    frame["method"] = methods(frame, by)
    picked = choose(frame, want) if want is not None else None  # refusals before any work
    text, knees = summarize(frame)
    out = out or csv_path(Path(paths[0])).parent
    # Read the weights before anything is written: a missing model.pt must leave no trace.
    masks = _masks(frame, knees, trial) if mask else {}
    features_text, chosen = feature_report(frame, trial)  # tables only: see the end
    text += "\n" + features_text if features_text else ""
    pts = sweep_points(frame)  # every point, paths' levels too: the front's hypervolume
    text += "\n" + hypervolume_report(pts) if len(pts) else ""
    mattered, importances, study, objective = what_mattered(frame)  # parameter importances: the end
    text += "\n" + mattered if mattered else ""
    text = text.rstrip("\n") + "\n\n" + choice_text(frame, picked) if picked else text
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out, prefix=".analyze-") as tmp:
        staging = Path(tmp)
        front = frame[fronts(frame)]
        front.drop(columns=["csv", METRICS_COLUMN, DIRECTIONS_COLUMN]).to_csv(
            staging / "pareto.csv", index=False
        )
        if picked:
            choice_frame(frame, picked).to_csv(staging / "choice.csv", index=False)
        plot_features(frame, chosen, staging)
        (staging / "summary.md").write_text(text + "\n")
        plot(frame, knees, staging, masks, kept_axis)
        if len(pts):
            plot_hypervolume(pts, staging)
        speed.plot_speed(frame, staging)  # accuracy vs FLOPs and vs measured time
        if importances:
            plot_what_mattered(study, importances, objective, staging)
        for made in staging.iterdir():
            shutil.move(str(made), out / made.name)
    tables = "pareto.csv, choice.csv" if picked else "pareto.csv"
    return text + f"\nwrote {tables}, summary.md and plots to {out}"
