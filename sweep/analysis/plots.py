"""The analysis' figures of accuracy against sparsity, bytes and l1_lambda, and of the inputs
a trial's first layer keeps.

accuracy_vs_sparsity.png   each method's trials and front on its sweep's front columns, the
                           knee marked, the dense baselines as dashed lines
accuracy_vs_kilobytes.png  validation accuracy against each trial's compressed archive
lambda.png                 accuracy and sparsity against l1_lambda
input_mask_<method>.png    the non-zero outgoing weights of each input (`input_mask`)

`plot_front_by_method` and `save_figure` are shared with the speed plots (sweep.analysis.speed).
matplotlib is imported inside `plot`, with the Agg backend: reading sweeps needs no display.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sweep.analysis.fronts import baselines, direction_word, pareto_front
from sweep.analysis.load import FRONT, complete, objectives, trial_dir
from sweep.analysis.summary import reproduce
from sweep.errors import UserError

MARKERS = "osD^v<>p*h"  # one per method, in turn with the tab10 colours
FrontAxes = tuple[tuple[str, str], tuple[bool, bool]]  # (y, x) columns, each maximized or not


def file_name(label: str) -> str:
    """`label` (a method or metric name) as a file name: runs of other characters than
    letters, digits, '.', '_' and '-' become one '_'."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("_")


def input_mask(frame: pd.DataFrame, index: int) -> np.ndarray:
    """Non-zero outgoing weights of each input in the first layer of trial `frame.loc[index]`
    (from its model.pt), in the image's shape: 8x8 for digits, 28x28 for MNIST; (1, n) for n
    inputs that are not a square. Raises UserError where the trial saved no weights."""
    import torch

    row = frame.loc[index]
    weights = trial_dir(row) / "model.pt"
    if not weights.is_file():
        raise UserError(
            f"trial {row['trial']} of {row['sweep']} has no saved weights ({weights}); "
            f"rerun it with `{reproduce(row)}`, or pass --no-mask"
        )
    state = torch.load(weights, weights_only=True, map_location="cpu")
    first = state.get("fc1.weight", next(v for v in state.values() if v.dim() == 2))
    kept = (first != 0).sum(dim=0).numpy()
    side = math.isqrt(kept.size)
    return kept.reshape((side, side) if side * side == kept.size else (1, kept.size))


def plot(
    frame: pd.DataFrame,
    knees: dict[str, int],
    out: Path,
    masks: dict[str, tuple[int, np.ndarray]] | None = None,
    kept_axis: bool = False,
) -> None:
    """accuracy_vs_sparsity.png (a colour, marker and front per method, dense baselines as
    dashed lines), lambda.png, and input_mask_<method>.png for each method in `masks`
    (method -> (index of the trial shown, its input_mask)). kept_axis: x is the fraction of
    weights kept, 1 - sparsity, on a log scale, which spreads out the 90-99% zeros region.
    Each method's points and front are drawn on its sweep's front columns, in their
    directions (Objective.front: val_acc against sparsity, both maximized, by default)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if "method" not in frame:
        frame = frame.assign(method=frame["sweep"])
    done = frame[complete(frame)]
    _plot_accuracy_vs_sparsity(done, frame, knees, out, plt, kept_axis)
    if "archive_bytes" in done and done["archive_bytes"].notna().any():
        _plot_bytes(done, frame, out, plt)
    _plot_lambda(done, out, plt)
    _plot_input_masks(frame, masks or {}, out, plt)


def _plot_accuracy_vs_sparsity(
    done: pd.DataFrame,
    frame: pd.DataFrame,
    knees: dict[str, int],
    out: Path,
    plt: Any,
    kept_axis: bool,
) -> None:
    """accuracy_vs_sparsity.png: each method of `done` (complete trials) on its front
    columns, with the dense baselines of `frame` where the y axis is val_acc."""
    colours = plt.get_cmap("tab10").colors
    fig, ax = plt.subplots(figsize=(5.5, 4), dpi=100)
    axes: list[FrontAxes] = []
    for i, (name, trials) in enumerate(done.groupby("method", sort=False)):
        style = {"color": colours[i % 10], "marker": MARKERS[i % 10]}
        axes.append(_draw_method(ax, frame, trials, knees[name], name, style, kept_axis))
    (y_col, x_col), maximize = axes[0] if axes else (FRONT, (True, True))
    if y_col == "val_acc":  # the dense models' accuracy, for reference
        for i, (label, acc) in enumerate(baselines(frame).items()):
            ax.axhline(acc, color="0.4", ls=(0, (4, 2 + i)), lw=0.8, label=label)
    names = {"sparsity": "sparsity (exact zeros)", "val_acc": "validation accuracy"}
    ax.set(xlabel=f"{names.get(x_col, x_col)}, {direction_word(maximize[1])}imized",
           ylabel=f"{names.get(y_col, y_col)}, {direction_word(maximize[0])}imized",
           title=f"{y_col} vs {x_col}, one front per method")  # fmt: skip
    if kept_axis and x_col == "sparsity":
        ax.set(xscale="log", xlabel="weights kept, 1 - sparsity (exact zeros), log scale")
        ax.invert_xaxis()  # sparser to the right, as on the linear axis
    save_figure(fig, ax, out / "accuracy_vs_sparsity.png", plt)


def _draw_method(
    ax: Any,
    frame: pd.DataFrame,
    trials: pd.DataFrame,
    knee_index: int,
    name: str,
    style: dict[str, Any],
    kept_axis: bool,
) -> FrontAxes:
    """One method's trials, front (a staircase labelled `name`) and knee on `ax`, in `style`
    (its colour and marker), on its sweep's front columns; returns those columns and their
    directions."""
    (y_col, x_col), maximize = objectives(trials).front()
    x = frame[x_col]
    if kept_axis and x_col == "sparsity":
        x = (1.0 - x).clip(lower=1e-4)
    ax.scatter(x[trials.index], trials[y_col], color=style["color"], marker=style["marker"],
               edgecolor="k", lw=0.3, s=22, alpha=0.8)  # fmt: skip
    front = trials[pareto_front(trials, (y_col, x_col), maximize)].sort_values(x_col)
    # a staircase from each front point towards the worse x: "pre" when x is maximized
    ax.step(x[front.index], front[y_col], where="pre" if maximize[1] else "post",
            color=style["color"], label=name)  # fmt: skip
    ax.annotate("knee", (x[knee_index], frame.loc[knee_index, y_col]), xytext=(4, 4),
                textcoords="offset points", fontsize=7, color=style["color"])  # fmt: skip
    return (y_col, x_col), maximize


def _plot_lambda(done: pd.DataFrame, out: Path, plt: Any) -> None:
    """lambda.png: each method's validation and test accuracy (top) and exact and
    tolerance sparsity (bottom) against l1_lambda, log x."""
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(5.5, 5), dpi=100, sharex=True)
    for name, trials in done.sort_values("l1_lambda").groupby("method", sort=False):
        top.plot(trials["l1_lambda"], trials["val_acc"], "o-", ms=3, label=f"{name} val")
        top.plot(trials["l1_lambda"], trials["test_acc"], "x--", ms=3, label=f"{name} test")
        bottom.plot(trials["l1_lambda"], trials["sparsity"], "o-", ms=3, label=f"{name} exact")
        if "sparsity_tol" in trials:
            bottom.plot(trials["l1_lambda"], trials["sparsity_tol"], "x--", ms=3,
                        label=f"{name} |w|<=tol")  # fmt: skip
    top.set(xscale="log", ylabel="accuracy")
    bottom.set(xscale="log", xlabel="l1_lambda", ylabel="sparsity")
    top.legend(fontsize=7)
    bottom.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "lambda.png")
    plt.close(fig)


def _plot_input_masks(
    frame: pd.DataFrame, masks: dict[str, tuple[int, np.ndarray]], out: Path, plt: Any
) -> None:
    """input_mask_<method>.png for each method in `masks` (method -> (index of the trial
    shown, its input_mask)): the mask as an image, its kept inputs counted in the title."""
    for name, (index, kept) in masks.items():
        row = frame.loc[index]
        fig, ax = plt.subplots(figsize=(4, 3.6), dpi=100)
        image = ax.imshow(kept, cmap="magma")
        fig.colorbar(image, ax=ax, label="non-zero outgoing weights")
        title = f"{name} trial {row['trial']}: {(kept > 0).sum()}/{kept.size} inputs kept"
        ax.set_title(title, fontsize=8)
        ax.set_axis_off()
        fig.tight_layout()
        fig.savefig(out / f"input_mask_{file_name(name)}.png")
        plt.close(fig)


def _plot_bytes(done: pd.DataFrame, frame: pd.DataFrame, out: Path, plt: Any) -> None:
    """accuracy_vs_kilobytes.png: each method's validation accuracy against the bytes of its
    trials' compressed archives (model.l1z, log axis), with its front (accuracy maximized,
    bytes minimized) and the dense baselines; test accuracy of the archives as crosses."""
    plot_front_by_method(
        done, frame, "archive_bytes", out / "accuracy_vs_kilobytes.png", plt, scale=1000,
        crosses="archive_test_acc", xlabel="compressed archive model.l1z, kB (log scale)",
        ylabel="validation accuracy (o); archive's test accuracy (x)",
        title="accuracy vs bytes, one front per method",
    )  # fmt: skip


def plot_front_by_method(
    done: pd.DataFrame,
    frame: pd.DataFrame,
    column: str,
    path: Path,
    plt: Any,
    *,
    xlabel: str,
    ylabel: str,
    title: str,
    scale: float = 1.0,
    crosses: str | None = None,
) -> None:
    """One PNG at `path`: each method's validation accuracy against its trials' `column`
    (divided by `scale`, log axis; rows without a positive value left out), with its front
    (accuracy maximized, `column` minimized), the dense baselines of `frame` as lines and,
    if given, the accuracy column `crosses` as crosses. `plt` is matplotlib.pyplot."""
    colours = plt.get_cmap("tab10").colors
    fig, ax = plt.subplots(figsize=(5.5, 4), dpi=100)
    for i, (name, trials) in enumerate(done.groupby("method", sort=False)):
        trials = trials.assign(**{column: pd.to_numeric(trials[column], errors="coerce")})
        trials = trials[trials[column] > 0]
        if trials.empty:
            continue
        colour, marker = colours[i % 10], MARKERS[i % 10]
        x = trials[column] / scale
        ax.scatter(x, trials["val_acc"], color=colour, marker=marker, edgecolor="k", lw=0.3,
                   s=22, alpha=0.8)  # fmt: skip
        if crosses is not None:
            ax.scatter(x, trials[crosses], color=colour, marker="x", s=14, alpha=0.6)
        front = trials[pareto_front(trials, ("val_acc", column), (True, False))]
        front = front.sort_values(column)
        ax.step(front[column] / scale, front["val_acc"], where="post", color=colour, label=name)
    for i, (label, acc) in enumerate(baselines(frame).items()):
        ax.axhline(acc, color="0.4", ls=(0, (4, 2 + i)), lw=0.8, label=label)
    ax.set(xscale="log", xlabel=xlabel, ylabel=ylabel, title=title)
    save_figure(fig, ax, path, plt)


def save_figure(fig: Any, ax: Any, path: Path, plt: Any) -> None:
    """Give `ax` its legend, lay `fig` out, write it to `path` (PNG) and close it. `plt` is
    matplotlib.pyplot."""
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
