"""The front over every measured model and its hypervolume, per sweep and over all sweeps.

A sweep's points are its points.csv (each path trial's levels, each plain trial's final model;
sweep.results.points), else its complete trials' rows. The hypervolume is sweep.results'
2-D one, of x = -log10(weights kept) and y = accuracy.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sweep.analysis.load import complete
from sweep.analysis.plots import save_figure
from sweep.results import points
from sweep.results.hypervolume import kept_axis

HV_AXES = "x = -log10(weights kept) = -log10(1 - sparsity), y = accuracy"


def sweep_points(frame: pd.DataFrame) -> pd.DataFrame:
    """Every point of every sweep in `frame` (load's), with a `sweep` column: its points.csv
    where the sweep wrote one, else its complete trials' rows (no times: such a sweep has no
    hypervolume-against-time curve)."""
    parts = []
    for name, sweep in frame.groupby("sweep", sort=False):
        csv = Path(sweep["csv"].iloc[0]).with_name(points.NAME)
        if csv.is_file():
            part = pd.read_csv(csv)
        else:
            part = sweep[complete(sweep)].assign(kind="trial", finished=pd.NA, seconds=np.nan)
        parts.append(part.assign(sweep=name))
    return pd.concat(parts, ignore_index=True).dropna(subset=["val_acc", "sparsity"])


def hypervolume_report(pts: pd.DataFrame, reference: Sequence[float] = points.REFERENCE) -> str:
    """Markdown: each sweep's front over its points and all sweeps' together, with the
    hypervolumes of validation accuracy and of the same points' test accuracy against
    `reference`, and the front over all points as a table."""
    rows = []
    groups = [*pts.groupby("sweep", sort=False), ("all sweeps", pts)]
    for name, part in groups:
        f = points.front_figures(part.reset_index(drop=True), reference)
        kinds = part["kind"].value_counts()
        rows.append({"sweep": name, "trials": part.groupby(["sweep", "trial"]).ngroups,
                     "path points": int(kinds.get("path", 0)),
                     "trial points": int(kinds.get("trial", 0)), "front": len(f["front"]),
                     "val hypervolume": f["hypervolume"],
                     "test hypervolume": f["test_hypervolume"]})  # fmt: skip
    every = pts.reset_index(drop=True)
    front = every.loc[points.front_figures(every, reference)["front"]]
    columns = ["sweep", "trial", "kind", "level", "sparsity", "val_acc", "test_acc",
               "archive_bytes", "overrides"]  # fmt: skip
    return "\n".join([
        "## front over every point, and its hypervolume",
        f"\n{HV_AXES}; reference point ({reference[0]:g}, {reference[1]:g}) (dense, chance on "
        "10 classes); the front is chosen on validation accuracy, and its test hypervolume is "
        "of the same points' test accuracy\n",
        pd.DataFrame(rows).to_markdown(index=False, floatfmt=".4f"),
        f"\nfront over all points ({len(front)}):\n",
        front[[c for c in columns if c in front]].to_markdown(index=False, floatfmt=".4g"),
        "",
    ])  # fmt: skip


def plot_hypervolume(pts: pd.DataFrame, out: Path) -> None:
    """front_points.png: every point's validation accuracy against -log10(weights kept), a
    colour per sweep (paths' levels as dots, plain trials as squares) with its front as a
    staircase; hypervolume_vs_time.png: each sweep's front's hypervolume at each finished
    trial against seconds since its first trial started (sweeps with points.csv only)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    _plot_front_points(pts, out, plt)
    timed = pts[pts["seconds"].notna()] if "seconds" in pts else pts.iloc[:0]
    if not timed.empty:
        _plot_hypervolume_vs_time(timed, out, plt)


def _plot_front_points(pts: pd.DataFrame, out: Path, plt: Any) -> None:
    """front_points.png: see plot_hypervolume."""
    colours = plt.get_cmap("tab10").colors
    fig, ax = plt.subplots(figsize=(5.5, 4), dpi=100)
    for i, (name, part) in enumerate(pts.groupby("sweep", sort=False)):
        part = part.reset_index(drop=True)
        x = part["sparsity"].map(kept_axis)
        for kind, marker in (("path", "o"), ("trial", "s")):
            mine = part["kind"] == kind
            ax.scatter(x[mine], part.loc[mine, "val_acc"], color=colours[i % 10], s=12,
                       marker=marker, alpha=0.6, edgecolor="k", lw=0.2)  # fmt: skip
        best = points.front_figures(part)["front"]
        ax.step(x[best], part.loc[best, "val_acc"], where="post", color=colours[i % 10],
                label=f"{name} ({points.front_figures(part)['hypervolume']:.4f})")  # fmt: skip
    ax.set(xlabel="-log10(weights kept): 1 = 90% zeros, 2 = 99%",
           ylabel="validation accuracy", title="front over every point (hypervolume)")  # fmt: skip
    save_figure(fig, ax, out / "front_points.png", plt)


def _plot_hypervolume_vs_time(timed: pd.DataFrame, out: Path, plt: Any) -> None:
    """hypervolume_vs_time.png from the points that have `seconds`: see plot_hypervolume."""
    colours = plt.get_cmap("tab10").colors
    fig, ax = plt.subplots(figsize=(5.5, 4), dpi=100)
    for i, (name, part) in enumerate(timed.groupby("sweep", sort=False)):
        h = points.history(part)
        ax.step(h["seconds"], h["hypervolume"], where="post", color=colours[i % 10], marker="o",
                ms=3, label=f"{name} validation")  # fmt: skip
        ax.step(h["seconds"], h["test_hypervolume"], where="post", color=colours[i % 10],
                ls="--", lw=0.8, label=f"{name} test")  # fmt: skip
    ax.set(xlabel="seconds since the sweep's first trial started", ylabel="hypervolume",
           title="the front's hypervolume as each sweep ran")  # fmt: skip
    save_figure(fig, ax, out / "hypervolume_vs_time.png", plt)
