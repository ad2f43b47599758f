"""torch.optim.SGD's update on the flat parameter buffer of `train.flatten_parameters`:
a few kernels a step instead of torch.optim's per-tensor Python.

`torch.optim.SGD.step` spends ~20 us a step on CPU in Python (the profiler record and hook
loops, lists of the params, grads and buffers, a dispatch per tensor per operation), several
times the arithmetic of a small MLP's update, and its wrapper imports torch._dynamo (~1 s) at
the first step of every process. `FlatSGD.step` calls the kernels torch's default CPU path
(`_single_tensor_sgd`) calls for each tensor, in its order, once over the whole buffer. They are
elementwise, so every weight and momentum buffer comes out bit for bit torch's
(tests/test_fastsgd.py, every option). The momentum buffers stay where torch keeps them,
`optimizer.state[p]["momentum_buffer"]`, as views of one flat buffer. `step_for` gives
`sweep.training.train.fit` this step where it applies and the optimizer's own elsewhere.

The first step is the optimizer's own `step()` (it makes the momentum buffers, and records for
an lr scheduler that the optimizer stepped); the flat step carries on from there.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

from sweep import _compat

log = logging.getLogger(__name__)


def _is_scheduler_counter(step: Callable, cls: type) -> bool:
    """Whether `step` is the wrapper an lr scheduler puts on optimizer.step around the class's
    step: it only records that the step ran, for the scheduler's order check."""
    # functools.wraps copies the step's names onto the wrapper; its code is torch's own
    code = getattr(step, "__code__", None)
    return getattr(code, "co_filename", None) == torch.optim.lr_scheduler.__file__ and (
        getattr(step, "__wrapped__", None) is cls.step
    )


def unsupported(
    optimizer: torch.optim.Optimizer, flat: torch.Tensor, grad: torch.Tensor
) -> str | None:
    """Why `FlatSGD` cannot stand in for `optimizer.step()`, or None if it can.

    The optimizer must be exactly torch.optim.SGD (a subclass may step otherwise) on CPU (where
    torch runs `_single_tensor_sgd`; elsewhere its foreach kernels), with nothing that torch's
    step would run besides the update (hooks, a replaced step, AMP's grad scale), and one param
    group whose params tile `flat`, each gradient at its param's place in `grad`: then one
    kernel over the buffers is torch's loop over the tensors."""
    if type(optimizer) is not torch.optim.SGD:
        return f"the optimizer is {type(optimizer).__name__}, not torch.optim.SGD"
    if flat.device.type != "cpu":
        return f"the parameters are on {flat.device.type}, where torch steps with foreach kernels"
    if len(optimizer.param_groups) != 1:
        return f"the optimizer has {len(optimizer.param_groups)} param groups"
    return _step_unsupported(optimizer) or _layout_unsupported(optimizer, flat, grad)


def _step_unsupported(optimizer: torch.optim.SGD) -> str | None:
    """Why torch's step would run more than the update (options, grad scale, hooks, a replaced
    step), or None."""
    group = optimizer.param_groups[0]
    for key in ("foreach", "fused", "differentiable"):
        if group.get(key):
            return f"{key}=True"
    if any(isinstance(group[k], torch.Tensor) for k in ("lr", "momentum", "weight_decay")):
        return "a hyperparameter is a Tensor"
    if getattr(optimizer, "grad_scale", None) is not None:
        return "a grad scale is attached"
    gone = _compat.missing()
    if gone:  # torch changed: the step hooks cannot be checked
        return f"the installed torch lacks {', '.join(gone)}"
    if _compat.has_optimizer_step_hooks(optimizer):
        return "an optimizer step hook is registered"
    step = vars(optimizer).get("step")
    if step is not None and not _is_scheduler_counter(step, type(optimizer)):
        return "optimizer.step is replaced on the instance"
    return None


def _layout_unsupported(
    optimizer: torch.optim.SGD, flat: torch.Tensor, grad: torch.Tensor
) -> str | None:
    """Why the param group's params and gradients are not exactly `flat` and `grad` tiled in
    the same places (or the momentum state is partial), or None."""
    group = optimizer.param_groups[0]
    spans = []
    for p in group["params"]:
        g = p.grad
        if g is None or g.layout != torch.strided or (p.dtype, g.dtype) != (flat.dtype,) * 2:
            return "a parameter has no dense gradient of the buffer's dtype"
        if (p.untyped_storage().data_ptr(), g.untyped_storage().data_ptr()) != (
            flat.untyped_storage().data_ptr(), grad.untyped_storage().data_ptr()
        ):  # fmt: skip
            return "a parameter or its gradient is not a view of the flat buffers"
        at = p.storage_offset() - flat.storage_offset()
        if not (p.is_contiguous() and g.is_contiguous() and g.shape == p.shape) or (
            g.storage_offset() - grad.storage_offset() != at
        ):
            return "a gradient is not laid out as its parameter"
        spans.append((at, p.numel()))
    spans.sort()
    ends = [0, *(at + n for at, n in spans)]
    if [at for at, _ in spans] != ends[:-1] or ends[-1] != flat.numel():
        return "the optimizer's params are not exactly the model's parameters"
    buffers = [optimizer.state.get(p, {}).get("momentum_buffer") for p in group["params"]]
    if any(b is None for b in buffers) and any(b is not None for b in buffers):
        return "only some params have a momentum buffer"
    return None


class FlatSGD:
    """`step()` does to the parameters (views of `flat`, gradients in `grad`) and to the state
    what `optimizer.step()` does, for a torch.optim.SGD that `unsupported` accepts.

    It reads the hyperparameters from the param group at every step (schedulers change lr, and
    some momentum). The momentum buffer is one flat tensor; `optimizer.state[p]` holds each
    parameter's view of it, as torch holds that parameter's own buffer, so state_dict() and
    readers of the state see torch's. Buffers the optimizer already has are carried on.
    """

    def __init__(self, optimizer: torch.optim.SGD, flat: torch.Tensor, grad: torch.Tensor) -> None:
        reason = unsupported(optimizer, flat, grad)
        if reason is not None:
            raise ValueError(f"FlatSGD cannot step this optimizer: {reason}")
        self.optimizer, self.flat, self.grad = optimizer, flat, grad
        self.group = optimizer.param_groups[0]
        self.scratch = torch.empty_like(flat)  # the direction, where it is neither grad nor buf
        self.buf: torch.Tensor | None = None
        if "momentum_buffer" in optimizer.state.get(self.group["params"][0], {}):
            self.buf = torch.empty_like(flat)
            for p, view in self._views(self.buf):
                view.copy_(optimizer.state[p]["momentum_buffer"])
        if self.buf is not None:
            self._publish()

    def _views(self, buffer: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each parameter with its slice of `buffer`, shaped as the parameter."""
        offsets = [p.storage_offset() - self.flat.storage_offset() for p in self.group["params"]]
        return [
            (p, buffer[at : at + p.numel()].view_as(p))
            for p, at in zip(self.group["params"], offsets)
        ]

    def _publish(self) -> None:
        for p, view in self._views(self.buf):
            self.optimizer.state[p]["momentum_buffer"] = view

    @torch.no_grad()
    def step(self) -> None:
        """One SGD update of every parameter (and momentum buffer), as torch.optim.SGD.step."""
        # _single_tensor_sgd's operations, in its order, on the whole buffer at once
        group = self.group
        lr, momentum, dampening = group["lr"], group["momentum"], group["dampening"]
        d = self.grad
        if group["maximize"]:
            d = torch.neg(d, out=self.scratch)
        if group["weight_decay"] != 0:
            d = torch.add(d, self.flat, alpha=group["weight_decay"], out=self.scratch)
        if momentum != 0:
            if self.buf is None:  # torch's first step: the buffer is the direction itself
                self.buf = d.clone()
                self._publish()
            else:
                self.buf.mul_(momentum).add_(d, alpha=1 - dampening)
            if group["nesterov"]:
                d = torch.add(d, self.buf, alpha=momentum, out=self.scratch)
            else:
                d = self.buf
        self.flat.add_(d, alpha=-lr)


def step_for(
    optimizer: torch.optim.Optimizer, flat: torch.Tensor, grad: torch.Tensor
) -> Callable[[], object]:
    """The optimizer step for `sweep.training.train.fit`'s loop: FlatSGD's where `unsupported` finds
    nothing against it, else the optimizer's own (the log says why)."""
    reason = unsupported(optimizer, flat, grad)
    if reason is not None:
        log.info(f"flat SGD step off: {reason}")
        return optimizer.step
    flat_step: Callable[[], None] | None = None

    def step() -> None:
        nonlocal flat_step
        if flat_step is None:  # torch's own first step; then the flat one, from its state
            optimizer.step()
            flat_step = FlatSGD(optimizer, flat, grad).step
        else:
            flat_step()

    return step
