"""A result row, defined once: every column of results.csv (and metrics.json, and the trial's
dashboard attributes), in the order a reader meets them, with its type and one line of meaning.

Everything else derives from this table: the CSV's column order (sweep/results/table.py), the types
`sweep.analyze` reads it with, which figures a repeated run reports the spread of, and the column
table of docs/outputs.md (`python -m sweep.results.row` prints it; a test compares them). Adding a
column is one line here plus the code that computes its value.

A row is made here too, in steps that each name only columns of the table (`columns` checks,
so a mistyped name fails the run that makes it, not a CSV column): the job's figures
(`sweep.task.job`), its objective values (`sweep.run.main`, as a `JobResult`) and the sweep's
trial number, overrides and directory (`JobResult.to_row`, from the trial loop or from a
finished job's files).
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sweep.results import command


@dataclass(frozen=True)
class Column:
    """One results.csv column. `dtype` is the pandas dtype `sweep.analyze` reads it as (None:
    as pandas infers it); `spread`: a repeated run (repeats > 1) also reports the seeds' sample
    standard deviation as `<name>_std`; `choice`: the value is the run's option of the config
    group of that name."""

    name: str
    dtype: str | None
    meaning: str
    spread: bool = False
    choice: bool = False


def _c(name: str, dtype: str | None, meaning: str, **flags: bool) -> Column:
    return Column(name, dtype, meaning, **flags)


_PRUNED = "where pruned: "
DEFINITION: tuple[Column, ...] = (
    _c("trial", "int64", "Optuna trial number (unique within the study; also the `trial_<N>` directory)"),  # noqa: E501
    _c("status", "string", "`complete`, `pruned` (stopped early by the sweep's pruner), `diverged` (non-finite loss: stopped, failed in the study) or `failed` (the run raised, or its process died)"),  # noqa: E501
    _c("error", "string", "for a `failed` row, why, in one line: the exception's type and first line (`KeyError: 'bogus'`), or how the trial's process ended (`... was killed by SIGKILL (out of memory?)`, `... exited with code 3 before returning its result`); empty otherwise"),  # noqa: E501
    _c("l1_lambda", "float64", "the L1 strength the regularizer applied (0 where it has no L1 term)"),  # noqa: E501
    _c("l2_lambda", "float64", "the L2 strength the regularizer applied (0 where it has no L2 term)"),  # noqa: E501
    _c("group_lambda", "float64", "`regularizer=group_l1` / `sparse_group_l1` only: the group lasso's strength"),  # noqa: E501
    _c("bn_lambda", "float64", "`regularizer=bn_l1` only: the L1 strength on every BatchNorm's scale (network slimming)"),  # noqa: E501
    _c("bn_zero_scales", "float64", "BatchNorm channels whose scale (gamma) is exactly zero; empty for a model without BatchNorm"),  # noqa: E501
    _c("regularizer", "string", "the `regularizer` group option of the run", choice=True),
    _c("groups", "string", "the group lasso's groups: `neurons`, `inputs`, `both` or `channels` (conv filters only)"),  # noqa: E501
    _c("model", "string", "the `model` group option", choice=True),
    _c("data", "string", "the `data` group option", choice=True),
    _c("optimizer", "string", "the `optimizer` group option", choice=True),
    _c("schedule", "string", "the `schedule` group option", choice=True),
    _c("prune", "string", "the `prune` group option", choice=True),
    _c("prune_sparsity", "float64", "magnitude pruning's target fraction of zeros (empty without pruning)"),  # noqa: E501
    _c("prune_scope", "string", "`global` (one cut over all counted weights) or `layer` (the same cut in each)"),  # noqa: E501
    _c("prune_rounds", "Int64", "prune rounds, each followed by masked fine-tuning"),
    _c("prune_epochs", "Int64", "fine-tuning epochs per prune round"),
    _c("prune_lr_scale", "float64", "fine-tuning's lr as a multiple of `optimizer.lr`"),
    _c("prune_criterion", "string", "`prune=neurons`: how channels rank, `norm` (the filter's, or a coupled channel group's, L2 norm) or `bn_scale` (BatchNorm |gamma|, network slimming)"),  # noqa: E501
    _c("prune_inputs", "float64", "`prune=neurons`: the fraction of the first layer's inputs removed by norm (`prune.inputs`)"),  # noqa: E501
    _c("prune_path", "string", "a path's levels walked (`prune.path`, up to `prune.stop_at`), comma-separated; each level's model is a row of the sweep's `points.csv`"),  # noqa: E501
    _c("path_hypervolume", "float64", "a path's hypervolume: the area its levels dominate in (`-log10(1 - sparsity)`, `val_acc`) above the reference point (0, 1 / classes) (sweep/results/hypervolume.py)"),  # noqa: E501
    _c("seed", "Int64", "the run's seed (the first seed of a repeated run)"),
    _c("repeats", "Int64", "seeds per configuration: the figures are their mean, `*_std` their spread"),  # noqa: E501
    _c("epochs", "Int64", "training epochs actually run (fine-tuning's are `prune_rounds * prune_epochs`)"),  # noqa: E501
    _c("stopped_at", "Int64", "for a `pruned` row, the step the sweep's pruner stopped it at: an epoch (fine-tuning's numbered on from training's; seed i of `repeats` from `i * span`) or a prune level's end; empty otherwise"),  # noqa: E501
    _c("val_acc", "float64", "the final model's accuracy in [0, 1] on the validation split: what the search sees", spread=True),  # noqa: E501
    _c("test_acc", "float64", "the final model's accuracy on the held-out test set, never seen by the search", spread=True),  # noqa: E501
    _c("pruned_val_acc", "float64", "`val_acc` after setting every counted weight with `|w| <= tol` to exactly zero", spread=True),  # noqa: E501
    _c("pruned_test_acc", "float64", "`test_acc` of that thresholded model: what a pruned, deployed model scores", spread=True),  # noqa: E501
    _c("sparsity", "float64", "fraction of the counted parameters that are exactly `0.0` (the seed's `check_sparsity`, as a fraction)", spread=True),  # noqa: E501
    _c("sparsity_tol", "float64", "fraction of the counted parameters with `|w| <= tol`"),
    _c("tol", "float64", "the threshold of `sparsity_tol` and `pruned_*` (`sparsity.tol`, default 1e-3)"),  # noqa: E501
    _c("sparsity_params", "string", "which parameters are counted: the ones the regularizer acts on, `all` (weights and biases, the seed) or `weights` (weight matrices only)"),  # noqa: E501
    _c("nnz", "float64", "non-zero counted parameters: `sparsity == (n_params - nnz) / n_params`"),
    _c("n_params", "Int64", "counted parameters"),
    _c("active_inputs", "float64", "input features (pixels) with at least one non-zero outgoing weight in the first layer; empty where the first layer is a convolution"),  # noqa: E501
    _c("n_classes", "Int64", "classes of the data: chance accuracy, `1 / n_classes`, is the reference of `path_hypervolume` and of `sweep.analyze`'s hypervolumes"),  # noqa: E501
    _c("n_inputs", "Int64", "input features of the data"),
    _c("groups_removed", "float64", "hidden neurons and conv filters, and inputs (features or pixels; a conv first layer's channels), that `sweep.models.compact` takes out: a unit goes when its incoming weights are all zero (its constant output folded into the next layer's bias) or its outgoing weights are (unreachable); the output layer's units never"),  # noqa: E501
    _c("channels_removed", "float64", "a network `sweep.models.compact` cannot follow (residual adds, concatenations, BatchNorm: `sweep.models.graph`): the channels, coupled ones counted once, exactly zero wherever they are made, that its compact model cuts; the output layer's never"),  # noqa: E501
    _c("compact_shape", "string", "the compact model's widths: inputs read, then the units of each layer (`430-37-10`; lenet5: `784-4-11-70-84-10`, channels for the convolutions); empty for a model compaction cannot follow"),  # noqa: E501
    _c("flops", "float64", "multiply-adds per example of the compact model's Linear and Conv layers (biases, activations, pooling not counted)"),  # noqa: E501
    _c("flops_ratio", "float64", "the dense model's multiply-adds divided by `flops`"),
    _c("train_loss", "float64", "mean training loss of the last epoch (of the last fine-tuning round, where pruned): cross-entropy plus the penalty's value"),  # noqa: E501
    _c("trained_val_acc", "float64", _PRUNED + "`val_acc` of the model as trained, before pruning", spread=True),  # noqa: E501
    _c("trained_test_acc", "float64", _PRUNED + "`test_acc` of the model as trained", spread=True),
    _c("trained_sparsity", "float64", _PRUNED + "`sparsity` of the model as trained", spread=True),
    _c("trained_sparsity_tol", "float64", _PRUNED + "`sparsity_tol` of the model as trained"),
    _c("trained_nnz", "float64", _PRUNED + "`nnz` of the model as trained"),
    _c("trained_active_inputs", "float64", _PRUNED + "`active_inputs` of the model as trained"),
    _c("trained_train_loss", "float64", _PRUNED + "`train_loss` of the training, before pruning"),  # noqa: E501
    _c("oneshot_val_acc", "float64", _PRUNED + "the trained model cut at once to the final target, without fine-tuning; `val_acc - oneshot_val_acc` is what fine-tuning won back", spread=True),  # noqa: E501
    _c("oneshot_test_acc", "float64", _PRUNED + "`test_acc` of that one-shot cut", spread=True),
    _c("archive_bytes", "float64", "bytes of the final model's compressed archive `model.l1z`, everything included (sweep/deploy/archive.py: CSR or bitmap indices, `export.bits`-bit codebooks, biases, header, checksum)"),  # noqa: E501
    _c("compression", "float64", "the dense fp32 `state_dict`'s bytes (as `torch.save` writes them) / `archive_bytes`"),  # noqa: E501
    _c("archive_val_acc", "float64", "`val_acc` of the weights decoded from the archive's bytes (shared codebook values, fp16 biases)", spread=True),  # noqa: E501
    _c("archive_test_acc", "float64", "`test_acc` of the weights decoded from the archive's bytes", spread=True),  # noqa: E501
    _c("train_seconds", "float64", "wall time of the training loop and any fine-tuning (with the per-epoch validation lines); the seeds' total for a repeated run"),  # noqa: E501
    _c("device", "string", "where it trained"),
    _c("objective", "float64", "the value the sweeper optimized, in its direction (single-objective sweeps)"),  # noqa: E501
    _c("pareto", "boolean", "Pareto-optimal in the study's objectives (multi-objective sweeps)"),
    _c("overrides", "string", "the trial's overrides of the sweep's configuration (no hydra.*), one shell-quoted line; with the configuration's flags they are `command`"),  # noqa: E501
    _c("command", "string", "the command that reruns the trial as a single run, from the directory the sweep was started in: `python -m sweep.run`, the flags that chose the sweep's configuration (`--config-dir`, `--config-name`, sweep/results/command.py) and `overrides`; it reproduces `val_acc`, `test_acc` and `sparsity` exactly on the same machine"),  # noqa: E501
    _c("run_dir", "string", "the trial's directory"),
)  # fmt: skip

BY_NAME: dict[str, Column] = {c.name: c for c in DEFINITION}
# Config groups whose chosen option a row names.
CHOICES: tuple[str, ...] = tuple(c.name for c in DEFINITION if c.choice)
# What a pruned run's row keeps, as trained_<name>, of the model before pruning.
TRAINED: tuple[str, ...] = tuple(
    c.name.removeprefix("trained_")
    for c in DEFINITION
    if c.name.startswith("trained_") and c.name != "trained_train_loss"
)
SPREAD: tuple[str, ...] = tuple(c.name for c in DEFINITION if c.spread)


def order() -> list[str]:
    """The CSV's column order: each column, and its `_std` right after it where it has one."""
    return [n for c in DEFINITION for n in (c.name, *((f"{c.name}_std",) * c.spread))]


def dtypes() -> dict[str, str]:
    """The pandas dtype of every typed column, `_std` columns included (float64)."""
    typed = {c.name: c.dtype for c in DEFINITION if c.dtype is not None}
    return {**typed, **{f"{name}_std": "float64" for name in SPREAD}}


def markdown() -> str:
    """The column table of docs/outputs.md."""
    lines = ["| column | type | meaning |", "|---|---|---|"]
    for c in DEFINITION:
        name = f"`{c.name}`" + (f", `{c.name}_std`" if c.spread else "")
        lines.append(f"| {name} | {c.dtype or '-'} | {c.meaning} |")
    return "\n".join(lines)


# A run's validation curve ([step, val_acc], ...): metrics.json keeps it, the row does not.
CURVE = "val_acc_curve"
# A repeated run's per-seed figures: its metrics.json keeps them, the row does not.
SEEDS = "seeds"


class UndefinedColumn(ValueError):
    """A row was given a column DEFINITION does not have: a programming error (a mistyped name,
    or a new figure without its line in DEFINITION)."""


def _defined(name: str) -> bool:
    return name in BY_NAME or (name.endswith("_std") and name.removesuffix("_std") in SPREAD)


def check(names: Iterable[str], where: str) -> None:
    """Raise UndefinedColumn naming those of `names` that are no column of DEFINITION (a spread
    column's `<name>_std` is one); `where` says what made them."""
    unknown = [n for n in names if not _defined(n)]
    if unknown:
        raise UndefinedColumn(
            f"{where}: {', '.join(map(repr, unknown))} is no column of sweep.results.row."
            "DEFINITION; fix the name, or add its line there"
        )


def columns(values: Mapping[str, Any], where: str = "a row") -> dict[str, Any]:
    """`values` (by column name) as a row's columns, in the order given, every name checked
    against DEFINITION (UndefinedColumn otherwise). A callback may add columns of its own to a
    run's row later; those are kept as they are, after the defined ones in the CSV."""
    check(values, where)
    return dict(values)


@dataclass
class JobResult:
    """What one job (`sweep.run.main`) hands the sweep: its row's `columns` as the run made
    them (`sweep.task.job`, and the callbacks' additions), its validation `curve`
    ([step, val_acc], ...) and its `objective` values (one per objective metric; None for a
    job that failed). `to_row` is the one place a trial's results.csv row is finished."""

    columns: dict[str, Any]
    curve: list[list[float]] = field(default_factory=list)
    objective: list[float] | None = None

    @classmethod
    def of_metrics(cls, metrics: Mapping[str, Any], objective: Sequence[float]) -> JobResult:
        """From a run's metrics (what its metrics.json holds: the row, the curve and, for a
        repeated run, the seeds' own figures) and its objective values."""
        row = {k: v for k, v in metrics.items() if k not in (CURVE, SEEDS)}
        return cls(row, list(metrics.get(CURVE, [])), list(objective))

    @classmethod
    def failed(cls, error: str) -> JobResult:
        """A job that raised (or whose process died): status `failed`, and why in one line."""
        return cls(columns({"status": "failed", "error": error}, "a failed job"))

    @property
    def status(self) -> str:
        """The row's status: complete, pruned, diverged or failed."""
        return self.columns["status"]

    def to_row(
        self,
        trial: int,
        overrides: Sequence[str],
        run_dir: str | None,
        single: bool,
        flags: Sequence[str] = (),
    ) -> dict[str, Any]:
        """The trial's row: `trial`, the job's columns, `overrides` (the task's overrides as
        one shell-quoted line, no hydra.*), `command` (`flags`, the configuration's
        command-line flags from command.config_flags, and the overrides), `run_dir` and, for
        a single objective, `objective` (its one value, NaN if none). The sweep's trial loop
        (a told job) and the stale-trial recovery (a finished job's files) both make it here."""
        task = [o for o in overrides if not o.startswith("hydra.")]
        run = command.command(flags, task)
        row = {
            **columns({"trial": trial}),
            **self.columns,
            **columns({"overrides": shlex.join(task), "command": run, "run_dir": run_dir}),
        }
        if single:
            row.update(columns({"objective": (self.objective or [math.nan])[0]}))
        return row


if __name__ == "__main__":
    print(markdown())
