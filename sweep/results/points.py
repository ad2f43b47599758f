"""points.csv: every measured model of a sweep, one row per (trial, level), beside results.csv.

A trial that walks a path (`prune.path`, sweep/sparsity/pruning.py) measures a model at each level
(its rounds.csv); each is a point of the accuracy-sparsity front, reproduced on its own by the
trial's command plus `prune.stop_at=<level>` (the point's `command`; `overrides` likewise). A
plain trial is one point, its final model. Each row carries the trial's parameters, its times
(`finished`, and `seconds` since the sweep's first trial started: the hypervolume-against-wall-
time curve of `sweep.analyze`), and the level's figures.

Rebuilt from the study and the trials' rounds.csv with results.csv (sweep/search/study.py
ResultFiles); a trial whose directory this host cannot read (another host's) has its final
model only.
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Sequence
from pathlib import Path

import optuna
import pandas as pd

from sweep.results import table
from sweep.results.hypervolume import ASSUMED_CLASSES, front, hypervolume, kept_axis
from sweep.results.hypervolume import reference as chance_reference

NAME = "points.csv"
# What a point copies from its trial's row (the level's own figures come from rounds.csv).
# n_classes: the data's classes, whose chance accuracy is the hypervolumes' reference (rows
# that record it; `frame_reference`).
TRIAL_COLUMNS = ("status", "model", "data", "regularizer", "prune", "l1_lambda", "seed",
                 "repeats", "prune_epochs", "prune_lr_scale", "prune_path", "path_hypervolume",
                 "train_seconds", "n_classes")  # fmt: skip
FIGURES = ("val_acc", "test_acc", "sparsity", "nnz", "n_params", "pruned_test_acc",
           "archive_bytes", "archive_test_acc", "flops", "flops_ratio",
           "compact_shape")  # fmt: skip
FIRST = ("trial", "kind", "level", "round", "reached_by")
LAST = ("finished", "seconds", "overrides", "command", "run_dir", "model_file")


def rounds(run_dir: str | None) -> pd.DataFrame | None:
    """A run's rounds.csv; for a repeated run (repeats > 1) the seeds' mean figures per round
    (from seed_<s>/rounds.csv). None where the directory holds none (or is another host's)."""
    if not run_dir:
        return None
    one = Path(run_dir) / "rounds.csv"
    files = [one] if one.is_file() else sorted(Path(run_dir).glob("seed_*/rounds.csv"))
    frames = [pd.read_csv(f) for f in files if f.stat().st_size]
    if not frames:
        return None
    if len(frames) == 1:
        return frames[0]
    both = pd.concat(frames)
    numbers = both.select_dtypes("number").groupby("round").mean()
    words = both.drop(columns=numbers.columns, errors="ignore").groupby(both["round"]).first()
    return numbers.join(words.drop(columns="round", errors="ignore")).reset_index()


def trial_points(trial: optuna.trial.FrozenTrial, row: dict, start: float) -> list[dict]:
    """The points of one finished trial: a path trial's levels, else its final model (if it
    completed). `start` is the sweep's first trial's start (a POSIX time)."""
    done = trial.datetime_complete
    common = {
        **{k: row.get(k) for k in TRIAL_COLUMNS},
        **dict(trial.params),
        "finished": done.isoformat() if done else None,
        "seconds": done.timestamp() - start if done else math.nan,
        "run_dir": row.get("run_dir"),
    }
    overrides = row.get("overrides") or ""
    levels = rounds(row.get("run_dir")) if row.get("prune_path") else None
    if levels is None:
        if row.get("status") != "complete":
            return []
        level = row.get("prune_sparsity")
        return [{"trial": trial.number, "kind": "trial", "level": level, **common,
                 **{k: row.get(k) for k in FIGURES}, "overrides": overrides,
                 "command": row.get("command")}]  # fmt: skip
    out = []
    for level in levels.to_dict("records"):
        # the level as Python prints it reads back as the same float: stop_at matches it
        at = f"prune.stop_at={level['target']!r}"
        stop = shlex.join([*shlex.split(overrides), at])
        run = f"{row['command']} {shlex.quote(at)}" if row.get("command") else None
        out.append({"trial": trial.number, "kind": "path", "level": level["target"],
                    "round": level["round"], "reached_by": level.get("reached_by"), **common,
                    **{k: level.get(k) for k in FIGURES},
                    "model_file": level.get("model_file"), "overrides": stop,
                    "command": run})  # fmt: skip
    return out


def first_start(trials: Sequence[optuna.trial.FrozenTrial]) -> float | None:
    """The sweep's first trial's start among `trials` (a POSIX time; `trial_points`' start),
    None where none has one."""
    starts = [t.datetime_start.timestamp() for t in trials if t.datetime_start]
    return min(starts) if starts else None


def write(points: Sequence[dict], path: Path) -> None:
    """Rewrite points.csv at `path` from the finished trials' points (`trial_points`),
    sorted by trial and level, atomically (sweep/results/table.py `write_rows`); a column no
    point has a value in is left out; nothing is written for a sweep without a point."""
    if not points:
        return
    pts = sorted(points, key=lambda p: (p["trial"], _level_key(p.get("level"))))
    filled = {k for p in pts for k, v in p.items() if not table.missing(v)}
    columns = [c for c in table.ordered(pts, FIRST) if c not in LAST and c in filled]
    table.write_rows(pts, columns + [c for c in LAST if c in filled], path)


def _level_key(level: object) -> tuple[bool, float]:
    """Levels ascending, a point without one (None, NaN) last, as pandas sorts them."""
    gap = table.missing(level)
    return (gap, 0.0 if gap else float(level))  # type: ignore[arg-type]


def frame_classes(frame: pd.DataFrame) -> int | None:
    """The data's classes that `frame`'s points record in their `n_classes` column; None where
    none does. ValueError where they record several: points of data sets with different
    chance accuracies have no common reference point."""
    found = sorted({int(n) for n in frame.get("n_classes", pd.Series(dtype=float)).dropna()})
    if len(found) > 1:
        raise ValueError(f"points of data with {found} classes have no common reference point")
    return found[0] if found else None


def frame_reference(frame: pd.DataFrame) -> tuple[float, float]:
    """The reference point of `frame`'s points: (0, 1 / the classes they record), or of
    ASSUMED_CLASSES (10) where they record none (see frame_classes)."""
    return chance_reference(frame_classes(frame) or ASSUMED_CLASSES)


def front_figures(
    frame: pd.DataFrame, reference: Sequence[float] | None = None, x_max: float = math.inf
) -> dict:
    """The front of `frame`'s points (columns sparsity, val_acc, test_acc) chosen on
    validation accuracy, and its hypervolumes against `reference` (sweep/results/hypervolume.py;
    None: `frame_reference`, chance on the classes the points record): `hypervolume` of
    (kept_axis(sparsity), val_acc), `test_hypervolume` of the same points'
    (kept_axis(sparsity), test_acc): the test set never chooses a point. `front` is the
    front's row labels, by sparsity ascending. `x_max` caps x: the space beyond it is left
    out, and a sparser point counts as one at x_max (it is at least as sparse)."""
    reference = frame_reference(frame) if reference is None else reference
    xs = [min(kept_axis(s), x_max) for s in frame["sparsity"]]
    val = list(zip(xs, frame["val_acc"]))
    best = front(val)
    test = [(xs[i], frame["test_acc"].iloc[i]) for i in best]
    return {"front": [frame.index[i] for i in best],
            "hypervolume": hypervolume([val[i] for i in best], reference),
            "test_hypervolume": hypervolume(test, reference)}  # fmt: skip


def history(frame: pd.DataFrame, reference: Sequence[float] | None = None) -> pd.DataFrame:
    """The front's hypervolumes as a sweep ran: one row per trial of points.csv's `frame`, in
    the order they finished, with `finished` (a datetime), `seconds` (from points.csv), the
    points measured so far, and `hypervolume`, `test_hypervolume` (front_figures) of the
    points of the trials finished by then, against `reference` (None: frame_reference)."""
    reference = frame_reference(frame) if reference is None else reference
    f = frame.dropna(subset=["val_acc", "test_acc", "sparsity"]).reset_index(drop=True)
    f["finished"] = pd.to_datetime(f["finished"])
    done = f.groupby("trial")[["finished", "seconds"]].first().sort_values("finished")
    rows = []
    for trial, (finished, seconds) in done.iterrows():
        seen = f[f["finished"] <= finished]
        figures = front_figures(seen, reference)
        rows.append({"trial": trial, "finished": finished, "seconds": seconds,
                     "points": len(seen), "hypervolume": figures["hypervolume"],
                     "test_hypervolume": figures["test_hypervolume"]})  # fmt: skip
    return pd.DataFrame(rows)
