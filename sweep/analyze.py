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
import json
import math
import re
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sweep.analysis import speed as speed_plots
from sweep.errors import UserError
from sweep.results import hypervolume, points
from sweep.results.row import dtypes

REQUIRED = ["trial", "status", "l1_lambda", "val_acc", "test_acc", "sparsity", "overrides"]
TYPES = dtypes()  # every column's type, from the row's one definition
FRONT = ("val_acc", "sparsity")
# the columns `load` adds: each row's sweep's objective metrics and directions, comma-joined
METRICS_COLUMN, DIRECTIONS_COLUMN = "objective_metrics", "objective_directions"
SHOWN = ["trial", "l1_lambda", "prune_sparsity", "val_acc", "test_acc", "trained_test_acc",
         "sparsity", "sparsity_tol", "pruned_test_acc", "archive_bytes", "compression",
         "archive_test_acc", "overrides"]  # fmt: skip
METHOD_COLUMNS = ("model", "regularizer", "prune")


def _csv_path(path: Path) -> Path:
    if not path.exists():
        raise UserError(f"no such file or directory: {path}; pass a sweep directory or its CSV")
    csv = path / "results.csv" if path.is_dir() else path
    if not csv.is_file():
        raise UserError(f"{path} has no results.csv; is it a sweep directory (outputs/sweeps/…)?")
    return csv


def _read(csv: Path) -> pd.DataFrame:
    try:
        frame = pd.read_csv(csv)
    except pd.errors.EmptyDataError:
        frame = pd.DataFrame()
    except (UnicodeDecodeError, pd.errors.ParserError) as e:
        reason = str(e).splitlines()[0]
        raise UserError(
            f"{csv} is not a readable CSV ({reason}); pass a sweep's results.csv"
        ) from None
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing and len(frame.columns):
        raise UserError(f"{csv} lacks columns {', '.join(missing)}; is it an l1sweep CSV?")
    if frame.empty:
        raise UserError(f"{csv} has no trials yet; wait for a trial to finish, or rerun")
    for column, dtype in TYPES.items():
        try:
            if column in frame:
                frame[column] = frame[column].astype(dtype)
        except (TypeError, ValueError):  # pandas' own message is long and names no file
            raise UserError(
                f"{csv}: column {column} holds values that are not {dtype}; "
                "is it an l1sweep CSV, edited by hand?"
            ) from None
    return frame


@dataclass(frozen=True)
class Objective:
    """What a sweep optimized: its metrics (results.csv columns) and, one for each, the
    direction ("maximize" or "minimize"); `source` says where they were read."""

    metrics: tuple[str, ...]
    directions: tuple[str, ...]
    source: str

    def maximize(self, column: str) -> bool:
        """The sweep's direction for `column` if it is one of its metrics, else maximize (the
        direction of accuracy and sparsity, the columns a front is drawn against)."""
        if column in self.metrics:
            return self.directions[self.metrics.index(column)] == "maximize"
        return True

    def front(self) -> tuple[tuple[str, str], tuple[bool, bool]]:
        """The two columns of the sweep's Pareto front and whether each is maximized: a
        sweep's two objectives; else its one metric against sparsity (accuracy against
        sparsity where the metric is sparsity itself, as in objective=within_drop)."""
        if len(self.metrics) == 2:
            cols = (self.metrics[0], self.metrics[1])
        elif len(self.metrics) == 1 and self.metrics[0] != "sparsity":
            cols = (self.metrics[0], "sparsity")
        else:
            cols = FRONT
        return cols, (self.maximize(cols[0]), self.maximize(cols[1]))


UNRECORDED = Objective(("val_acc",), ("maximize",), "not recorded: assumed maximize val_acc")


def _objective_in(config: Path) -> Objective | None:
    """The objective of a trial's .hydra/config.yaml, or of optimization_results.yaml (the
    `metrics` and `directions` keys the sweeper writes there)."""
    from omegaconf import OmegaConf

    try:
        node = OmegaConf.load(config)
    except Exception:  # unreadable: the next source is tried
        return None
    if config.name == "optimization_results.yaml":
        metrics, directions = node.get("metrics"), node.get("directions")
    else:
        objective = node.get("objective") or {}
        metrics, directions = objective.get("metrics"), objective.get("direction")
    if not metrics or not directions or len(metrics) != len(directions):
        return None
    directions = tuple(str(d) for d in directions)
    if not set(directions) <= {"maximize", "minimize"}:
        return None
    return Objective(tuple(str(m) for m in metrics), directions, str(config))


def objective_of(csv: Path, frame: pd.DataFrame) -> Objective:
    """The objective a sweep was run with: its optimization_results.yaml (written when the
    sweep ends), else the first trial's .hydra/config.yaml that can be read (there from the
    first trial on, so a running or killed sweep has it too), else UNRECORDED."""
    sources = [csv.parent / "optimization_results.yaml"]
    for run_dir in frame.get("run_dir", pd.Series(dtype="string")).dropna().head(20):
        sources += [Path(run_dir) / ".hydra" / "config.yaml",
                    csv.parent / Path(run_dir).name / ".hydra" / "config.yaml"]  # fmt: skip
    for source in sources:
        if source.is_file() and (found := _objective_in(source)) is not None:
            return found
    return UNRECORDED


def objectives(frame: pd.DataFrame) -> Objective:
    """The objective of the rows of one sweep (the columns `load` adds)."""
    if METRICS_COLUMN not in frame or frame[METRICS_COLUMN].isna().all():
        return UNRECORDED
    first = frame.iloc[0]
    return Objective(tuple(str(first[METRICS_COLUMN]).split(",")),
                     tuple(str(first[DIRECTIONS_COLUMN]).split(",")), "results")  # fmt: skip


def _word(maximize: bool) -> str:
    return "max" if maximize else "min"


def knee_rule(cols: Sequence[str], maximize: Sequence[bool]) -> str:
    """How `knee` picks its point, in words."""
    ideal = ", ".join(f"{_word(m)} {c}" for c, m in zip(cols, maximize))
    return f"the front's point nearest the ideal ({ideal}), each axis min-max scaled over the front"


KNEE_RULE = knee_rule(FRONT, (True, True))


def load(paths: Sequence[str | Path]) -> pd.DataFrame:
    """One typed frame of the trials of every sweep, with a `sweep` column (its directory name,
    or its path where two sweeps share a name), a `csv` column (the file it came from) and
    each sweep's objective (`objective_metrics`, `objective_directions`: see objective_of).
    A sweep named twice is read once."""
    frames = []
    csvs = dict.fromkeys(_csv_path(Path(p)).resolve() for p in paths)
    for csv in csvs:
        frame = _read(csv)
        frame.insert(0, "sweep", csv.parent.name)
        frame["csv"] = str(csv)
        objective = objective_of(csv, frame)
        recorded = objective is not UNRECORDED  # else empty: `objectives` gives UNRECORDED
        frame[METRICS_COLUMN] = ",".join(objective.metrics) if recorded else pd.NA
        frame[DIRECTIONS_COLUMN] = ",".join(objective.directions) if recorded else pd.NA
        frames.append(frame)
    combined = pd.concat(frames, ignore_index=True)
    if combined.groupby("sweep")["csv"].nunique().gt(1).any():  # two sweeps, one name
        combined["sweep"] = combined["csv"].map(lambda c: str(Path(c).parent))
    return combined


def _complete(frame: pd.DataFrame) -> pd.Series:
    """True for the rows of trials that completed (not diverged, not failed)."""
    return frame["status"].eq("complete").fillna(False)


def methods(frame: pd.DataFrame, by: Sequence[str] | None = None) -> pd.Series:
    """Each row's method label: the values of the `by` columns, joined by ' / '. Default: the
    sweep where the frame holds several, and each of model, regularizer, prune that varies
    within a sweep (so one sweep per method is labelled by its name alone)."""
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
    dense = _complete(frame) & (frame["regularizer"].eq("none").fillna(False)
                                if "regularizer" in frame else False)  # fmt: skip
    return dense & (frame["prune"].fillna("none").eq("none") if "prune" in frame else True)


def baselines(frame: pd.DataFrame) -> dict[str, float]:
    """Validation accuracy of the dense models the frame knows of: its trials with no
    regularizer and no pruning (their mean, per sweep), and the baseline run that an
    objective=within_drop sweep trains (baseline/metrics.json beside its CSV)."""
    known = {}
    for sweep, rows in frame.groupby("sweep", sort=False):
        dense = _dense(rows)
        if dense.any():
            known[f"{sweep}: dense trials"] = float(rows.loc[dense, "val_acc"].mean())
        run = Path(rows["csv"].iloc[0]).parent / "baseline" / "metrics.json"
        if run.is_file():
            known[f"{sweep}: baseline run"] = float(json.loads(run.read_text())["val_acc"])
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
    ok = _complete(frame) & frame[list(cols)].notna().all(axis=1)
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
    Ties go to the point best in the first column."""
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
    column), else the knee of the front of the sweep's objectives."""
    done = frame[_complete(frame)]
    if done.empty:
        raise UserError(f"no complete trials in {frame['csv'].iloc[0]}; see their run.log")
    objective = objectives(frame)
    names = ", ".join(objective.metrics)
    if len(objective.metrics) == 1 and "objective" in done and done["objective"].notna().any():
        up = objective.directions[0] == "maximize"
        index = done["objective"].idxmax() if up else done["objective"].idxmin()
        verb = "maximized" if up else "minimized"
        guess = "" if objective is not UNRECORDED else "; the direction was not recorded"
        return int(index), f"{_word(up)} objective ({names}, the value the sweep {verb}{guess})"
    cols, maximize = objective.front()
    axes = " and ".join(f"{c} ({_word(m)})" for c, m in zip(cols, maximize))
    return knee(done, cols, maximize), f"knee of the Pareto front of {axes} (multi-objective sweep)"


def _row_table(frame: pd.DataFrame, index: Sequence[int]) -> str:
    shown = [c for c in SHOWN if c in frame.columns and frame[c].notna().any()]
    return frame.loc[list(index), shown].to_markdown(index=False, floatfmt=".4g")


def _comparison(frame: pd.DataFrame, knees: dict[str, int], dense: dict[str, float]) -> str:
    """One line per method: its trials, best val_acc (the lowest where its sweep minimized
    val_acc) and knee; the dense baselines below."""
    rows = []
    for name, trials in frame.groupby("method", sort=False):
        k = frame.loc[knees[name]]
        up = objectives(trials).maximize("val_acc")
        rows.append({"method": name, "trials": len(trials),
                     "best val_acc": trials["val_acc"].max() if up else trials["val_acc"].min(),
                     "knee trial": k["trial"],
                     "knee sparsity": k["sparsity"], "knee val_acc": k["val_acc"],
                     "knee test_acc": k["test_acc"]})  # fmt: skip
    table = pd.DataFrame(rows).to_markdown(index=False, floatfmt=".4g")
    lines = [f"- {label}: val_acc {acc:.4f}" for label, acc in dense.items()]
    return "\n".join(["## methods compared", "", table, "", "dense baselines:" if lines else
                      "dense baselines: none in these trials", *lines, ""])  # fmt: skip


def summarize(frame: pd.DataFrame) -> tuple[str, dict[str, int]]:
    """Markdown summary of every method in the frame (its `method` column, else its sweeps),
    and the knee trial index of each."""
    if "method" not in frame:
        frame = frame.assign(method=frame["sweep"])
    parts, knees = [], {}
    for name, sweep in frame.groupby("method", sort=False):
        counts = sweep["status"].value_counts()
        complete, diverged = counts.get("complete", 0), counts.get("diverged", 0)
        pruned = counts.get("pruned", 0)  # stopped early by the sweep's pruner
        failed = len(sweep) - complete - diverged - pruned  # or any status this code predates
        if not complete:
            # Data with inf or NaN never reaches training (sweep.data.Dataset refuses it), so a
            # diverged trial's loss grew without bound from finite data: its step was too big.
            raise UserError(
                f"{name} has no complete trial ({diverged} diverged, {pruned} pruned, "
                f"{failed} failed); see the trials' run.log, then rerun (diverged: the training "
                "loss overflowed to inf or nan; lower optimizer.lr, or l1_lambda for a "
                "non-proximal regularizer, or keep data.standardize=true for large inputs)"
            )
        labels = [", ".join(sweep[c].dropna().unique()) if c in sweep else "?" for c in
                  ("regularizer", "data")]  # fmt: skip
        best_index, how = best(sweep)
        cols, maximize = objectives(sweep).front()
        front = sweep[pareto_front(sweep, cols, maximize)].sort_values(cols[1])
        knees[name] = knee(sweep, cols, maximize)
        axes = " vs ".join(f"{c} ({_word(m)})" for c, m in zip(cols, maximize))
        parts += [
            f"## {name} (regularizer {labels[0]}, data {labels[1]})",
            f"trials: {len(sweep)}, complete {complete}, pruned {pruned}, diverged {diverged}, "
            f"failed {failed}",
            f"\nbest trial, by {how}:\n",
            _row_table(sweep, [best_index]),
            f"\nPareto front, {axes} ({len(front)} trials):\n",
            _row_table(sweep, front.index),
            f"\nknee ({knee_rule(cols, maximize)}):\n",
            _row_table(sweep, [knees[name]]),
            "",
        ]
    if frame["method"].nunique() > 1:
        parts.insert(0, _comparison(frame, knees, baselines(frame)))
    return "\n".join(parts), knees


def input_mask(frame: pd.DataFrame, index: int) -> np.ndarray:
    """Non-zero outgoing weights of each input in the first layer of trial `frame.loc[index]`
    (from its model.pt), in the image's shape: 8x8 for digits, 28x28 for MNIST."""
    import torch

    row = frame.loc[index]
    run_dir = Path(str(row.get("run_dir", "")))
    if not run_dir.is_dir():  # a sweep copied elsewhere: the trial dir sits beside the CSV
        run_dir = Path(row["csv"]).parent / run_dir.name
    weights = run_dir / "model.pt"
    if not weights.is_file():
        raise UserError(
            f"trial {row['trial']} of {row['sweep']} has no saved weights ({weights}); "
            f"rerun it with `python -m sweep.run {row['overrides']}`, or pass --no-mask"
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
    done = frame[_complete(frame)]
    colours = plt.get_cmap("tab10").colors
    fig, ax = plt.subplots(figsize=(5.5, 4), dpi=100)
    axes: list[tuple[tuple[str, str], tuple[bool, bool]]] = []
    for i, (name, trials) in enumerate(done.groupby("method", sort=False)):
        colour, marker = colours[i % 10], "osD^v<>p*h"[i % 10]
        (y_col, x_col), maximize = objectives(trials).front()
        axes.append(((y_col, x_col), maximize))
        x = frame[x_col]
        if kept_axis and x_col == "sparsity":
            x = (1.0 - x).clip(lower=1e-4)
        ax.scatter(x[trials.index], trials[y_col], color=colour, marker=marker,
                   edgecolor="k", lw=0.3, s=22, alpha=0.8)  # fmt: skip
        front = trials[pareto_front(trials, (y_col, x_col), maximize)].sort_values(x_col)
        # a staircase from each front point towards the worse x: "pre" when x is maximized
        ax.step(x[front.index], front[y_col], where="pre" if maximize[1] else "post",
                color=colour, label=name)  # fmt: skip
        k = knees[name]
        ax.annotate("knee", (x[k], frame.loc[k, y_col]), xytext=(4, 4),
                    textcoords="offset points", fontsize=7, color=colour)  # fmt: skip
    (y_col, x_col), maximize = axes[0] if axes else (FRONT, (True, True))
    if y_col == "val_acc":  # the dense models' accuracy, for reference
        for i, (label, acc) in enumerate(baselines(frame).items()):
            ax.axhline(acc, color="0.4", ls=(0, (4, 2 + i)), lw=0.8, label=label)
    names = {"sparsity": "sparsity (exact zeros)", "val_acc": "validation accuracy"}
    ax.set(xlabel=f"{names.get(x_col, x_col)}, {_word(maximize[1])}imized",
           ylabel=f"{names.get(y_col, y_col)}, {_word(maximize[0])}imized",
           title=f"{y_col} vs {x_col}, one front per method")  # fmt: skip
    if kept_axis and x_col == "sparsity":
        ax.set(xscale="log", xlabel="weights kept, 1 - sparsity (exact zeros), log scale")
        ax.invert_xaxis()  # sparser to the right, as on the linear axis
    save_figure(fig, ax, out / "accuracy_vs_sparsity.png", plt)

    if "archive_bytes" in done and done["archive_bytes"].notna().any():
        _plot_bytes(done, frame, out, plt)

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

    for name, (index, kept) in (masks or {}).items():
        row = frame.loc[index]
        fig, ax = plt.subplots(figsize=(4, 3.6), dpi=100)
        image = ax.imshow(kept, cmap="magma")
        fig.colorbar(image, ax=ax, label="non-zero outgoing weights")
        title = f"{name} trial {row['trial']}: {(kept > 0).sum()}/{kept.size} inputs kept"
        ax.set_title(title, fontsize=8)
        ax.set_axis_off()
        fig.tight_layout()
        fig.savefig(out / f"input_mask_{_file_name(name)}.png")
        plt.close(fig)


def _plot_bytes(done: pd.DataFrame, frame: pd.DataFrame, out: Path, plt: object) -> None:
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
    if given, the accuracy column `crosses` as crosses."""
    colours = plt.get_cmap("tab10").colors
    fig, ax = plt.subplots(figsize=(5.5, 4), dpi=100)
    for i, (name, trials) in enumerate(done.groupby("method", sort=False)):
        trials = trials.assign(**{column: pd.to_numeric(trials[column], errors="coerce")})
        trials = trials[trials[column] > 0]
        if trials.empty:
            continue
        colour, marker = colours[i % 10], "osD^v<>p*h"[i % 10]
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
    """Give `ax` its legend, lay `fig` out, write it to `path` (PNG) and close it."""
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _file_name(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("_")


def analyze(
    paths: Sequence[str],
    out: Path | None,
    trial: int | None,
    mask: bool,
    by: Sequence[str] | None = None,
    kept_axis: bool = False,
) -> str:
    """Everything the command does; files appear in `out` only once all of them are made."""
    frame = load(paths)
    frame["method"] = methods(frame, by)
    text, knees = summarize(frame)
    out = out or _csv_path(Path(paths[0])).parent
    masks = {}
    if mask:
        # A model whose first layer is a convolution has no per-input mask (active_inputs
        # is empty for it): it is left out rather than drawn from a later layer.
        shown = {m: i for m, i in knees.items() if pd.notna(frame.loc[i].get("active_inputs"))}
        if trial is not None:
            first = frame["sweep"].iloc[0]
            match = frame.index[(frame["sweep"] == first) & (frame["trial"] == trial)]
            if match.empty:
                raise UserError(f"no trial {trial} in {first}; see its results.csv")
            shown[frame.loc[match[0], "method"]] = int(match[0])
        # Read the weights before anything is written: a missing model.pt must leave no trace.
        masks = {name: (index, input_mask(frame, index)) for name, index in shown.items()}
    features_text, chosen = feature_report(frame, trial)  # tables only: see the end
    text += "\n" + features_text if features_text else ""
    pts = sweep_points(frame)  # every point, paths' levels too: the front's hypervolume
    text += "\n" + hypervolume_report(pts) if len(pts) else ""
    mattered, importances, study, objective = what_mattered(frame)  # parameter importances: the end
    text += "\n" + mattered if mattered else ""
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out, prefix=".analyze-") as tmp:
        staging = Path(tmp)
        front = frame[fronts(frame)]
        front.drop(columns=["csv", METRICS_COLUMN, DIRECTIONS_COLUMN]).to_csv(
            staging / "pareto.csv", index=False
        )
        plot_features(frame, chosen, staging)
        (staging / "summary.md").write_text(text + "\n")
        plot(frame, knees, staging, masks, kept_axis)
        if len(pts):
            plot_hypervolume(pts, staging)
        speed_plots.plot_speed(frame, staging)  # accuracy vs FLOPs and vs measured time
        if importances:
            plot_what_mattered(study, importances, objective, staging)
        for made in staging.iterdir():
            shutil.move(str(made), out / made.name)
    return text + f"\nwrote pareto.csv, summary.md and plots to {out}"


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


# Feature selection: sweeps of tables (their trials wrote features.csv, see sweep/features.py).

FEATURE_KNEE_RULE = (
    "the knee of val_acc vs fewest selected features, scaled as for the front's knee"
)


def _trial_dir(row: pd.Series) -> Path:
    run_dir = Path(str(row.get("run_dir", "")))
    if not run_dir.is_dir():  # a sweep copied elsewhere: the trial dir sits beside the CSV
        run_dir = Path(row["csv"]).parent / run_dir.name
    return run_dir


def reproduce(row: pd.Series) -> str:
    """The command that reruns a trial: its overrides, and the user's own config directory
    and config name where the sweep used them (from the trial's .hydra/hydra.yaml)."""
    import shlex

    args = ["python", "-m", "sweep.run"]
    hydra_yaml = _trial_dir(row) / ".hydra" / "hydra.yaml"
    if hydra_yaml.is_file():
        from omegaconf import OmegaConf

        hydra = OmegaConf.load(hydra_yaml).hydra
        for source in hydra.runtime.config_sources:
            if source.provider == "command-line" and source.schema == "file":
                args += ["--config-dir", str(source.path)]
        if hydra.job.config_name != "config":
            args += ["--config-name", str(hydra.job.config_name)]
    return shlex.join(args) + (f" {row['overrides']}" if row["overrides"] else "")


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
        done = sweep[_complete(sweep) & sweep["active_inputs"].notna()]
        if done.empty:
            continue
        if i == 0 and trial is not None and (done["trial"] == trial).any():
            index, how = int(done.index[done["trial"] == trial][0]), "--trial"
        else:
            fewer = done.assign(fewer_inputs=-done["active_inputs"])
            up = objectives(sweep).maximize("val_acc")  # a sweep that minimized it: min
            index = knee(fewer, ("val_acc", "fewer_inputs"), (up, True))
            how = FEATURE_KNEE_RULE if up else FEATURE_KNEE_RULE.replace("val_acc", "min val_acc")
        path = _trial_dir(frame.loc[index]) / "features.csv"
        if not path.is_file():  # repeats > 1: each seed has its own; the first seed's is shown
            path = path.parent / f"seed_{int(frame.loc[index, 'seed'])}" / "features.csv"
        if not path.is_file():
            continue
        table = pd.read_csv(path)
        chosen[name] = (index, table)
        row = frame.loc[index]
        path_rows = done.sort_values(["active_inputs", "l1_lambda"], ascending=[False, True])
        kept = table[table["selected"]].sort_values("weight_norm", ascending=False)
        names = ", ".join(f"{f} ({w:.3g})" for f, w in zip(kept["feature"], kept["weight_norm"]))
        columns = ["trial", "l1_lambda", "active_inputs", "val_acc", "test_acc", "sparsity"]
        parts += [
            f"## {name}: feature selection ({len(table)} input features)",
            "\nregularization path, by selected features (active_inputs):\n",
            path_rows[[c for c in columns if c in done]].to_markdown(index=False, floatfmt=".4g"),
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
    one point per trial coloured by log10 l1_lambda, the chosen trial named."""
    if not chosen:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = frame[_complete(frame) & frame["sweep"].isin(list(chosen))]
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


# The front over every measured model (points.csv: each path trial's levels, each plain
# trial's final model) and its hypervolume (sweep/hypervolume.py), per sweep and over all.

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
            part = sweep[_complete(sweep)].assign(kind="trial", finished=pd.NA, seconds=np.nan)
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

    colours = plt.get_cmap("tab10").colors
    fig, ax = plt.subplots(figsize=(5.5, 4), dpi=100)
    for i, (name, part) in enumerate(pts.groupby("sweep", sort=False)):
        part = part.reset_index(drop=True)
        x = part["sparsity"].map(hypervolume.kept_axis)
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

    timed = pts[pts["seconds"].notna()] if "seconds" in pts else pts.iloc[:0]
    if timed.empty:
        return
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


# What mattered: Optuna's parameter importances, and the optimization and hypervolume
# histories, from a sweep's rows (an in-memory study rebuilt from results.csv: no storage).

NOT_SEARCHED = ("hydra.", "train.threads")  # overrides the sweeper adds to every trial
PED_ANOVA_MIN = 5  # trials in the top quantile PED-ANOVA needs (Optuna's docs: at least 5)


def searched_params(frame: pd.DataFrame) -> dict[str, list]:
    """The parameters a sweep searched: the override keys whose values differ between its
    complete trials, each with its trials' values (floats where every one is a number), in
    the frame's row order."""
    import shlex

    parsed = [
        dict(o.lstrip("+~").split("=", 1) for o in shlex.split(str(text)) if "=" in o)
        for text in frame["overrides"]
    ]
    keys = [
        k for k in dict.fromkeys(k for p in parsed for k in p) if not k.startswith(NOT_SEARCHED)
    ]
    out: dict[str, list] = {}
    for key in keys:
        values = [p.get(key) for p in parsed]
        if None in values or len(set(values)) < 2:
            continue
        try:
            out[key] = [float(v) for v in values]
        except ValueError:
            out[key] = values
    return out


def rebuilt_study(frame: pd.DataFrame, objective: Objective) -> tuple[Any, dict[str, list]]:
    """An in-memory Optuna study of one sweep's complete trials with finite objective values
    (in trial order), over its searched parameters: a number's distribution spans its values
    (log-scaled where all are positive and span 10x or more), any other is categorical.
    Returns the study and the searched parameters."""
    import optuna

    done = frame[_complete(frame)].sort_values("trial")
    done = done[np.isfinite(done[list(objective.metrics)].astype(float)).all(axis=1)]
    params = searched_params(done)
    dists: dict[str, Any] = {}
    for key, values in params.items():
        if all(isinstance(v, float) for v in values):
            low, high = min(values), max(values)
            dists[key] = optuna.distributions.FloatDistribution(
                low, high, log=low > 0 and high / low >= 10
            )
        else:
            dists[key] = optuna.distributions.CategoricalDistribution(sorted(set(values)))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=list(objective.directions))
    for i, (_, row) in enumerate(done.iterrows()):
        study.add_trial(
            optuna.trial.create_trial(
                params={k: v[i] for k, v in params.items()},
                distributions=dists,
                values=[float(row[m]) for m in objective.metrics],
            )
        )
    return study, params


def importance_evaluator(n_trials: int) -> tuple[Any, str]:
    """PED-ANOVA (Watanabe et al., IJCAI 2023: how much each parameter explains reaching the
    top quantile of trials) where the sweep has at least PED_ANOVA_MIN trials in its top
    quantile (target_quantile = max(0.1, 5 / n), at most 0.5); else Optuna's fANOVA (Hutter et
    al., ICML 2014: the share of the objective's variance each parameter explains, through a
    random forest). Returns the evaluator and its name in words."""
    from optuna.importance import FanovaImportanceEvaluator, PedAnovaImportanceEvaluator

    quantile = max(0.1, PED_ANOVA_MIN / max(n_trials, 1))
    if quantile <= 0.5:
        evaluator = PedAnovaImportanceEvaluator(target_quantile=quantile, region_quantile=1.0)
        return evaluator, f"PED-ANOVA (top {quantile:.0%} of {n_trials} trials vs all)"
    return FanovaImportanceEvaluator(seed=0), f"fANOVA ({n_trials} trials, seed 0)"


def what_mattered(
    frame: pd.DataFrame,
) -> tuple[str, dict[str, dict[str, float]], Any, Objective]:
    """Parameter importances per objective of the frame's first sweep that searched more than
    one parameter (`optuna.importance.get_param_importances`, evaluator by
    `importance_evaluator`; each objective's sign set so that lower is better, as PED-ANOVA
    assumes), as a markdown section naming the parameter that mattered most for each
    objective. Returns (text, {metric: {param: importance}}, the rebuilt study or None, that
    sweep's objective)."""
    import warnings

    import optuna

    for sweep, rows in frame.groupby("sweep", sort=False):
        objective = objectives(rows)
        study, params = rebuilt_study(rows, objective)
        if len(params) < 2 or len(study.trials) < 3:
            continue
        evaluator, name = importance_evaluator(len(study.trials))
        table: dict[str, dict[str, float]] = {}
        for i, (metric, direction) in enumerate(zip(objective.metrics, objective.directions)):
            sign = -1.0 if direction == "maximize" else 1.0
            with warnings.catch_warnings():  # PED-ANOVA is experimental in Optuna
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                # its reminder that lower is better: the sign above sees to that
                warnings.filterwarnings("ignore", "PedAnovaImportanceEvaluator computes")
                table[metric] = optuna.importance.get_param_importances(
                    study, evaluator=evaluator, target=lambda t, i=i, s=sign: s * t.values[i],
                    normalize=True,
                )  # fmt: skip
        shown = pd.DataFrame(table).reindex(list(params)).fillna(0.0)
        lines = [f"## What mattered ({sweep}: {len(params)} parameters searched)", "",
                 f"parameter importances, normalized to sum to 1 per objective; evaluator: "
                 f"{name}", "", shown.to_markdown(floatfmt=".3f"), ""]  # fmt: skip
        for metric, scores in table.items():
            top = max(scores, key=scores.get)
            lines.append(f"- most important for {metric}: {top} ({scores[top]:.3f})")
        return "\n".join(lines), table, study, objective
    return "", {}, None, UNRECORDED


def plot_what_mattered(
    study: Any, table: dict[str, dict[str, float]], objective: Objective, out: Path
) -> list[str]:
    """importance_<metric>.png (a bar per parameter) for each objective; for a study of
    several objectives also history_<metric>.png (each trial's value and the best so far,
    Optuna's optimization history) and hypervolume.png (the front's hypervolume after each
    trial, against a reference point 10% of each objective's range beyond its worst value).
    Returns the file names written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization.matplotlib import (
        plot_hypervolume_history,
        plot_optimization_history,
    )

    written = []
    for metric, scores in table.items():
        fig, ax = plt.subplots(figsize=(5, 0.5 + 0.4 * len(scores)))
        names = sorted(scores, key=scores.get)
        ax.barh(names, [scores[n] for n in names])
        ax.set_xlabel(f"importance for {metric}")
        fig.tight_layout()
        fig.savefig(out / f"importance_{_file_name(metric)}.png")
        plt.close(fig)
        written.append(f"importance_{_file_name(metric)}.png")
    if study is None or len(objective.metrics) < 2:
        return written
    import warnings

    import optuna

    with warnings.catch_warnings():  # optuna.visualization.matplotlib is experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        for i, metric in enumerate(objective.metrics):
            ax = plot_optimization_history(study, target=lambda t, i=i: t.values[i],
                                           target_name=metric)  # fmt: skip
            ax.figure.savefig(out / f"history_{_file_name(metric)}.png", bbox_inches="tight")
            plt.close(ax.figure)
            written.append(f"history_{_file_name(metric)}.png")
        values = np.array([t.values for t in study.trials])
        span = values.max(axis=0) - values.min(axis=0)
        span = np.where(span > 0, span, 1.0)
        maximize = np.array([d == "maximize" for d in objective.directions])
        reference = np.where(maximize, values.min(axis=0) - 0.1 * span,
                             values.max(axis=0) + 0.1 * span)  # fmt: skip
        ax = plot_hypervolume_history(study, reference_point=reference)
        ax.figure.savefig(out / "hypervolume.png", bbox_inches="tight")
        plt.close(ax.figure)
        written.append("hypervolume.png")
    return written


if __name__ == "__main__":
    sys.exit(main())
