"""One configuration's run, the job a sweep's trial or `python -m sweep.run` executes: build the
data and model, fit, prune and fine-tune, measure, and hand the model and its row to the
callbacks (sweep/callbacks.py), which write the run's files.

    run(cfg, out_dir, choices, report)      # repeats: one run_seed per seed, one combined row
      run_seed(...)                         # build -> fit -> [prune_and_finetune] -> measure
        Run, Progress                       # what callbacks see; the epoch numbering
"""

from __future__ import annotations

import copy
import logging
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from omegaconf import DictConfig, OmegaConf

from sweep.config import schema, user_code
from sweep.data.datasets import Dataset
from sweep.errors import UserError
from sweep.models import compact
from sweep.results import row
from sweep.results.hypervolume import path_hypervolume
from sweep.sparsity import pruning
from sweep.sparsity.pruning import Pruner
from sweep.sparsity.regularizers import Regularizer
from sweep.task.callbacks import Callback, write_json
from sweep.training.train import (
    accuracy,
    build,
    fit,
    make_optimizer,
    measure,
    resolve_device,
    set_threads,
)

log = logging.getLogger(__name__)

Reporter = Callable[[int, float], bool]  # report(step, val_acc) -> stop? (a sweep's pruner)


def check(cfg: DictConfig) -> Regularizer:
    """Reject bad input before any training; returns the regularizer it had to build.

    Raises UserError naming the first key out of range (the schema's rules, the lambdas too: a
    regularizer that ignores one never sees it), an objective of a path without a path, or
    the regularizer's own complaint."""
    schema.check(cfg)
    if "path_hypervolume" in cfg.objective.metrics and (
        cfg.prune.method == "none" or cfg.prune.get("path") is None
    ):
        raise UserError(
            "objective=path_hypervolume needs a path to measure: set prune=magnitude (or "
            "neurons) and prune.path=[...], e.g. 'prune.path=[0.5,0.8,0.9,0.95]'"
        )
    return build(cfg.regularizer)


def callbacks(cfg: DictConfig) -> list[Callback]:
    """The run's callbacks, in the order of `cfg.callbacks` then `cfg.logger` (the trackers,
    sweep/loggers.py; None entries dropped), stably sorted by their `order`; a `_target_`
    outside l1sweep only where `allow_targets` lists it. Raises UserError for a refused target
    or one that makes no Callback."""
    groups = [cfg.get("callbacks") or {}, cfg.get("logger") or {}]
    chosen = [node for group in groups for node in group.values() if node is not None]
    made = [build(node) for node in chosen]
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
class Run:
    """What a callback sees of a run: its config, data, model (trained in place), regularizer,
    the parameters it counts (`reg.select(model)`), and the directory its files go to."""

    cfg: DictConfig
    data: Dataset
    model: nn.Module
    reg: Regularizer
    counted: list[nn.Parameter]
    out_dir: Path


class Progress:
    """The run's measured epochs on one axis: training's epochs 1..E, then each prune round's
    fine-tuning numbered on from there (`advance`). Keeps the validation curve ([step, val_acc],
    ...), passes each epoch to the callbacks, and asks `report` (a sweep's pruner) whether to
    stop."""

    def __init__(self, run: Run, callbacks: list[Callback], report: Reporter | None) -> None:
        self.run, self.callbacks, self.report = run, callbacks, report
        self.base = 0
        self.curve: list[list[float]] = []

    def __call__(self, epoch: int, metrics: dict[str, float]) -> bool:
        step = self.base + epoch
        self.curve.append([step, metrics["val_acc"]])
        for cb in self.callbacks:
            cb.on_epoch_end(self.run, step, metrics)
        return bool(self.report and self.report(step, metrics["val_acc"]))

    def advance(self, epochs: int) -> None:
        """Move the axis on by `epochs` (a fine-tuning round's), so the next round's epochs
        number on from there."""
        self.base += epochs


def run(
    cfg: DictConfig, out_dir: Path, choices: dict[str, str], report: Reporter | None = None
) -> dict:
    """Train one configuration `repeats` times, with seeds seed, seed+1, ...: each seed carves its
    own validation split (Monte-Carlo cross-validation), inits and orders batches its own way.
    Returns the seeds' mean figures (the usual keys) and spreads (*_std); metrics.json in out_dir
    keeps each seed's figures too, each seed's files are in out_dir/seed_<seed>/. repeats=1 is
    one plain run_seed in out_dir.

    report(step, val_acc) -> stop? gets each measured epoch, the seeds back to back (seed i's
    epoch e is step i * span + e, span = the epochs a seed trains and fine-tunes), so a pruner
    compares trials at the same seed and epoch; True stops the run with status 'pruned'."""
    if cfg.repeats == 1:
        return run_seed(cfg, out_dir, choices, report)
    pruner: Pruner = build(cfg.prune)
    span = cfg.train.epochs + (pruner.rounds * pruner.epochs if pruner.active else 0)
    runs = []
    for i, seed in enumerate(range(cfg.seed, cfg.seed + cfg.repeats)):
        one = cfg.copy()
        one.seed = seed
        hook = (lambda step, acc, o=i * span: report(o + step, acc)) if report else None
        runs.append(run_seed(one, out_dir / f"seed_{seed}", choices, hook))
        runs[-1]["val_acc_curve"] = [[i * span + s, v] for s, v in runs[-1]["val_acc_curve"]]
        if runs[-1]["status"] != "complete":  # diverged or pruned, whatever the other seeds do
            break
    metrics = combine(runs)
    per_seed = [{k: v for k, v in r.items() if k != "val_acc_curve"} for r in runs]
    write_json(out_dir / "metrics.json", {**metrics, "seeds": per_seed})
    return metrics


def combine(runs: list[dict]) -> dict:
    """One row from the seeds' metrics: the mean of each figure that differs between them (the
    value itself where all agree, e.g. n_params), the sample standard deviation of the
    row's spread columns (sweep/row.py) as <key>_std, the total train_seconds, the first seed,
    and the seeds' validation accuracy curves back to back."""
    first = runs[0]
    out: dict = {}
    for key, value in first.items():
        values = [r[key] for r in runs]
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        out[key] = statistics.fmean(values) if numbers and len(set(values)) > 1 else value
    failed = [r for r in runs if r["status"] != "complete"]
    out.update(status=failed[0]["status"] if failed else "complete", seed=first["seed"],
               epochs=runs[-1]["epochs"], repeats=len(runs),
               train_seconds=sum(r["train_seconds"] for r in runs))  # fmt: skip
    for key in [k for k in first if k in row.SPREAD]:
        out[f"{key}_std"] = statistics.stdev(r[key] for r in runs) if len(runs) > 1 else 0.0
    out["val_acc_curve"] = [point for r in runs for point in r["val_acc_curve"]]
    return out


def prune_and_finetune(
    run: Run, pruner: Pruner, progress: Progress, callbacks: list[Callback]
) -> tuple[dict, dict, list[dict]]:
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
    pruning.apply_(held, pruner.mask(model, counted, pruner.target))
    oneshot_acc = {
        "oneshot_val_acc": accuracy(oneshot, data.x_val, data.y_val),
        "oneshot_test_acc": accuracy(oneshot, data.x_test, data.y_test),
    }
    finetune_reg = reg.for_finetuning()
    schedule = build(cfg.schedule)
    result: dict = {}
    points: list[dict] = []
    for r, target in enumerate(pruner.targets(), start=1):
        if pruner.path is not None and pruner.reached(model, counted, target):
            log.info(f"prune level {r}/{pruner.rounds}: {target} already reached by training")
            progress.advance(pruner.epochs)  # the step axis stays the same for every trial
            measured = measure(model, data, counted, cfg.sparsity.tol, result.get("val_acc"))
            result = result or {"status": "complete", "epochs_run": 0, "train_loss": math.nan,
                                "val_acc": measured["val_acc"]}  # fmt: skip
            reached_by = "training"
        else:
            keep = pruner.mask(model, counted, target)  # zeros so far stay pruned
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
        del measured["layers"]
        figures = {"round": r, "target": target, "reached_by": reached_by, **measured,
                   **compact.measures(model, data.image_shape)}  # fmt: skip
        if pruner.keep_models:
            name = f"level_{r}.pt"
            torch.save({k: v.clone() for k, v in model.state_dict().items()}, run.out_dir / name)
            figures["model_file"] = name
        for cb in callbacks:  # callbacks may add to figures (the archive's)
            cb.on_prune_round_end(run, r, figures)
        points.append(figures)
    return result, oneshot_acc, points


def run_seed(
    cfg: DictConfig, out_dir: Path, choices: dict[str, str], report: Reporter | None = None
) -> dict:
    """Train one configuration with one seed (and prune and fine-tune it, where cfg.prune says
    so); returns its row (sweep/row.py) with its validation curve, after the callbacks (by
    default: metrics.json, layers.csv, model.pt, features.csv, rounds.csv in out_dir) ran."""
    reg = check(cfg)
    pruner: Pruner = build(cfg.prune)
    cbs = callbacks(cfg)
    device = resolve_device(cfg.device)
    set_threads(cfg.train.threads)
    data = dataset(cfg, device)
    torch.manual_seed(cfg.seed)
    model = build(cfg.model, n_inputs=data.n_inputs, n_classes=data.n_classes,
                  input_shape=data.image_shape).to(device)  # fmt: skip
    optimizer = make_optimizer(cfg.optimizer, model)
    user_code.check_model(model, data)  # the factory's contract, before any training
    pruner.check(model)  # prune=neurons: a model it can follow
    compact.check_objective(model, data.image_shape, list(cfg.objective.metrics))
    out_dir.mkdir(parents=True, exist_ok=True)
    run = Run(cfg, data, model, reg, reg.select(model), out_dir)
    progress = Progress(run, cbs, report)

    start = time.perf_counter()
    result = fit(model, data, reg, optimizer, epochs=cfg.train.epochs,
                 batch_size=cfg.train.batch_size, seed=cfg.seed, log_every=cfg.train.log_every,
                 schedule=build(cfg.schedule), on_epoch=progress,
                 fast=cfg.train.fast)  # fmt: skip
    epochs, tol = result["epochs_run"], cfg.sparsity.tol
    progress.advance(epochs)
    before: dict = {}
    if pruner.active and result["status"] == "complete":
        trained = measure(model, data, run.counted, tol, result["val_acc"])
        before = {f"trained_{k}": trained[k] for k in row.TRAINED}
        before["trained_train_loss"] = result["train_loss"]
        finetuned, oneshot, points = prune_and_finetune(run, pruner, progress, cbs)
        before.update(oneshot)
        if pruner.path is not None:  # the run's objective where a sweep walks paths
            before["path_hypervolume"] = path_hypervolume(points, data.n_classes)
        if not finetuned["epochs_run"]:  # prune.epochs=0: the last loss is the training's
            finetuned["train_loss"] = result["train_loss"]
        result = finetuned
    seconds = time.perf_counter() - start
    measures = measure(model, data, run.counted, tol, result["val_acc"])
    measures.pop("layers")
    if result["status"] == "diverged":  # its measures would mean nothing (a pruned one's do)
        measures = {k: math.nan for k in measures}
    metrics: dict[str, Any] = {
        "status": result["status"],
        **{k: choices.get(k) for k in row.CHOICES},
        "l1_lambda": reg.l1,
        "l2_lambda": reg.l2,
        "seed": cfg.seed,
        "epochs": epochs,
        **measures,
        "tol": tol,
        "sparsity_params": reg.params,
        **reg.columns(),  # group_lambda, groups of a group lasso
        # groups_removed, compact_shape, flops, flops_ratio: the model with its dead units out
        **compact.measures(model, data.image_shape),
        "train_loss": result["train_loss"],
        "train_seconds": seconds,
        "device": str(device),
        **pruner.columns(),
        **before,
    }
    metrics["val_acc_curve"] = progress.curve  # metrics.json keeps it; the CSV row does not
    for cb in cbs:
        cb.on_run_end(run, metrics)
    return metrics
