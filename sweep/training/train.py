"""The training loop (`fit`) and what it needs: building targets, the device, the optimizer,
the flat parameter buffer, accuracy and the sparsity measures. `fit` returns a `Fit` and
`measure` a `Measures` (typed dicts; the figures among them are columns of
`sweep.results.row`). One configuration's whole run (build, fit, prune, measure, callbacks) is
sweep/task/job.py."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from typing import Any, TypedDict

import torch
import torch.nn as nn
import torch.nn.functional as F
from omegaconf import DictConfig

from sweep.config import user_code
from sweep.data.datasets import Dataset
from sweep.errors import UserError
from sweep.models.cost import eval_batch
from sweep.results import row
from sweep.sparsity import measures as sparsity
from sweep.sparsity.regularizers import Regularizer
from sweep.training import fastmlp, fastsgd, layout

log = logging.getLogger(__name__)

# What config `_target_`s may name (Hydra 1.4 refuses unlisted targets in 1.5).
TARGETS = ("sweep.*", "torch.optim.*", "torch.nn.*")


def build(node: DictConfig, **kwargs: object) -> object:
    """hydra.utils.instantiate, but a UserError raised by the target stays a UserError; the
    target is given those of `kwargs` it accepts, and outside targets run only where the
    config's `allow_targets` lists them (sweep/config/user_code.py)."""
    return user_code.instantiate_checked(node, TARGETS, **kwargs)


def resolve_device(name: str) -> torch.device:
    """`device` (auto, cpu, cuda, mps) as a torch.device; auto: cuda, then mps, then cpu."""
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
    """The optimizer `node` (a partial torch.optim class) over `model`'s parameters, its lr
    times `lr_scale` (fine-tuning's)."""
    try:
        if lr_scale == 1.0:
            return build(node)(model.parameters())
        return build(node)(model.parameters(), lr=node.lr * lr_scale)
    except ValueError as e:  # torch's own check, e.g. "Invalid learning rate: -1"
        raise UserError(f"optimizer: {e}; fix the optimizer.* overrides") from e


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int | None = None) -> float:
    """Top-1 accuracy (0..1) of `model` on `x` (N, ...) against labels `y` (N,), in batches
    of `batch` examples (default: models/cost.py `eval_batch`), in eval mode and without
    gradients."""
    batch = batch or eval_batch(model)
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
    autograd otherwise, saying why in the log. With `fast`, a model with 2-D convolutions on
    the CPU runs channels-last (`layout.channels_last_forward`: 1.3x to 1.6x a ResNet step
    here, benchmarks/conv_train_speed.py; the same model, float rounding may differ)."""
    reason = fastmlp.unsupported(model) if fast else "train.fast=false"
    if reason is None:
        return fastmlp.FastMLP(model).step
    log.info(f"fast MLP path off: {reason}")
    forward = model
    if fast and layout.has_conv2d(model) and grad.device.type == "cpu":
        log.info("conv layers on the CPU: channels-last layout (train.fast=false: NCHW)")
        forward = layout.channels_last_forward(model)

    def autograd_step(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = F.cross_entropy(forward(x), y)
        grad.zero_()  # instead of optimizer.zero_grad(): one kernel, and the views stay
        loss.backward()
        return loss.detach()

    return autograd_step


class Fit(TypedDict):
    """What `fit` returns: the last epoch's mean training loss (cross-entropy plus the
    penalty's value), `status` (complete, diverged: a non-finite loss, or pruned: stopped by
    `on_epoch`), the epochs run and the validation accuracy (0..1) of the final weights, None
    where the last epoch's log line did not measure it."""

    train_loss: float
    status: str
    epochs_run: int
    val_acc: float | None


class Measures(TypedDict):
    """What `measure` returns: the row's accuracy and sparsity figures of a trained model
    (columns of `sweep.results.row`), and `layers`, the per-tensor table (layers.csv's rows)."""

    val_acc: float
    test_acc: float
    pruned_val_acc: float
    pruned_test_acc: float
    n_params: int
    nnz: int
    sparsity: float
    sparsity_tol: float
    active_inputs: int | None
    n_inputs: int
    layers: list[dict]


# the figures that become the row's columns under their own names, checked once at import
row.check([k for k in Measures.__annotations__ if k != "layers"], "train.Measures")
row.check(["train_loss", "status", "val_acc"], "train.Fit")


class _Held:
    """A pruning mask held on the flat buffers: the weights it leaves out stay exactly zero."""

    def __init__(self, flat: torch.Tensor, grad: torch.Tensor, keep: torch.Tensor) -> None:
        self.keep = keep
        self.weights, self.grad = flat[: keep.numel()], grad[: keep.numel()]
        self.weights.mul_(keep)

    def gradient_(self) -> None:
        # no gradient, so no momentum or Adam moment, for a pruned weight
        self.grad.mul_(self.keep)

    def weights_(self) -> None:
        # and weight decay cannot move it off zero either
        self.weights.mul_(self.keep)


def fit(
    model: nn.Module,
    data: Dataset,
    reg: Regularizer,
    optimizer: torch.optim.Optimizer,
    *,
    epochs: int,
    batch_size: int,
    seed: int,
    log_every: int = 1,
    schedule: Callable | None = None,
    keep: torch.Tensor | None = None,
    on_epoch: Callable[[int, dict[str, float]], bool | None] | None = None,
    fast: bool = True,
) -> Fit:
    """Minibatch training; returns the last epoch's mean loss, whether it diverged, and the
    validation accuracy of the final weights where the last epoch's log line measured it.

    schedule(optimizer, total_steps) may return an lr scheduler, stepped after every step.
    keep: a mask (pruning's) over the regularized weights, or over every parameter in
    flatten_parameters' order (`sweep.sparsity.pruning.NeuronPruner`'s, biases too); the entries it
    leaves out are held at exactly zero.
    on_epoch(epoch, metrics) is called at every epoch whose validation accuracy is measured,
    with metrics {val_acc, train_loss, sparsity} (sparsity: the fraction of the regularized
    weights exactly zero); if it returns True, training stops there with status 'pruned' (a
    sweep's hopeless trial).
    fast: use fastmlp's step for an mlp and fastsgd's for a plain torch.optim.SGD,
    both the same bits (False: autograd and the optimizer's own step, for every model).
    """
    flat, grad, k = flatten_parameters(model, reg.bind(model))
    step = training_step(model, grad, fast)  # after flattening: it holds the views
    w, g = flat[:k], grad[:k]  # the regularized weights and their gradient
    # over the regularized weights, or (prune=neurons) every parameter
    held = _Held(flat, grad, keep.to(w)) if keep is not None else None
    gen = torch.Generator().manual_seed(seed)
    n = len(data.y_train)
    scheduler = schedule(optimizer, epochs * math.ceil(n / batch_size)) if schedule else None
    # after the scheduler wraps .step
    optimizer_step = fastsgd.step_for(optimizer, flat, grad) if fast else optimizer.step

    update = _updater(reg, optimizer, optimizer_step, w, g, held, scheduler)
    loss_mean, status, epoch, val_acc = math.nan, "complete", 0, None
    for epoch in range(1, epochs + 1):
        loss_mean = _epoch(data, reg, w, gen, batch_size, step, update)
        if not math.isfinite(loss_mean):
            status = "diverged"
        if epoch % log_every == 0 or epoch == epochs or status != "complete":
            val_acc = accuracy(model, data.x_val, data.y_val)
            status = _measured(epoch, epochs, loss_mean, val_acc, w, status, on_epoch)
        if status == "diverged":
            log.warning(f"training loss is {loss_mean} at epoch {epoch}: stopped (diverged)")
        if status != "complete":
            break
    return Fit(train_loss=loss_mean, status=status, epochs_run=epoch, val_acc=val_acc)


def _updater(
    reg: Regularizer,
    optimizer: torch.optim.Optimizer,
    optimizer_step: Callable[[], Any],
    w: torch.Tensor,
    g: torch.Tensor,
    held: _Held | None,
    scheduler: Any,
) -> Callable[[tuple], None]:
    """update(meter), after each batch's loss and gradient: the regularizer's gradient (its
    norms into `meter`), the mask on the gradient, the optimizer's step, the proximal step,
    the mask on the weights, the scheduler's step; in that order, which the bits depend on."""

    def update(meter: tuple) -> None:
        reg.add_gradient_(w, g, meter)
        if held is not None:
            held.gradient_()
        optimizer_step()
        reg.prox_(w, optimizer.param_groups[0]["lr"])  # the lr this step used
        if held is not None:
            held.weights_()
        if scheduler is not None:
            scheduler.step()

    return update


def _epoch(
    data: Dataset,
    reg: Regularizer,
    w: torch.Tensor,
    gen: torch.Generator,
    batch_size: int,
    step: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    update: Callable[[tuple], None],
) -> float:
    """One pass over the training set in `gen`'s order: step(x, y) (the batch's loss and
    gradient), then update(meter) (the regularizer, the optimizer, the mask); returns the
    epoch's mean loss (cross-entropy plus the penalty's value over its steps)."""
    n = len(data.y_train)
    perm = torch.randperm(n, generator=gen).to(data.x_train.device)
    total, meter = torch.zeros((), device=w.device), reg.meter(w)
    for i in range(0, n, batch_size):
        idx = perm[i : i + batch_size]  # index_select: the same rows as x[idx], 2x faster
        x, y = data.x_train.index_select(0, idx), data.y_train.index_select(0, idx)
        total += step(x, y)  # summed on the device: no host sync per step
        update(meter)
    return (float(total) + reg.value(meter)) / math.ceil(n / batch_size)


def _measured(
    epoch: int,
    epochs: int,
    loss_mean: float,
    val_acc: float,
    w: torch.Tensor,
    status: str,
    on_epoch: Callable[[int, dict[str, float]], bool | None] | None,
) -> str:
    """Log a measured epoch and hand it to `on_epoch`; returns the status, 'pruned' where
    on_epoch asked to stop a complete run."""
    zeros = int((w == 0).sum()) / w.numel()
    log.info(
        f"epoch {epoch}/{epochs}  loss {loss_mean:.4f}  val_acc {val_acc:.4f}  sparsity {zeros:.4f}"
    )
    measured = {"val_acc": val_acc, "train_loss": loss_mean, "sparsity": zeros}
    if on_epoch is not None and status == "complete" and on_epoch(epoch, measured):
        log.info(f"epoch {epoch}/{epochs}: stopped by the sweep's pruner (pruned)")
        return "pruned"
    return status


def measure(
    model: nn.Module,
    data: Dataset,
    counted: list[nn.Parameter],
    tol: float,
    val_acc: float | None = None,
) -> Measures:
    """Accuracies (plain and pruned at tol, each in [0, 1]) and sparsity figures of a trained
    model, over the `counted` parameters; `val_acc`, where the caller has it for these
    weights, is not measured again."""
    layers = sparsity.layer_table(model, counted, tol)
    totals = sparsity.totals(layers)
    val = accuracy(model, data.x_val, data.y_val) if val_acc is None else val_acc
    test = accuracy(model, data.x_test, data.y_test)
    pruned_val, pruned_test = val, test
    # no non-zero weight within tol (exact zeros: l1_prox, bn_l1, a mask): the copy pruned at
    # tol is the model itself, so its accuracies are these; scoring it again doubled the
    # time a conv net's run spent scoring
    if totals["sparsity_tol"] != totals["sparsity"]:
        small = sparsity.pruned(model, counted, tol)
        pruned_val = accuracy(small, data.x_val, data.y_val)
        pruned_test = accuracy(small, data.x_test, data.y_test)
    return Measures(
        val_acc=val,
        test_acc=test,
        pruned_val_acc=pruned_val,
        pruned_test_acc=pruned_test,
        n_params=totals["n_params"],
        nnz=totals["nnz"],
        sparsity=totals["sparsity"],
        sparsity_tol=totals["sparsity_tol"],
        active_inputs=sparsity.active_inputs(model),
        n_inputs=data.n_inputs,
        layers=layers,
    )
