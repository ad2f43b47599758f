"""torch.optim.SGD's update on the flat parameter buffer of `sweep.train.flatten_parameters`:
a few kernels a step instead of torch.optim's per-tensor Python.

`torch.optim.SGD.step` spends ~20 us a step on CPU in Python (the profiler record and hook
loops, lists of the params, grads and buffers, a dispatch per tensor per operation), several
times the arithmetic of a small MLP's update, and its wrapper imports torch._dynamo (~1 s) at
the first step of every process. `FlatSGD.step` calls the kernels torch's default CPU path
(`_single_tensor_sgd`) calls for each tensor, in its order, once over the whole buffer. They are
elementwise, so every weight and momentum buffer comes out bit for bit torch's
(tests/test_fastsgd.py, every option). The momentum buffers stay where torch keeps them,
`optimizer.state[p]["momentum_buffer"]`, as views of one flat buffer. `step_for` gives
`sweep.train.fit` this step where it applies and the optimizer's own elsewhere.

Importing this module also spares a process the torch._dynamo import that
`Optimizer.add_param_group` (run by every optimizer's constructor) would pay (`skip_dynamo_import`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from torch.optim import optimizer as torch_optimizer

log = logging.getLogger(__name__)

_DISABLED = ("add_param_group", "zero_grad", "state_dict", "load_state_dict")


def skip_dynamo_import() -> None:
    """Let torch.optim.Optimizer's dynamo-disabled methods run without importing torch._dynamo.

    torch._compile._disable_dynamo's wrapper imports torch._dynamo at its first call (~1 s,
    measured with `python -X importtime`) to build the method's disabled twin, which it caches
    on the method as `__dynamo_disable`. The twin differs from the method only under
    torch.compile, which never runs an optimizer here, so the method itself is cached. Where
    torch wraps them otherwise, nothing changes (the import is paid)."""
    disable = getattr(getattr(torch, "_compile", None), "_disable_dynamo", None)
    if disable is None:
        return
    wrapper_code = disable(skip_dynamo_import).__code__
    for name in _DISABLED:
        method = getattr(torch.optim.Optimizer, name, None)
        if getattr(method, "__code__", None) is not wrapper_code:
            continue
        cells = dict(zip(method.__code__.co_freevars, method.__closure__ or ()))
        fn = cells["fn"].cell_contents if "fn" in cells else None
        if callable(fn) and getattr(fn, "__dynamo_disable", None) is None:
            fn.__dynamo_disable = fn


skip_dynamo_import()


def _is_scheduler_counter(step: Callable, cls: type) -> bool:
    """Whether `step` is the wrapper an lr scheduler puts on optimizer.step around the class's
    step: it only records that the step ran, for the scheduler's order check."""
    return bool(getattr(step, "_wrapped_by_lr_sched", False)) and (
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
    group = optimizer.param_groups[0]
    for key in ("foreach", "fused", "differentiable"):
        if group.get(key):
            return f"{key}=True"
    if any(isinstance(group[k], torch.Tensor) for k in ("lr", "momentum", "weight_decay")):
        return "a hyperparameter is a Tensor"
    if getattr(optimizer, "grad_scale", None) is not None:
        return "a grad scale is attached"
    hooks = (optimizer._optimizer_step_pre_hooks, optimizer._optimizer_step_post_hooks,
             torch_optimizer._global_optimizer_pre_hooks,
             torch_optimizer._global_optimizer_post_hooks)  # fmt: skip
    if any(hooks):
        return "an optimizer step hook is registered"
    step = vars(optimizer).get("step")
    if step is not None and not _is_scheduler_counter(step, type(optimizer)):
        return "optimizer.step is replaced on the instance"
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
        # what an lr scheduler's wrapper of optimizer.step records; its order check reads it
        self.optimizer._opt_called = True


def step_for(
    optimizer: torch.optim.Optimizer, flat: torch.Tensor, grad: torch.Tensor
) -> Callable[[], object]:
    """The optimizer step for `sweep.train.fit`'s loop: FlatSGD's where `unsupported` finds
    nothing against it, else the optimizer's own (the log says why)."""
    reason = unsupported(optimizer, flat, grad)
    if reason is None:
        return FlatSGD(optimizer, flat, grad).step
    log.info(f"flat SGD step off: {reason}")
    return optimizer.step
