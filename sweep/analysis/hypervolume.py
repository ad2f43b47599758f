"""The front over every measured model and its hypervolume, per sweep and over all sweeps.

A sweep's points are its points.csv (each path trial's levels, each plain trial's final model;
sweep.results.points), else its complete trials' rows. The hypervolume is sweep.results'
2-D one, of x = -log10(weights kept) and y = accuracy, above the reference point (0, chance):
chance is 1 / the sweep's data's classes (`sweep_classes` says how they were found), so a
two-class table's front is measured above 0.5, digits' and Fashion-MNIST's above 0.1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sweep.analysis.load import complete, trial_dir
from sweep.analysis.plots import save_figure
from sweep.results import points
from sweep.results.hypervolume import ASSUMED_CLASSES, kept_axis, outline

HV_AXES = "x = -log10(weights kept) = -log10(1 - sparsity), y = accuracy"
# torchvision classification sets whose classes are known without reading them (data.dataset)
KNOWN_CLASSES = {"MNIST": 10, "FashionMNIST": 10, "KMNIST": 10, "QMNIST": 10, "USPS": 10,
                 "SVHN": 10, "CIFAR10": 10, "STL10": 10, "CIFAR100": 100}  # fmt: skip
SOURCE = "classes_from"  # the column of sweep_points saying where n_classes came from


@dataclass(frozen=True)
class Classes:
    """A sweep's data's classes (None: its rows record several, each point its own) and where
    they were found, in words for the summary."""

    n: int | None
    source: str


def sweep_classes(rows: pd.DataFrame) -> Classes:
    """The classes of one sweep's data, from its results.csv rows (load's frame): their
    `n_classes` column where they record it; else its trials' .hydra/config.yaml (digits: 10;
    a torchvision set of KNOWN_CLASSES; a csv or npz table: the distinct labels of its file,
    where that file is still there); else ASSUMED_CLASSES (10), said as an assumption."""
    recorded = sorted({int(n) for n in rows.get("n_classes", pd.Series(dtype=float)).dropna()})
    if recorded:
        return Classes(recorded[0] if len(recorded) == 1 else None, "recorded in results.csv")
    for _, row in rows.head(20).iterrows():
        found = _config_classes(trial_dir(row)) if pd.notna(row.get("run_dir")) else None
        if found:
            return Classes(*found)
    return Classes(ASSUMED_CLASSES, "assumed: neither its rows nor its trials' configs say")


def _config_classes(run_dir: Path) -> tuple[int, str] | None:
    """(classes, where from) of the data a trial's .hydra/config.yaml names; None where it
    cannot tell."""
    from omegaconf import OmegaConf

    try:
        data = OmegaConf.load(run_dir / ".hydra" / "config.yaml").get("data") or {}
        loader = str(data.get("_target_", "")).rsplit(".", 1)[-1]
        if loader == "load_digits":
            return 10, "from the trials' config: data=digits"
        if loader == "load_torchvision" and str(data.get("dataset")) in KNOWN_CLASSES:
            return KNOWN_CLASSES[str(data.dataset)], f"from the trials' config: {data.dataset}"
        if loader in ("load_csv", "load_npz") and data.get("path"):
            path = Path(str(data.path))
            if not path.is_absolute():  # relative to where the trial ran (hydra.runtime.cwd)
                hydra = OmegaConf.load(run_dir / ".hydra" / "hydra.yaml").hydra
                path = Path(str(hydra.runtime.cwd)) / path
            n = _table_classes(path, data.get("target"))
            return (n, f"from the trials' config: the labels of {path}") if n else None
    except Exception:  # an unreadable config or table: the next trial's, or the assumption
        return None
    return None


def _table_classes(path: Path, target: str | None) -> int:
    """The distinct labels of a data=csv table's `target` column or a data=npz file's y and
    y_test: the classes sweep.data.tables finds."""
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            labels = [z["y"], *([z["y_test"]] if "y_test" in z else [])]
        return len(np.unique(np.concatenate(labels)))
    return int(pd.read_csv(path, usecols=[str(target)])[str(target)].dropna().nunique())


def sweep_points(frame: pd.DataFrame) -> pd.DataFrame:
    """Every point of every sweep in `frame` (load's), with a `sweep` column: its points.csv
    where the sweep wrote one, else its complete trials' rows (no times: such a sweep has no
    hypervolume-against-time curve); `n_classes` (each point's data's classes, see
    sweep_classes) and `classes_from` (where they were found) are filled in."""
    parts = []
    for name, sweep in frame.groupby("sweep", sort=False):
        csv = Path(sweep["csv"].iloc[0]).with_name(points.NAME)
        if csv.is_file():
            part = pd.read_csv(csv)
        else:
            part = sweep[complete(sweep)].assign(kind="trial", finished=pd.NA, seconds=np.nan)
        classes = sweep_classes(sweep)
        recorded = part.get("n_classes", pd.Series(np.nan, index=part.index))
        part = part.assign(n_classes=recorded.fillna(classes.n if classes.n else np.nan))
        parts.append(part.assign(sweep=name, **{SOURCE: classes.source}))
    return pd.concat(parts, ignore_index=True).dropna(subset=["val_acc", "sparsity"])


def _reference(part: pd.DataFrame) -> tuple[float, float] | None:
    """The reference point of `part`'s points, or None where their data differ in classes."""
    try:
        return points.frame_reference(part)
    except ValueError:
        return None


def _figures(part: pd.DataFrame, reference: Sequence[float] | None) -> dict:
    """points.front_figures of `part`; where its points have no common reference point, its
    front with NaN hypervolumes (the front itself is chosen without one)."""
    if reference is not None:
        return points.front_figures(part, reference)
    return {**points.front_figures(part, (0.0, 0.0)), "hypervolume": math.nan,
            "test_hypervolume": math.nan}  # fmt: skip


def _reference_line(pts: pd.DataFrame, reference: Sequence[float] | None) -> str:
    """The summary's words on the reference point: chance on how many classes, found where."""
    if reference is not None:  # the caller's, for every sweep
        return f"reference point ({reference[0]:g}, {reference[1]:g}) (given)"
    per = {name: (sorted({int(n) for n in part["n_classes"].dropna()}), part[SOURCE].iloc[0])
           for name, part in pts.groupby("sweep", sort=False)}  # fmt: skip
    sources = {source for _, source in per.values()}
    found = sorted({n for ns, _ in per.values() for n in ns})
    if len(found) == 1 and len(sources) == 1:
        n = found[0]
        return (f"reference point (0, {1 / n:g}) (the dense model's x, and chance: 1 / {n} "
                f"classes, {sources.pop()})")  # fmt: skip
    each = "; ".join(
        f"{name}: (0, {1 / ns[0]:g}), {ns[0]} classes, {source}" if len(ns) == 1
        else f"{name}: data of {', '.join(map(str, ns))} classes, no common reference"
        for name, (ns, source) in per.items()
    )  # fmt: skip
    whole = "" if len(found) == 1 else "; all sweeps together: none (their data differ in classes)"
    head = "reference point (0, 1 / classes) (the dense model's x, and chance) per sweep"
    return f"{head}: {each}{whole}"


def hypervolume_report(pts: pd.DataFrame, reference: Sequence[float] | None = None) -> str:
    """Markdown: each sweep's front over its points and all sweeps' together, with the
    hypervolumes of validation accuracy and of the same points' test accuracy against
    `reference` (None: chance on each sweep's data's classes, `pts`' n_classes; NaN over
    points whose data differ in classes), and the front over all points as a table."""
    rows = []
    groups = [*pts.groupby("sweep", sort=False), ("all sweeps", pts)]
    for name, part in groups:
        part = part.reset_index(drop=True)
        f = _figures(part, reference if reference is not None else _reference(part))
        kinds = part["kind"].value_counts()
        rows.append({"sweep": name, "trials": part.groupby(["sweep", "trial"]).ngroups,
                     "path points": int(kinds.get("path", 0)),
                     "trial points": int(kinds.get("trial", 0)), "front": len(f["front"]),
                     "val hypervolume": f["hypervolume"],
                     "test hypervolume": f["test_hypervolume"]})  # fmt: skip
    every = pts.reset_index(drop=True)
    front = every.loc[_figures(every, (0.0, 0.0))["front"]]  # chosen without a reference
    columns = ["sweep", "trial", "kind", "level", "sparsity", "val_acc", "test_acc",
               "archive_bytes", "overrides"]  # fmt: skip
    return "\n".join([
        "## front over every point, and its hypervolume",
        f"\n{HV_AXES}; {_reference_line(pts, reference)}; the front is chosen on validation "
        "accuracy, and its test hypervolume is of the same points' test accuracy\n",
        pd.DataFrame(rows).to_markdown(index=False, floatfmt=".4f"),
        f"\nfront over all points ({len(front)}):\n",
        front[[c for c in columns if c in front]].to_markdown(index=False, floatfmt=".4g"),
        "",
    ])  # fmt: skip


def plot_hypervolume(pts: pd.DataFrame, out: Path) -> None:
    """front_points.png: every point's validation accuracy against -log10(weights kept), a
    colour per sweep (paths' levels as dots, plain trials as squares) with the outline of the
    area its front dominates above its reference point (`front_points_figure`);
    hypervolume_vs_time.png: each sweep's front's hypervolume at each finished trial against
    seconds since its first trial started (sweeps with points.csv only)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = front_points_figure(pts)
    save_figure(fig, fig.axes[0], out / "front_points.png", plt)
    timed = pts[pts["seconds"].notna()] if "seconds" in pts else pts.iloc[:0]
    if not timed.empty:
        _plot_hypervolume_vs_time(timed, out, plt)


def front_points_figure(pts: pd.DataFrame) -> Any:
    """The figure of front_points.png (see plot_hypervolume), not yet saved: per sweep, its
    points and a closed line, labelled with the sweep's hypervolume, that is the boundary of
    the area that hypervolume measures (sweep.results.hypervolume.outline: the front's
    staircase down to the reference point's accuracy and back along it to x = 0), so the
    area it encloses is the number in its label."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = plt.get_cmap("tab10").colors
    fig, ax = plt.subplots(figsize=(5.5, 4), dpi=100)
    for i, (name, part) in enumerate(pts.groupby("sweep", sort=False)):
        part = part.reset_index(drop=True)
        x = part["sparsity"].map(kept_axis)
        for kind, marker in (("path", "o"), ("trial", "s")):
            mine = part["kind"] == kind
            ax.scatter(x[mine], part.loc[mine, "val_acc"], color=colours[i % 10], s=12,
                       marker=marker, alpha=0.6, edgecolor="k", lw=0.2)  # fmt: skip
        reference = _reference(part)
        if reference is None:  # data of several class counts: no area to draw
            continue
        figures = points.front_figures(part, reference)
        best = figures["front"]
        line = outline(zip(x[best], part.loc[best, "val_acc"]), reference)
        if line:
            ax.plot(*zip(*line), color=colours[i % 10], lw=1.2,
                    label=f"{name} ({figures['hypervolume']:.4f} above chance "
                          f"{reference[1]:.3g})")  # fmt: skip
    ax.set(xlabel="-log10(weights kept): 1 = 90% zeros, 2 = 99%",
           ylabel="validation accuracy",
           title="front over every point: the area outlined is its hypervolume")  # fmt: skip
    return fig


def _plot_hypervolume_vs_time(timed: pd.DataFrame, out: Path, plt: Any) -> None:
    """hypervolume_vs_time.png from the points that have `seconds`: see plot_hypervolume."""
    colours = plt.get_cmap("tab10").colors
    fig, ax = plt.subplots(figsize=(5.5, 4), dpi=100)
    for i, (name, part) in enumerate(timed.groupby("sweep", sort=False)):
        reference = _reference(part)
        if reference is None:
            continue
        h = points.history(part, reference)
        ax.step(h["seconds"], h["hypervolume"], where="post", color=colours[i % 10], marker="o",
                ms=3, label=f"{name} validation")  # fmt: skip
        ax.step(h["seconds"], h["test_hypervolume"], where="post", color=colours[i % 10],
                ls="--", lw=0.8, label=f"{name} test")  # fmt: skip
    ax.set(xlabel="seconds since the sweep's first trial started", ylabel="hypervolume",
           title="the front's hypervolume as each sweep ran")  # fmt: skip
    save_figure(fig, ax, out / "hypervolume_vs_time.png", plt)
