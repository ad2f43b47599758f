"""Feature selection: for sweeps of tables (their trials wrote features.csv, see
sweep.sparsity.features), the regularization path by number of selected features, the chosen
trial's features, and features.png. Sweeps of images give nothing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from sweep.analysis.fronts import knee
from sweep.analysis.load import complete, objectives, trial_dir
from sweep.analysis.plots import save_figure
from sweep.analysis.summary import reproduce

FEATURE_KNEE_RULE = (
    "the knee of val_acc vs fewest selected features, scaled as for the front's knee"
)
PATH_COLUMNS = ["trial", "l1_lambda", "active_inputs", "val_acc", "test_acc", "sparsity"]


def _chosen_trial(sweep: pd.DataFrame, done: pd.DataFrame, trial: int | None) -> tuple[int, str]:
    """The index of the trial whose features are listed, and how it was chosen: `trial` where
    `done` (the sweep's complete rows with active_inputs) has it, else the knee of (val_acc,
    fewest active_inputs)."""
    if trial is not None and (done["trial"] == trial).any():
        return int(done.index[done["trial"] == trial][0]), "--trial"
    fewer = done.assign(fewer_inputs=-done["active_inputs"])
    up = objectives(sweep).maximize("val_acc")  # a sweep that minimized it: min
    index = knee(fewer, ("val_acc", "fewer_inputs"), (up, True))
    return index, FEATURE_KNEE_RULE if up else FEATURE_KNEE_RULE.replace("val_acc", "min val_acc")


def _features_csv(row: pd.Series) -> Path:
    """Where the trial of `row` wrote features.csv (it may not have)."""
    path = trial_dir(row) / "features.csv"
    if not path.is_file():  # repeats > 1: each seed has its own; the first seed's is shown
        path = path.parent / f"seed_{int(row['seed'])}" / "features.csv"
    return path


def feature_report(
    frame: pd.DataFrame, trial: int | None = None
) -> tuple[str, dict[str, tuple[int, pd.DataFrame]]]:
    """For each sweep whose chosen trial wrote features.csv: the regularization path (accuracy
    by number of selected features, across l1_lambda) as markdown, and sweep -> (index of the
    chosen trial, its features.csv). The chosen trial: `trial` for the first sweep, else the
    knee of (val_acc, fewest active_inputs). Sweeps of images give nothing."""
    parts, chosen = [], {}
    for i, (name, sweep) in enumerate(frame.groupby("sweep", sort=False)):
        if "active_inputs" not in sweep:
            continue
        done = sweep[complete(sweep) & sweep["active_inputs"].notna()]
        if done.empty:
            continue
        index, how = _chosen_trial(sweep, done, trial if i == 0 else None)
        path = _features_csv(frame.loc[index])
        if not path.is_file():
            continue
        table = pd.read_csv(path)
        chosen[name] = (index, table)
        row = frame.loc[index]
        path_rows = done.sort_values(["active_inputs", "l1_lambda"], ascending=[False, True])
        kept = table[table["selected"]].sort_values("weight_norm", ascending=False)
        names = ", ".join(f"{f} ({w:.3g})" for f, w in zip(kept["feature"], kept["weight_norm"]))
        shown = [c for c in PATH_COLUMNS if c in done]
        parts += [
            f"## {name}: feature selection ({len(table)} input features)",
            "\nregularization path, by selected features (active_inputs):\n",
            path_rows[shown].to_markdown(index=False, floatfmt=".4g"),
            f"\nchosen trial {row['trial']} ({how}): l1_lambda {row['l1_lambda']:.4g}, "
            f"val_acc {row['val_acc']:.4f}, test_acc {row['test_acc']:.4f}, "
            f"{len(kept)} of {len(table)} features, by first-layer weight norm:\n",
            names or "(none)",
            f"\nreproduce: {reproduce(row)}",
            "",
        ]
    return "\n".join(parts), chosen


def plot_features(
    frame: pd.DataFrame, chosen: dict[str, tuple[int, pd.DataFrame]], out: Path
) -> None:
    """features.png: validation and test accuracy against the number of selected features,
    one point per trial coloured by log10 l1_lambda, the chosen trial named. `chosen` is
    feature_report's; nothing is drawn where it is empty."""
    if not chosen:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = frame[complete(frame) & frame["sweep"].isin(list(chosen))]
    log_lam = np.log10(done["l1_lambda"].clip(lower=1e-12))
    fig, ax = plt.subplots(figsize=(5.5, 4), dpi=100)
    for marker, (name, sweep) in zip("osD^v<>p*", done.groupby("sweep", sort=False)):
        ax.scatter(sweep["active_inputs"], sweep["test_acc"], marker="x", color="0.45", lw=0.8,
                   label=f"{name} test_acc")  # fmt: skip
        points = ax.scatter(
            sweep["active_inputs"], sweep["val_acc"], c=log_lam[sweep.index], cmap="viridis",
            vmin=log_lam.min(), vmax=log_lam.max(), marker=marker, edgecolor="k", lw=0.3,
            label=f"{name} val_acc",
        )  # fmt: skip
        index, table = chosen[name]
        row = frame.loc[index]
        ax.annotate(
            f"trial {row['trial']}: {int(table['selected'].sum())} features",
            (row["active_inputs"], row["val_acc"]), xytext=(5, -12), textcoords="offset points",
            fontsize=8,
        )  # fmt: skip
    fig.colorbar(points, ax=ax, label="log10 l1_lambda")
    ax.set(xlabel="selected features (active_inputs)", ylabel="accuracy",
           title="accuracy vs selected features")  # fmt: skip
    save_figure(fig, ax, out / "features.png", plt)
