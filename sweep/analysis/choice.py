"""The one configuration to use: `python -m sweep.analyze DIR --max-drop POINTS`.

Among the complete trials whose validation accuracy is at most POINTS points (of 100) below a
reference, `choose` takes the smallest model (`--pick bytes`: the fewest `archive_bytes`), the
sparsest (`sparsity`) or the one with the fewest multiply-adds (`flops`); ties go to the higher
`val_acc`, then to the trial read first. The default pick is bytes where any complete trial has
`archive_bytes`, else sparsity; a trial with no value in the picked column is no candidate.

The reference is the best dense model the sweeps read trained (`fronts.near_dense`: a complete
trial with sparsity < 0.01 and prune=none, whatever its regularizer; and the baseline run of an
objective=within_drop sweep), or one the user names: `--reference ACC` (a validation accuracy)
or `--reference-trial N` (a trial of the first sweep). Validation picks; test accuracy is only
reported, as the figure on data the search never saw. Nothing within the drop chooses nothing
and names the closest trial (the highest val_acc). The choice is a section of the summary and
the one row of choice.csv (`choice_frame`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from sweep.analysis.fronts import DENSE_RULE, baseline_run, near_dense
from sweep.analysis.load import DIRECTIONS_COLUMN, METRICS_COLUMN, complete
from sweep.analysis.summary import SHOWN, reproduce, row_table
from sweep.errors import UserError

# --pick -> (column, minimized, the model it picks in words)
PICKS = {"bytes": ("archive_bytes", True, "the smallest archive"),
         "sparsity": ("sparsity", False, "the sparsest model"),
         "flops": ("flops", True, "the fewest multiply-adds")}  # fmt: skip
SHOWN_CHOSEN = [*SHOWN[:-1], "flops", "compact_shape", SHOWN[-1]]
EPS = 1e-9  # 0.9688 - 1.0 / 100 must keep a trial at 0.9588


@dataclass(frozen=True)
class Want:
    """What the user asked for: `max_drop` points of val_acc below the reference at most;
    `pick` (a PICKS key; None: the default); the reference, `reference` (a val_acc) or
    `reference_trial` (a trial of the first sweep), or neither (the best dense trial)."""

    max_drop: float
    pick: str | None = None
    reference: float | None = None
    reference_trial: int | None = None


@dataclass(frozen=True)
class Reference:
    """The val_acc the drop is measured from, where it came from in words, and its row."""

    val_acc: float
    label: str
    index: int | None = None


@dataclass(frozen=True)
class Choice:
    """What `choose` found: `index`, the chosen row (None: nothing within the drop);
    `closest`, the row reported (the chosen one, else the candidate nearest the reference);
    `within` of `candidates` complete trials with the picked column are within the drop."""

    want: Want
    pick: str
    reference: Reference
    index: int | None
    closest: int
    within: int
    candidates: int

    @property
    def floor(self) -> float:
        """The lowest val_acc within the drop."""
        return self.reference.val_acc - self.want.max_drop / 100


def _check(want: Want) -> None:
    """Raises UserError for a drop or reference no accuracy can be measured against."""
    if not math.isfinite(want.max_drop) or want.max_drop < 0:
        raise UserError(f"--max-drop {want.max_drop:g}: give points of val_acc, 0 or more; e.g. 1")
    if want.pick is not None and want.pick not in PICKS:
        raise UserError(f"--pick {want.pick}: no such choice; use one of {', '.join(PICKS)}")
    if want.reference is not None and not 0 < want.reference <= 1:
        raise UserError(
            f"--reference {want.reference:g}: give a validation accuracy in (0, 1]; e.g. 0.97"
        )


def _one_data(frame: pd.DataFrame) -> None:
    """Raises UserError where the complete trials trained on more than one data set."""
    data = frame.loc[complete(frame), "data"].dropna().unique() if "data" in frame else []
    if len(data) > 1:
        raise UserError(
            f"--max-drop compares trials on one data set, and these trained on "
            f"{', '.join(sorted(data))}; analyze each data set's sweeps apart"
        )


def _pick(frame: pd.DataFrame, pick: str | None) -> str:
    """The PICKS key to choose by: `pick`, else bytes where any complete trial has
    archive_bytes, else sparsity. Raises UserError where no complete trial has its column."""
    done = frame[complete(frame)]
    if pick is None:
        has_bytes = "archive_bytes" in done and done["archive_bytes"].notna().any()
        return "bytes" if has_bytes else "sparsity"
    column = PICKS[pick][0]
    if column not in done or done[column].isna().all():
        others = ", ".join(p for p in PICKS if p != pick)
        raise UserError(f"--pick {pick}: no complete trial has {column}; use --pick {others}")
    return pick


def name(frame: pd.DataFrame, index: int) -> str:
    """A row as the summary names it: `trial N`, and its sweep where several were read."""
    row = frame.loc[index]
    several = frame["sweep"].nunique() > 1
    return f"trial {row['trial']}" + (f" of {row['sweep']}" if several else "")


def _given_trial(frame: pd.DataFrame, trial: int) -> Reference:
    """The first sweep's trial `trial` as the reference. Raises UserError where it has none
    or it did not complete."""
    first = frame["sweep"].iloc[0]
    match = frame.index[(frame["sweep"] == first) & (frame["trial"] == trial)]
    if match.empty:
        raise UserError(f"--reference-trial {trial}: no trial {trial} in {first}; see results.csv")
    row = frame.loc[match[0]]
    if row["status"] != "complete" or pd.isna(row["val_acc"]):
        raise UserError(
            f"--reference-trial {trial}: trial {trial} of {first} is {row['status']}, with no "
            "validation accuracy to measure from; name a complete trial"
        )
    label = f"{name(frame, match[0])}, given (--reference-trial {trial})"
    return Reference(float(row["val_acc"]), label, int(match[0]))


def reference(frame: pd.DataFrame, want: Want) -> Reference:
    """The val_acc the drop is measured from: the one given, else the best of the dense trials
    (fronts.near_dense) and within_drop baseline runs. Raises UserError where there is none."""
    if want.reference is not None:
        return Reference(float(want.reference), f"given (--reference {want.reference:g})")
    if want.reference_trial is not None:
        return _given_trial(frame, want.reference_trial)
    known = []
    dense = frame[near_dense(frame)]
    if not dense.empty:
        best = dense["val_acc"].idxmax()
        label = f"{name(frame, best)}, the best dense trial ({DENSE_RULE})"
        known.append(Reference(float(dense.loc[best, "val_acc"]), label, int(best)))
    for sweep, rows in frame.groupby("sweep", sort=False):
        run = baseline_run(rows["csv"].iloc[0])
        if run is not None:
            label = f"the dense baseline run of {sweep} (objective=within_drop)"
            known.append(Reference(run, label))
    if not known:
        raise UserError(
            f"--max-drop: no dense trial to measure the drop from (none {DENSE_RULE}); give "
            "one: --reference VAL_ACC (e.g. a dense run's, regularizer=none) or --reference-trial N"
        )
    return max(known, key=lambda r: r.val_acc)  # ties: the dense trial


def choose(frame: pd.DataFrame, want: Want) -> Choice:
    """The configuration to use (see the module's docstring). Raises UserError, before anything
    is written, for a bad `want`, trials of several data sets, a pick no trial has a value
    for, or no reference."""
    _check(want)
    _one_data(frame)
    pick = _pick(frame, want.pick)
    ref = reference(frame, want)
    column, minimize, _ = PICKS[pick]
    pool = frame[complete(frame) & frame["val_acc"].notna() & frame[column].notna()]
    if pool.empty:
        raise UserError(
            f"--max-drop: no complete trial has both val_acc and {column} to choose from; "
            "run trials to the end, or pick another column with --pick"
        )
    within = pool[pool["val_acc"] >= ref.val_acc - want.max_drop / 100 - EPS]
    if within.empty:
        nearest = pool.sort_values(["val_acc", column], ascending=[False, minimize], kind="stable")
        return Choice(want, pick, ref, None, int(nearest.index[0]), 0, len(pool))
    ranked = within.sort_values([column, "val_acc"], ascending=[minimize, False], kind="stable")
    first = int(ranked.index[0])
    return Choice(want, pick, ref, first, first, len(within), len(pool))


def _points_below(choice: Choice, row: pd.Series) -> float:
    """How many points of val_acc `row` is below the reference (negative: above)."""
    return (choice.reference.val_acc - float(row["val_acc"])) * 100


def describe(choice: Choice, row: pd.Series) -> str:
    """The chosen row's figures in one line: val_acc and its drop, test accuracy, size."""
    below = _points_below(choice, row)
    where = f"{abs(below):.2f} points {'below' if below >= 0 else 'above'} the reference"
    parts = [f"val_acc {row['val_acc']:.4f} ({where})"]
    if pd.notna(row.get("test_acc")):
        parts.append(f"test_acc {row['test_acc']:.4f} (test set: never seen by the search)")
    if pd.notna(row.get("archive_bytes")):
        parts.append(f"archive {row['archive_bytes']:,.0f} bytes")
    parts.append(f"sparsity {row['sparsity']:.1%}")
    if pd.notna(row.get("flops")):
        parts.append(f"{row['flops']:,.0f} multiply-adds")
    if pd.notna(row.get("compact_shape")) and row.get("compact_shape"):
        parts.append(f"compact shape {row['compact_shape']}")
    return ", ".join(parts)


def _nothing(frame: pd.DataFrame, choice: Choice, drop: str) -> str:
    """The one line of a choice with nothing within the drop, naming the closest trial."""
    row = frame.loc[choice.closest]
    below = _points_below(choice, row)
    need = math.ceil(below * 100 - 1e-6) / 100  # the drop that admits it, to 0.01 (EPS)
    return (
        f"nothing within {drop} of it on validation (val_acc >= {choice.floor:.4f}): the closest "
        f"is {name(frame, choice.closest)}, val_acc {row['val_acc']:.4f} ({below:.2f} points "
        f"below); nothing chosen (--max-drop {need:g} would admit it)"
    )


def choice_text(frame: pd.DataFrame, choice: Choice) -> str:
    """The summary's section: the reference, the rule, and the chosen row as a table, the
    command that reproduces it and its figures; or one line saying nothing is within the drop,
    naming the closest trial."""
    column, minimize, words = PICKS[choice.pick]
    max_drop, ref = choice.want.max_drop, choice.reference
    drop = f"{max_drop:g} point" + ("" if max_drop == 1 else "s")
    head = [f"## the configuration to use (--max-drop {max_drop:g}, --pick {choice.pick})", "",
            f"reference: val_acc {ref.val_acc:.4f}, {ref.label}"]  # fmt: skip
    if choice.index is None:
        return "\n".join([*head, _nothing(frame, choice, drop), ""])
    row, chosen = frame.loc[choice.index], name(frame, choice.index)
    return "\n".join([*head, (
        f"within {drop} of it on validation (val_acc >= {choice.floor:.4f}): {choice.within} of "
        f"{choice.candidates} complete trials with {column}; {words} "
        f"({'min' if minimize else 'max'} {column}) is {chosen}:"), "",
        row_table(frame.loc[[choice.index]], [choice.index], SHOWN_CHOSEN), "",
        f"use: {reproduce(row)}", f"{chosen}: {describe(choice, row)}", ""])  # fmt: skip


def choice_frame(frame: pd.DataFrame, choice: Choice) -> pd.DataFrame:
    """choice.csv: one row, the choice's fields (`chosen`: False where nothing is within the
    drop and the row is the closest trial's) before the trial's own results.csv columns."""
    row = frame.loc[[choice.closest]].drop(
        columns=["csv", METRICS_COLUMN, DIRECTIONS_COLUMN], errors="ignore"
    )
    ref = choice.reference
    fields = {"chosen": choice.index is not None, "pick": choice.pick,
              "pick_column": PICKS[choice.pick][0], "max_drop": choice.want.max_drop,
              "reference_val_acc": ref.val_acc, "reference": ref.label,
              "reference_trial": frame.loc[ref.index, "trial"] if ref.index is not None else None,
              "drop": _points_below(choice, frame.loc[choice.closest]),
              "reproduce": reproduce(frame.loc[choice.closest])}  # fmt: skip
    return pd.concat([pd.DataFrame([fields], index=row.index), row], axis=1)
