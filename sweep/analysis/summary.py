"""The summary's per-method sections: trial counts, best trial, Pareto front and knee as
markdown tables, the methods' comparison, and the command line that reruns a trial."""

from __future__ import annotations

import shlex
from collections.abc import Sequence

import pandas as pd

from sweep.analysis.fronts import (
    baselines,
    best,
    direction_word,
    knee,
    knee_rule,
    pareto_front,
)
from sweep.analysis.load import objectives, trial_dir
from sweep.errors import UserError
from sweep.results import command

SHOWN = ["trial", "l1_lambda", "prune_sparsity", "val_acc", "test_acc", "trained_test_acc",
         "sparsity", "sparsity_tol", "pruned_test_acc", "archive_bytes", "compression",
         "archive_test_acc", "overrides"]  # fmt: skip


def row_table(frame: pd.DataFrame, index: Sequence[int], columns: Sequence[str] = SHOWN) -> str:
    """The rows `index` of `frame` as a markdown table of the `columns` they have."""
    shown = [c for c in columns if c in frame.columns and frame[c].notna().any()]
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
    and the knee trial index of each. Raises UserError for a method with no complete trial."""
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
        axes = " vs ".join(f"{c} ({direction_word(m)})" for c, m in zip(cols, maximize))
        parts += [
            f"## {name} (regularizer {labels[0]}, data {labels[1]})",
            f"trials: {len(sweep)}, complete {complete}, pruned {pruned}, diverged {diverged}, "
            f"failed {failed}",
            f"\nbest trial, by {how}:\n",
            row_table(sweep, [best_index]),
            f"\nPareto front, {axes} ({len(front)} trials):\n",
            row_table(sweep, front.index),
            f"\nknee ({knee_rule(cols, maximize)}):\n",
            row_table(sweep, [knees[name]]),
            "",
        ]
    if frame["method"].nunique() > 1:
        parts.insert(0, _comparison(frame, knees, baselines(frame)))
    return "\n".join(parts), knees


def reproduce(row: pd.Series) -> str:
    """The command that reruns a trial: its `command` column (results/command.py); for a
    results.csv written before that column, its overrides with the flags read from the
    trial's .hydra/hydra.yaml."""
    given = row.get("command")
    if isinstance(given, str) and given:
        return given
    flags: list[str] = []
    hydra_yaml = trial_dir(row) / ".hydra" / "hydra.yaml"
    if hydra_yaml.is_file():
        from omegaconf import OmegaConf

        flags = command.config_flags(OmegaConf.load(hydra_yaml).hydra)
    overrides = row["overrides"] if isinstance(row["overrides"], str) else ""
    return command.command(flags, shlex.split(overrides))
