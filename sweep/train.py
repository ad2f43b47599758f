"""One training run: data -> model -> fit -> measures -> files. The loop fits on one screen."""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf

from sweep import compact, fastmlp, fastsgd, features, pruning, schema, sparsity, user_code
from sweep.data import Dataset
from sweep.errors import UserError
from sweep.pruning import Pruner
from sweep.regularizers import Regularizer

log = logging.getLogger(__name__)

# The config groups a row names by their chosen option.
CHOICES = ("data", "model", "regularizer", "optimizer", "schedule", "prune")
# What a row keeps, as trained_<key>, of the model before pruning.
TRAINED = ("val_acc", "test_acc", "sparsity", "sparsity_tol", "nnz", "active_inputs")
# The figures a repeated run also reports the spread of, as <key>_std.
SPREAD = ("_acc", "sparsity")
# What config `_target_`s may name (Hydra 1.4 refuses unlisted targets in 1.5).
TARGETS = ("sweep.*", "torch.optim.*", "torch.nn.*")


def build(node: DictConfig, **kwargs: object) -> object:
    """hydra.utils.instantiate, but a UserError raised by the target stays a UserError; the
    target is given those of `kwargs` it accepts, and outside targets run only where the
    config's `allow_targets` lists them (sweep/user_code.py)."""
    return user_code.instantiate_checked(node, TARGETS, **kwargs)


def check(cfg: DictConfig) -> Regularizer:
    """Reject bad input before any training; returns the regularizer it had to build."""
    # Every range of the schema, the lambdas too: a regularizer that ignores one never sees it.
    schema.check(cfg)
    return build(cfg.regularizer)


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


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as e:
        raise UserError(f"device={name} is not usable here ({e}); use device=auto or cpu") from e
    return device


_threads_set = False


def set_threads(threads: int | None) -> None:
    """Set torch's CPU thread count once per process (changing it later is slow and racy)."""
    global _threads_set
    if not _threads_set:
        # The cores this process may use (a SLURM task's share), not all the node has.
        torch.set_num_threads(threads or len(os.sched_getaffinity(0)))
        _threads_set = True


def make_optimizer(
    node: DictConfig, model: nn.Module, lr_scale: float = 1.0
) -> torch.optim.Optimizer:
    try:
        if lr_scale == 1.0:
            return build(node)(model.parameters())
        return build(node)(model.parameters(), lr=node.lr * lr_scale)
    except ValueError as e:  # torch's own check, e.g. "Invalid learning rate: -1"
        raise UserError(f"optimizer: {e}; fix the optimizer.* overrides") from e


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 8192) -> float:
    model.eval()
    correct = sum(
        int((model(x[i : i + batch]).argmax(1) == y[i : i + batch]).sum())
        for i in range(0, len(y), batch)
    )
    model.train()
    return correct / len(y)


def flatten_parameters(
    model: nn.Module, first: list[nn.Parameter]
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Make every parameter of `model` a view into one flat buffer and its .grad a view into
    another, `first` at the front; returns (weights, grads, number of elements of `first`).

    One kernel then acts on all of `first` (the regularizer's step) or zeroes every gradient,
    where per-tensor code pays a dispatch per tensor. Autograd adds into an existing .grad in
    place, so the views stay; the Parameter objects stay too, so an optimizer made before this
    call still holds them. A parameter that gets no gradient has a zero one, not None.
    """
    ids = {id(p) for p in first}
    params = [*first, *(p for p in model.parameters() if id(p) not in ids)]
    if len({(p.dtype, p.device) for p in params}) > 1:
        raise ValueError("flatten_parameters needs all parameters on one device, of one dtype")
    flat = torch.cat([p.detach().reshape(-1) for p in params])
    grad = torch.zeros_like(flat)
    offset = 0
    for p in params:
        n = p.numel()
        p.data = flat[offset : offset + n].view_as(p)
        p.grad = grad[offset : offset + n].view_as(p)
        offset += n
    return flat, grad, sum(p.numel() for p in first)


def training_step(
    model: nn.Module, grad: torch.Tensor, fast: bool = True
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """step(x, y): writes every gradient of `model` (views of `grad`) for the batch's mean
    cross-entropy and returns that loss; the fast MLP step where it serves (the same bits),
    autograd otherwise, saying why in the log."""
    reason = fastmlp.unsupported(model) if fast else "train.fast=false"
    if reason is None:
        return fastmlp.FastMLP(model).step
    log.info(f"fast MLP path off: {reason}")

    def autograd_step(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = F.cross_entropy(model(x), y)
        grad.zero_()  # instead of optimizer.zero_grad(): one kernel, and the views stay
        loss.backward()
        return loss.detach()

    return autograd_step


def fit(
    model: nn.Module,
    data: Dataset,
    reg: Regularizer,
    optimizer: torch.optim.Optimizer,
    epochs: int,
    batch_size: int,
    seed: int,
    log_every: int = 1,
    schedule: Callable | None = None,
    keep: torch.Tensor | None = None,
    on_epoch: Callable[[int, float], bool | None] | None = None,
    fast: bool = True,
) -> dict:
    """Minibatch training; returns the last epoch's mean loss, whether it diverged, and the
    validation accuracy of the final weights where the last epoch's log line measured it.

    schedule(optimizer, total_steps) may return an lr scheduler, stepped after every step.
    keep: a mask (pruning's) over the regularized weights, or over every parameter in
    flatten_parameters' order (`sweep.pruning.NeuronPruner`'s, biases too); the entries it
    leaves out are held at exactly zero.
    on_epoch(epoch, val_acc) is called at every epoch whose validation accuracy is measured;
    if it returns True, training stops there with status 'pruned' (a sweep's hopeless trial).
    fast: use sweep.fastmlp's step for an mlp and sweep.fastsgd's for a plain torch.optim.SGD,
    both the same bits (False: autograd and the optimizer's own step, for every model).
    """
    flat, grad, k = flatten_parameters(model, reg.bind(model))
    step = training_step(model, grad, fast)  # after flattening: it holds the views
    w, g = flat[:k], grad[:k]  # the regularized weights and their gradient
    if keep is not None:  # over the regularized weights, or (prune=neurons) every parameter
        keep = keep.to(w)
        held, held_grad = flat[: keep.numel()], grad[: keep.numel()]
        held.mul_(keep)
    gen = torch.Generator().manual_seed(seed)
    n = len(data.y_train)
    scheduler = schedule(optimizer, epochs * math.ceil(n / batch_size)) if schedule else None
    # after the scheduler wraps .step
    optimizer_step = fastsgd.step_for(optimizer, flat, grad) if fast else optimizer.step
    loss_mean, status, epoch, val_acc = math.nan, "complete", 0, None
    for epoch in range(1, epochs + 1):
        perm = torch.randperm(n, generator=gen).to(data.x_train.device)
        total, meter = torch.zeros((), device=w.device), reg.meter(w)
        for i in range(0, n, batch_size):
            idx = perm[i : i + batch_size]  # index_select: the same rows as x[idx], 2x faster
            x, y = data.x_train.index_select(0, idx), data.y_train.index_select(0, idx)
            total += step(x, y)  # summed on the device: no host sync per step
            reg.add_gradient_(w, g, meter)
            if keep is not None:  # no gradient, so no momentum or Adam moment, for a pruned w
                held_grad.mul_(keep)
            optimizer_step()
            reg.prox_(w, optimizer.param_groups[0]["lr"])  # the lr this step used
            if keep is not None:  # and weight decay cannot move it off zero either
                held.mul_(keep)
            if scheduler is not None:
                scheduler.step()
        loss_mean = (float(total) + reg.value(meter)) / math.ceil(n / batch_size)
        if not math.isfinite(loss_mean):
            status = "diverged"
        if epoch % log_every == 0 or epoch == epochs or status != "complete":
            val_acc = accuracy(model, data.x_val, data.y_val)
            log.info(
                f"epoch {epoch}/{epochs}  loss {loss_mean:.4f}  val_acc {val_acc:.4f}"
                f"  sparsity {int((w == 0).sum()) / w.numel():.4f}"
            )
            if on_epoch is not None and status == "complete" and on_epoch(epoch, val_acc):
                status = "pruned"
                log.info(f"epoch {epoch}/{epochs}: stopped by the sweep's pruner (pruned)")
        if status == "diverged":
            log.warning(f"training loss is {loss_mean} at epoch {epoch}: stopped (diverged)")
        if status != "complete":
            break
    return {"train_loss": loss_mean, "status": status, "epochs_run": epoch, "val_acc": val_acc}


def measure(
    model: nn.Module,
    data: Dataset,
    counted: list[nn.Parameter],
    tol: float,
    val_acc: float | None = None,
) -> dict:
    """Accuracies (plain and pruned at tol) and sparsity figures of a trained model;
    `val_acc`, where the caller has it for these weights, is not measured again."""
    layers = sparsity.layer_table(model, counted, tol)
    small = sparsity.pruned(model, counted, tol)
    return {
        "val_acc": accuracy(model, data.x_val, data.y_val) if val_acc is None else val_acc,
        "test_acc": accuracy(model, data.x_test, data.y_test),
        "pruned_val_acc": accuracy(small, data.x_val, data.y_val),
        "pruned_test_acc": accuracy(small, data.x_test, data.y_test),
        **sparsity.totals(layers),
        "active_inputs": sparsity.active_inputs(model),
        "n_inputs": data.n_inputs,
        "layers": layers,
    }


def prune_and_finetune(
    model: nn.Module,
    data: Dataset,
    reg: Regularizer,
    pruner: Pruner,
    cfg: DictConfig,
    on_epoch: Callable[[int, float], bool | None] | None = None,
) -> tuple[dict, dict]:
    """Prune the trained model in the pruner's rounds, fine-tuning each with the mask held and
    the L1 term off; returns the last fine-tuning's fit result, and the accuracies of the
    trained model pruned at once to the final target without any fine-tuning. on_epoch gets
    each round's epochs numbered on from the previous round's."""
    counted = reg.select(model)
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
    for r, target in enumerate(pruner.targets(), start=1):
        keep = pruner.mask(model, counted, target)  # zeros so far stay pruned
        optimizer = make_optimizer(cfg.optimizer, model, lr_scale=pruner.lr_scale)
        log.info(
            f"prune round {r}/{pruner.rounds} ({pruner.method}): "
            f"{1 - float(keep.float().mean()):.4f} of {keep.numel()} weights zero; "
            f"fine-tuning {pruner.epochs} epochs from lr {optimizer.param_groups[0]['lr']:.3g}"
        )
        offset = (r - 1) * pruner.epochs
        hook = (lambda e, acc, o=offset: on_epoch(o + e, acc)) if on_epoch else None
        result = fit(model, data, finetune_reg, optimizer, pruner.epochs, cfg.train.batch_size,
                     cfg.seed, cfg.train.log_every, schedule, keep, hook,
                     cfg.train.fast)  # fmt: skip
        if result["status"] != "complete":
            break
    return result, oneshot_acc


def run(
    cfg: DictConfig,
    out_dir: Path,
    choices: dict[str, str],
    report: Callable[[int, float], bool] | None = None,
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
    (out_dir / "metrics.json").write_text(json.dumps({**metrics, "seeds": per_seed}, indent=2))
    return metrics


def combine(runs: list[dict]) -> dict:
    """One row from the seeds' metrics: the mean of each figure that differs between them (the
    value itself where all agree, e.g. n_params), the sample standard deviation of the
    accuracies and sparsities as <key>_std, the total train_seconds, the first seed, and the
    seeds' validation accuracy curves back to back."""
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
    for key in [k for k in first if k.endswith(SPREAD)]:
        out[f"{key}_std"] = statistics.stdev(r[key] for r in runs) if len(runs) > 1 else 0.0
    out["val_acc_curve"] = [point for r in runs for point in r["val_acc_curve"]]
    return out


def run_seed(
    cfg: DictConfig,
    out_dir: Path,
    choices: dict[str, str],
    report: Callable[[int, float], bool] | None = None,
) -> dict:
    """Train one configuration with one seed (and prune and fine-tune it, where cfg.prune says
    so); write metrics.json, layers.csv and model.pt of the final model into out_dir."""
    reg = check(cfg)
    pruner: Pruner = build(cfg.prune)
    device = resolve_device(cfg.device)
    set_threads(cfg.train.threads)
    data = dataset(cfg, device)
    torch.manual_seed(cfg.seed)
    model = build(cfg.model, n_inputs=data.n_inputs, n_classes=data.n_classes,
                  input_shape=data.image_shape).to(device)  # fmt: skip
    optimizer = make_optimizer(cfg.optimizer, model)
    user_code.check_model(model, data)  # the factory's contract, before any training
    pruner.check(model)  # prune=neurons: a model it can follow

    start = time.perf_counter()
    # (epoch, val_acc) where measured, fine-tuning epochs numbered on: a sweep's learning curves
    curve: list[list[float]] = []

    def record(step: int, acc: float) -> bool:
        curve.append([step, acc])
        return bool(report and report(step, acc))

    result = fit(model, data, reg, optimizer, cfg.train.epochs, cfg.train.batch_size, cfg.seed,
                 cfg.train.log_every, build(cfg.schedule), on_epoch=record,
                 fast=cfg.train.fast)  # fmt: skip
    epochs, counted, tol = result["epochs_run"], reg.select(model), cfg.sparsity.tol
    before: dict = {}
    if pruner.active and result["status"] == "complete":
        trained = measure(model, data, counted, tol, result["val_acc"])
        before = {f"trained_{k}": trained[k] for k in TRAINED}
        before["trained_train_loss"] = result["train_loss"]
        finetuned, oneshot = prune_and_finetune(
            model, data, reg, pruner, cfg, lambda e, acc: record(epochs + e, acc)
        )
        before.update(oneshot)
        if not finetuned["epochs_run"]:  # prune.epochs=0: the last loss is the training's
            finetuned["train_loss"] = result["train_loss"]
        result = finetuned
    seconds = time.perf_counter() - start
    measures = measure(model, data, counted, tol, result["val_acc"])
    layers = measures.pop("layers")
    if result["status"] == "diverged":  # its measures would mean nothing (a pruned one's do)
        measures = {k: math.nan for k in measures}
    metrics = {
        "status": result["status"],
        **{k: choices.get(k) for k in CHOICES},
        "l1_lambda": reg.l1,
        "l2_lambda": reg.l2,
        **reg.columns(),  # group_lambda, groups of a group lasso
        "seed": cfg.seed,
        "epochs": epochs,
        **measures,
        # groups_removed, compact_shape, flops, flops_ratio: the model with its dead units out
        **compact.measures(model, data.image_shape),
        "tol": cfg.sparsity.tol,
        "sparsity_params": reg.params,
        "train_loss": result["train_loss"],
        "train_seconds": seconds,
        "device": str(device),
        **pruner.columns(),
        **before,
        "val_acc_curve": curve,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(layers).to_csv(out_dir / "layers.csv", index=False)
    # Cloned: the parameters are views of fit's flat buffer, which torch.save would keep shared.
    torch.save({k: v.clone() for k, v in model.state_dict().items()}, out_dir / "model.pt")
    features.write(model, data, out_dir / "features.csv")
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics
