"""Reading sweeps back: their results.csv files as one typed frame, and what each optimized.

`load(paths)` is where every analysis starts: one row per trial of every sweep named, with a
`sweep` column, a `csv` column and the sweep's objective (`Objective`: its metrics and their
directions, from optimization_results.yaml or a trial's .hydra/config.yaml). `complete` and
`trial_dir` are the two questions the rest of sweep.analysis asks of a row (a row's `run_dir`
is resolved against the sweep directory its results.csv is in: a copied or moved sweep is read
where it is now, `resolve_run_dir`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from sweep.errors import UserError
from sweep.results.row import dtypes

REQUIRED = ["trial", "status", "l1_lambda", "val_acc", "test_acc", "sparsity", "overrides"]
TYPES = dtypes()  # every column's type, from the row's one definition
FRONT = ("val_acc", "sparsity")
# the columns `load` adds: each row's sweep's objective metrics and directions, comma-joined
METRICS_COLUMN, DIRECTIONS_COLUMN = "objective_metrics", "objective_directions"


def csv_path(path: Path) -> Path:
    """The results.csv of `path` (a sweep directory, or the CSV itself). Raises UserError
    where `path` does not exist or has no results.csv."""
    if not path.exists():
        raise UserError(f"no such file or directory: {path}; pass a sweep directory or its CSV")
    csv = path / "results.csv" if path.is_dir() else path
    if not csv.is_file():
        raise UserError(f"{path} has no results.csv; is it a sweep directory (outputs/sweeps/…)?")
    return csv


def _read(csv: Path) -> pd.DataFrame:
    """The rows of one results.csv, each column cast to its type (TYPES). Raises UserError
    for a file that is not a readable l1sweep CSV or holds no trials."""
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
        sources.append(resolve_run_dir(run_dir, csv.parent) / ".hydra" / "config.yaml")
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


def load(paths: Sequence[str | Path]) -> pd.DataFrame:
    """One typed frame of the trials of every sweep, with a `sweep` column (its directory name,
    or its path where two sweeps share a name), a `csv` column (the file it came from) and
    each sweep's objective (`objective_metrics`, `objective_directions`: see objective_of).
    A sweep named twice is read once. Raises UserError for a path with no readable
    results.csv holding trials."""
    frames = []
    csvs = dict.fromkeys(csv_path(Path(p)).resolve() for p in paths)
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


def complete(frame: pd.DataFrame) -> pd.Series:
    """True for the rows of trials that completed (not diverged, not failed): a boolean
    Series on `frame`'s index."""
    return frame["status"].eq("complete").fillna(False)


def resolve_run_dir(run_dir: object, sweep_dir: Path) -> Path:
    """Where a stored `run_dir` is for the sweep directory it was found in: the same path
    relative to the sweep's directory (a trial's directory sits in the sweep's, trial_<n>, so
    a copied or moved sweep's row names the copy's trial, never the original's), or the stored
    path itself only where the sweep directory has no such entry (a results.csv kept apart
    from its trials)."""
    stored = Path(str(run_dir))
    here = sweep_dir / stored.name
    if here.exists() or not stored.exists():
        return here
    return stored


def trial_dir(row: pd.Series) -> Path:
    """The directory of a trial's files (model.pt, .hydra/, export/): its `run_dir` resolved
    against the directory of the results.csv the row was read from (`resolve_run_dir`)."""
    return resolve_run_dir(row.get("run_dir", ""), Path(row["csv"]).parent)
