"""One configuration's run, the job a sweep's trial or `python -m sweep.run` executes: build the
data and model, fit, prune and fine-tune, measure, and hand the model and its row to the
callbacks (sweep/task/callbacks.py), which write the run's files.

    preflight(cfg)                          # the one check of a configuration, before training
    run(cfg, out_dir, choices, report)      # repeats: one run_seed per seed, one combined row
      run_seed(...)                         # preflight -> fit -> [prune_and_finetune] -> measure
        Run, Progress                       # what callbacks see; the epoch numbering
"""

from __future__ import annotations

import copy
import logging
import math
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn as nn
from omegaconf import DictConfig, OmegaConf

from sweep.config import user_code
from sweep.data.datasets import Dataset
from sweep.errors import UserError
from sweep.models import compact
from sweep.results import row
from sweep.results.hypervolume import path_hypervolume
from sweep.sparsity import pruning
from sweep.sparsity.measures import zero_scales
from sweep.sparsity.pruning import Pruner
from sweep.sparsity.regularizers import Regularizer
from sweep.task import callbacks as callback_classes
from sweep.task import rules
from sweep.task.callbacks import Callback, write_json
from sweep.task.context import Run
from sweep.training.train import (
    Fit,
    Measures,
    accuracy,
    build,
    fit,
    make_optimizer,
    measure,
    resolve_device,
    set_threads,
)

log = logging.getLogger(__name__)


class PointReporter(Protocol):
    """A multi-objective sweep's pruner, on the job's side (sweep/search/front.py): at a step it
    `wants`, it gets the run's point, {name: value} for each of its `metrics` (the objective's;
    None for a figure not measured at that step), and says whether to stop."""

    metrics: tuple[str, ...]

    def wants(self, step: int) -> bool: ...

    def __call__(self, step: int, point: Mapping[str, float | None]) -> bool: ...


# report(step, val_acc) -> stop? (a single-objective sweep's pruner), or a PointReporter
Reporter = Callable[[int, float], bool] | PointReporter


class _Shifted:
    """A PointReporter whose steps are offset (seed i of `repeats` reports from i * span) and
    that never checks the run's `last` step: no step remains after it to stop."""

    def __init__(self, report: PointReporter, offset: int, last: int) -> None:
        self.report, self.offset, self.last = report, offset, last
        self.metrics = report.metrics

    def wants(self, step: int) -> bool:
        return self.offset + step < self.last and self.report.wants(self.offset + step)

    def __call__(self, step: int, point: Mapping[str, float | None]) -> bool:
        return self.report(self.offset + step, point)


def shifted(report: Reporter | None, offset: int, last: int) -> Reporter | None:
    """`report` with every step it is given moved on by `offset`; a PointReporter's also kept
    off the run's `last` step."""
    if report is None:
        return None
    if hasattr(report, "wants"):
        return _Shifted(report, offset, last)  # type: ignore[arg-type]
    if offset == 0:
        return report
    return lambda step, value: report(offset + step, value)  # type: ignore[operator]


def callbacks(cfg: DictConfig) -> list[Callback]:
    """The run's callbacks, in the order of `cfg.callbacks` then `cfg.logger` (the trackers,
    sweep/task/loggers.py; None entries dropped), stably sorted by their `order`; a `_target_`
    outside l1sweep only where `allow_targets` lists it. Raises UserError for a refused target
    or one that makes no Callback."""
    groups = [cfg.get("callbacks") or {}, cfg.get("logger") or {}]
    chosen = [node for group in groups for node in group.values() if node is not None]
    made = [callback_classes.made_directly(node) or build(node) for node in chosen]
    for cb, node in zip(made, chosen):
        if not isinstance(cb, Callback):
            raise UserError(
                f"callbacks: {node._target_} made a {type(cb).__name__}, not a "
                "sweep.task.callbacks.Callback; subclass it and override its hooks"
            )
    return sorted(made, key=lambda cb: cb.order)


_datasets: dict[tuple[str, int, str], Dataset] = {}


def dataset(cfg: DictConfig, device: torch.device) -> Dataset:
    """cfg.data split with cfg.seed, on `device`. Kept for the `repeats` seeds a trial uses, so a
    sweep's trials split (and copy to the device) once per seed: the loaders' own caches hold
    two seeds, which repeats > 2 would thrash."""
    key = (OmegaConf.to_yaml(cfg.data, resolve=True), cfg.seed, str(device))
    if key not in _datasets:
        while len(_datasets) >= cfg.repeats:
            _datasets.pop(next(iter(_datasets)))  # the oldest: another configuration's seeds
        _datasets[key] = build(cfg.data, seed=cfg.seed).to(device)
    return _datasets[key]


@dataclass
class Parts:
    """What the pre-flight check built from a configuration: its regularizer, pruner and
    callbacks, the device, the data (split with cfg.seed), the model and its optimizer."""

    reg: Regularizer
    pruner: Pruner
    callbacks: list[Callback]
    device: torch.device
    data: Dataset
    model: nn.Module
    optimizer: torch.optim.Optimizer


def preflight(cfg: DictConfig, *, train: bool = False, pruner: Pruner | None = None) -> Parts:
    """The one check of a configuration before anything trains: each run's (`run_seed`, with
    train=True: this process's torch threads set, the data and the seeded model on the
    device) and a sweep's before its first trial (the sweeper, on its task config: the data
    loaded once, its loaders' caches kept for the trials it forks, placed only on a CPU).

    Raises UserError (one line) naming the first problem: a key out of range or keys that
    disagree (`rules.check`), the regularizer's or the pruner's own complaint, a callback
    refused or not a Callback, an unusable device, data that cannot be read, a model factory
    that breaks its contract, a model the pruner or the objective cannot follow. `pruner`:
    the one `run` built from cfg.prune already (not built twice)."""
    rules.check(cfg)
    reg: Regularizer = build(cfg.regularizer)
    pruner = build(cfg.prune) if pruner is None else pruner
    cbs = callbacks(cfg)
    device = resolve_device(cfg.device)
    if train:
        set_threads(cfg.train.threads)
        data = dataset(cfg, device)
        torch.manual_seed(cfg.seed)
    else:
        build(cfg.schedule)  # checked; its module imported once, not in each forked job
        # on a CPU placed as each trial's job places it (split, copied, checked for finite
        # values), so the jobs a sweep forks find it done: 10-25 ms a trial on digits (issue
        # 33). Not on a GPU: CUDA set up before a fork is unusable in the forked jobs.
        data = dataset(cfg, device) if device.type == "cpu" else build(cfg.data, seed=cfg.seed)
    model = build(cfg.model, n_inputs=data.n_inputs, n_classes=data.n_classes,
                  input_shape=data.image_shape)  # fmt: skip
    if train:
        model = model.to(device)
    optimizer = make_optimizer(cfg.optimizer, model)
    user_code.check_model(model, data)  # the factory's contract, before any training
    pruner.check(model, data.image_shape)  # prune=neurons: a model it can follow
    compact.check_objective(model, data.image_shape, list(cfg.objective.metrics))
    return Parts(reg, pruner, cbs, device, data, model, optimizer)


class Progress:
    """The run's measured epochs on one axis: training's epochs 1..E, then each prune round's
    fine-tuning numbered on from there (`advance`). Keeps the validation curve ([step, val_acc],
    ...), passes each epoch to the callbacks, and asks `report` (a sweep's pruner) whether to
    stop: with the validation accuracy, or (a PointReporter) with the objective's point at the
    steps it wants, prune levels' ends too (`level`). `stopped_at`: the step it said stop."""

    def __init__(self, run: Run, callbacks: list[Callback], report: Reporter | None) -> None:
        self.run, self.callbacks, self.report = run, callbacks, report
        self.base = 0
        self.curve: list[list[float]] = []
        self.stopped_at: int | None = None

    def __call__(self, epoch: int, metrics: dict[str, float]) -> bool:
        step = self.base + epoch
        self.curve.append([step, metrics["val_acc"]])
        for cb in self.callbacks:
            cb.on_epoch_end(self.run, step, metrics)
        if self.report is None:
            return False
        if hasattr(self.report, "wants"):
            return self._ask(step, metrics)
        return self._stop(step, self.report(step, metrics["val_acc"]))  # type: ignore[arg-type]

    def level(self, figures: Mapping[str, Any]) -> bool:
        """A prune level's end, at the step its fine-tuning ended (`advance` done): its
        measured figures (the archive's bytes among them) to a PointReporter. Stop?"""
        if self.report is None or not hasattr(self.report, "wants"):
            return False
        return self._ask(self.base, figures)

    def _ask(self, step: int, figures: Mapping[str, Any]) -> bool:
        """The objective's point at `step` to the PointReporter, where it wants one; the
        compact model's FLOPs measured only then (an epoch's metrics do not hold them)."""
        report: PointReporter = self.report  # type: ignore[assignment]
        if not report.wants(step):
            return False
        point = {m: figures.get(m) for m in report.metrics}
        if "flops" in point and point["flops"] is None:
            point["flops"] = compact.measures(self.run.model, self.run.data.image_shape)["flops"]
        return self._stop(step, report(step, point))

    def _stop(self, step: int, stop: bool) -> bool:
        if stop:
            self.stopped_at = step
        return bool(stop)

    def advance(self, epochs: int) -> None:
        """Move the axis on by `epochs` (a fine-tuning round's), so the next round's epochs
        number on from there."""
        self.base += epochs


def run(
    cfg: DictConfig, out_dir: Path, choices: dict[str, str], report: Reporter | None = None
) -> dict[str, Any]:
    """Train one configuration `repeats` times, with seeds seed, seed+1, ...: each seed carves its
    own validation split (Monte-Carlo cross-validation), inits and orders batches its own way.
    Returns the seeds' mean figures (the usual keys) and spreads (*_std); metrics.json in out_dir
    keeps each seed's figures too, each seed's files are in out_dir/seed_<seed>/. repeats=1 is
    one plain run_seed in out_dir.

    report(step, val_acc) -> stop? gets each measured epoch, the seeds back to back (seed i's
    epoch e is step i * span + e, span = the epochs a seed trains and fine-tunes), so a pruner
    compares trials at the same seed and epoch; True stops the run with status 'pruned' (and
    `stopped_at` the step). A PointReporter (several objectives) gets the objective's point at
    the steps it wants, prune levels' ends too, never the run's last step, and is closed
    (`close`: its points stored) when the run returns."""
    pruner: Pruner = build(cfg.prune)
    span = cfg.train.epochs + (pruner.rounds * pruner.epochs if pruner.active else 0)
    if cfg.repeats == 1:
        metrics = run_seed(cfg, out_dir, choices, shifted(report, 0, span), pruner)
    else:
        metrics = _repeated(cfg, out_dir, choices, report, span)
    if hasattr(report, "close"):  # a PointReporter stores its points once, at the end
        report.close()
    return metrics


def _repeated(
    cfg: DictConfig, out_dir: Path, choices: dict[str, str], report: Reporter | None, span: int
) -> dict[str, Any]:
    """`run` for repeats > 1: the seeds one after another, their row combined."""
    runs = []
    for i, seed in enumerate(range(cfg.seed, cfg.seed + cfg.repeats)):
        one = cfg.copy()
        one.seed = seed
        hook = shifted(report, i * span, cfg.repeats * span)
        runs.append(run_seed(one, out_dir / f"seed_{seed}", choices, hook))
        runs[-1][row.CURVE] = [[i * span + s, v] for s, v in runs[-1][row.CURVE]]
        if runs[-1].get("stopped_at") is not None:
            runs[-1]["stopped_at"] += i * span
        if runs[-1]["status"] != "complete":  # diverged or pruned, whatever the other seeds do
            break
    metrics = combine(runs)
    per_seed = [{k: v for k, v in r.items() if k != row.CURVE} for r in runs]
    write_json(out_dir / "metrics.json", {**metrics, row.SEEDS: per_seed})
    return metrics


def combine(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One row from the seeds' metrics: the mean of each figure that differs between them (the
    value itself where all agree, e.g. n_params), the sample standard deviation of the
    row's spread columns (sweep/results/row.py) as <key>_std, the total train_seconds, the first
    seed,
    and the seeds' validation accuracy curves back to back."""
    first = runs[0]
    out: dict = {}
    for key, value in first.items():
        values = [r[key] for r in runs]
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        out[key] = statistics.fmean(values) if numbers and len(set(values)) > 1 else value
    failed = [r for r in runs if r["status"] != "complete"]
    out.update(row.columns({
        "status": failed[0]["status"] if failed else "complete", "seed": first["seed"],
        "epochs": runs[-1]["epochs"], "stopped_at": runs[-1].get("stopped_at"),
        "repeats": len(runs),
        "train_seconds": sum(r["train_seconds"] for r in runs),
    }, "job.combine"))  # fmt: skip
    for key in [k for k in first if k in row.SPREAD]:
        out[f"{key}_std"] = statistics.stdev(r[key] for r in runs) if len(runs) > 1 else 0.0
    out[row.CURVE] = [point for r in runs for point in r[row.CURVE]]
    return out


def prune_and_finetune(
    run: Run, pruner: Pruner, progress: Progress, callbacks: list[Callback]
) -> tuple[Fit, dict[str, float], list[dict[str, Any]]]:
    """Prune the trained model in the pruner's rounds (its path's levels), fine-tuning each with
    the mask held and the regularizer's fine-tuning form (`reg.for_finetuning()`: the L1 term
    off); returns the last fine-tuning's fit result, the accuracies of the trained model
    pruned at once to the final target without any fine-tuning, and each round's figures
    (the points of the run's path). Each round's model is measured (accuracies, sparsity,
    the compact model's FLOPs) and handed to the callbacks' on_prune_round_end, which may add
    figures (the archive's bytes). On a path, a level the model already has (the proximal L1
    step's zeros) is recorded as reached by training: measured, not cut or fine-tuned."""
    model, data, reg, cfg = run.model, run.data, run.reg, run.cfg
    counted = run.counted
    oneshot = copy.deepcopy(model)
    held = pruner.held(oneshot, reg.select(oneshot))  # what the pruner's masks cover
    at_once = pruner.mask(model, counted, pruner.target)
    pruning.apply_(held, at_once)
    oneshot_acc = {
        "oneshot_val_acc": accuracy(oneshot, data.x_val, data.y_val),
        "oneshot_test_acc": accuracy(oneshot, data.x_test, data.y_test),
    }
    finetune_reg = reg.for_finetuning()
    schedule = build(cfg.schedule)
    result: Fit | None = None
    points: list[dict[str, Any]] = []
    for r, target in enumerate(pruner.targets(), start=1):
        if pruner.path is not None and pruner.reached(model, counted, target):
            log.info(f"prune level {r}/{pruner.rounds}: {target} already reached by training")
            progress.advance(pruner.epochs)  # the step axis stays the same for every trial
            measured = measure(model, data, counted, cfg.sparsity.tol,
                               result["val_acc"] if result else None)  # fmt: skip
            result = result or Fit(status="complete", epochs_run=0, train_loss=math.nan,
                                   val_acc=measured["val_acc"])  # fmt: skip
            reached_by = "training"
        else:
            # zeros so far stay pruned; a first round to the final target cuts the model
            # still as trained: the one-shot cut's mask (a conv net's graph not traced again)
            first = r == 1 and target == pruner.target
            keep = at_once if first else pruner.mask(model, counted, target)
            optimizer = make_optimizer(cfg.optimizer, model, lr_scale=pruner.lr_scale)
            log.info(
                f"prune round {r}/{pruner.rounds} ({pruner.method}): "
                f"{1 - float(keep.float().mean()):.4f} of {keep.numel()} weights zero; "
                f"fine-tuning {pruner.epochs} epochs from lr {optimizer.param_groups[0]['lr']:.3g}"
            )
            result = fit(model, data, finetune_reg, optimizer, epochs=pruner.epochs,
                         batch_size=cfg.train.batch_size, seed=cfg.seed,
                         log_every=cfg.train.log_every, schedule=schedule, keep=keep,
                         on_epoch=progress, fast=cfg.train.fast)  # fmt: skip
            progress.advance(pruner.epochs)
            if result["status"] != "complete":
                break
            measured = measure(model, data, counted, cfg.sparsity.tol, result["val_acc"])
            reached_by = "pruning"
        points.append(_round_end(run, pruner, callbacks, r, target, reached_by, measured))
        if progress.level(points[-1]):  # a multi-objective sweep's pruner: stop at this level
            log.info(f"prune level {r}/{pruner.rounds}: stopped by the sweep's pruner (pruned)")
            result = Fit(**{**result, "status": "pruned"})
            break
    return result, oneshot_acc, points


def _round_end(
    run: Run,
    pruner: Pruner,
    callbacks: list[Callback],
    r: int,
    target: float,
    reached_by: str,
    measured: Measures,
) -> dict[str, Any]:
    """Prune round `r`'s figures (a point of the run's path: its target, how it was reached,
    the model's measures and its compact figures), its model saved where prune.keep_models
    says so, after the callbacks' on_prune_round_end (which may add to them)."""
    figures = {"round": r, "target": target, "reached_by": reached_by,
               **{k: v for k, v in measured.items() if k != "layers"},
               **compact.measures(run.model, run.data.image_shape)}  # fmt: skip
    if pruner.keep_models:
        name = f"level_{r}.pt"
        state = {k: v.clone() for k, v in run.model.state_dict().items()}
        torch.save(state, run.out_dir / name)
        figures["model_file"] = name
    for cb in callbacks:  # callbacks may add to figures (the archive's)
        cb.on_prune_round_end(run, r, figures)
    return figures


def run_seed(
    cfg: DictConfig,
    out_dir: Path,
    choices: dict[str, str],
    report: Reporter | None = None,
    pruner: Pruner | None = None,
) -> dict[str, Any]:
    """Train one configuration with one seed (and prune and fine-tune it, where cfg.prune says
    so); returns its row (sweep/results/row.py, every column checked) with its validation curve
    under `row.CURVE`, after the callbacks (by default: metrics.json, layers.csv, model.pt,
    features.csv, rounds.csv in out_dir) ran and added theirs. Raises UserError before any
    training for a configuration that cannot run (`preflight`). `pruner`: cfg.prune's, where
    the caller built it already."""
    parts = preflight(cfg, train=True, pruner=pruner)
    out_dir.mkdir(parents=True, exist_ok=True)
    run = Run(cfg, parts.data, parts.model, parts.reg, parts.reg.select(parts.model), out_dir)
    progress = Progress(run, parts.callbacks, report)

    start = time.perf_counter()
    result = fit(parts.model, parts.data, parts.reg, parts.optimizer, epochs=cfg.train.epochs,
                 batch_size=cfg.train.batch_size, seed=cfg.seed, log_every=cfg.train.log_every,
                 schedule=build(cfg.schedule), on_epoch=progress,
                 fast=cfg.train.fast)  # fmt: skip
    epochs = result["epochs_run"]
    progress.advance(epochs)
    before: dict[str, Any] = {}
    if parts.pruner.active and result["status"] == "complete":
        before, result = _pruned(run, parts, progress, result)
    seconds = time.perf_counter() - start
    metrics = _row(run, parts, result, choices, epochs=epochs, seconds=seconds, before=before)
    metrics["stopped_at"] = progress.stopped_at if metrics["status"] == "pruned" else None
    metrics[row.CURVE] = progress.curve  # metrics.json keeps it; the CSV row does not
    for cb in parts.callbacks:
        cb.on_run_end(run, metrics)
    return metrics


def _pruned(run: Run, parts: Parts, progress: Progress, trained: Fit) -> tuple[dict[str, Any], Fit]:
    """Prune and fine-tune the trained model (`prune_and_finetune`); returns the row's figures
    of the model before pruning (trained_*, oneshot_*, and a path's hypervolume) and the last
    fine-tuning's fit result."""
    model, data = run.model, run.data
    measured = measure(model, data, run.counted, run.cfg.sparsity.tol, trained["val_acc"])
    before = {f"trained_{k}": measured[k] for k in row.TRAINED}
    before["trained_train_loss"] = trained["train_loss"]
    finetuned, oneshot, points = prune_and_finetune(run, parts.pruner, progress, parts.callbacks)
    before.update(oneshot)
    if parts.pruner.path is not None:  # the run's objective where a sweep walks paths
        before["path_hypervolume"] = path_hypervolume(points, data.n_classes)
    if not finetuned["epochs_run"]:  # prune.epochs=0: the last loss is the training's
        finetuned["train_loss"] = trained["train_loss"]
    return before, finetuned


def _row(
    run: Run,
    parts: Parts,
    result: Fit,
    choices: dict[str, str],
    *,
    epochs: int,
    seconds: float,
    before: dict[str, Any],
) -> dict[str, Any]:
    """The run's row, its columns in the order metrics.json has always listed them: the
    final model measured (NaN where it diverged), its options, and the figures of `before`."""
    model, data, reg, tol = run.model, run.data, run.reg, run.cfg.sparsity.tol
    measures = {k: v for k, v in measure(model, data, run.counted, tol, result["val_acc"]).items()
                if k != "layers"}  # fmt: skip
    if result["status"] == "diverged":  # its measures would mean nothing (a pruned one's do)
        measures = {k: math.nan for k in measures}
    return row.columns({
        "status": result["status"],
        **{k: choices.get(k) for k in row.CHOICES},
        "l1_lambda": reg.l1,
        "l2_lambda": reg.l2,
        "seed": run.cfg.seed,
        "epochs": epochs,
        **measures,
        "tol": tol,
        "n_classes": data.n_classes,
        "sparsity_params": reg.params,
        **reg.columns(),  # group_lambda, groups of a group lasso; bn_lambda
        "bn_zero_scales": zero_scales(model),
        # groups_removed, compact_shape, flops, flops_ratio: the model with its dead units out
        **compact.measures(model, data.image_shape),
        "train_loss": result["train_loss"],
        "train_seconds": seconds,
        "device": str(parts.device),
        **parts.pruner.columns(),
        **before,
    }, "job.run_seed")  # fmt: skip
