"""A hand-written forward and backward for `sweep.models.mlp` (Flatten, Linear-ReLU..., Linear)
under cross-entropy: the few matmuls of a training step, without modules or the autograd engine.

Eager PyTorch spends most of a small MLP's step on module calls and the autograd graph, not on
arithmetic. This step calls the same ATen kernels autograd would, in the same order and with the
same operand layouts, so the loss and every gradient come out bit for bit what
`F.cross_entropy(model(x), y).backward()` gives on CPU (tests/test_fastmlp.py checks it).
`sweep.training.train.fit` uses it wherever `supported` finds nothing against it.
"""

from __future__ import annotations

import logging

import torch
import torch.nn as nn

from sweep import _compat

log = logging.getLogger(__name__)

_MEAN = 1  # ATen's Reduction::Mean, what F.cross_entropy uses
_IGNORE = -100  # F.cross_entropy's default ignore_index
_aten = torch.ops.aten


def unsupported(model: nn.Module) -> str | None:
    """Why the fast step cannot train `model`, or None if it can: it must be exactly the
    layers `sweep.models.mlp` builds (a subclass or a hook could change what they compute)."""
    if type(model) is not nn.Sequential:
        return f"the model is a {type(model).__name__}, not an nn.Sequential of Linear and ReLU"
    layers = list(model)
    if layers and type(layers[0]) is nn.Flatten:
        if (layers[0].start_dim, layers[0].end_dim) != (1, -1):
            return "its Flatten does not flatten each example whole"
        layers = layers[1:]
    want = [nn.Linear if i % 2 == 0 else nn.ReLU for i in range(len(layers))]
    got = [type(m) for m in layers]
    if not layers or len(layers) % 2 == 0 or got != want:
        names = ", ".join(t.__name__ for t in got)
        return f"its layers ({names}) are not Linear, ReLU, ..., Linear"
    return _state_unsupported(model, layers)


def _state_unsupported(model: nn.Module, layers: list[nn.Module]) -> str | None:
    """Why the Linear/ReLU chain `layers` of `model` computes or trains otherwise than the
    plain layers (a hook, a frozen parameter, a missing bias), or None."""
    gone = _compat.missing()
    if gone:  # torch changed: the step cannot check for hooks or compute autograd's bits
        return f"the installed torch lacks {', '.join(gone)}"
    for m in model.modules():
        if _compat.has_module_hooks(m):
            return f"a hook is registered on its {type(m).__name__}"
    for p in model.parameters():
        if not p.requires_grad:
            return "a parameter is frozen (requires_grad=False)"
    if any(m.bias is None for m in layers[::2]):
        return "a Linear layer has no bias"
    return None


class FastMLP:
    """The training step of an mlp: `step(x, y)` writes every parameter's .grad in place and
    returns the batch's mean cross-entropy (detached).

    Holds detached views of the parameters, so make it after anything that moves them (as
    `train.flatten_parameters` does); the gradients are written through `.grad`, which
    must then be the views that function made (or None: a zero tensor is put there).
    """

    def __init__(self, model: nn.Sequential) -> None:
        reason = unsupported(model)
        if reason is not None:
            raise ValueError(f"FastMLP cannot train this model: {reason}")
        linears = [m for m in model if type(m) is nn.Linear]
        for m in linears:
            for p in (m.weight, m.bias):
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
        self.weights = [m.weight.detach() for m in linears]
        self.biases = [m.bias.detach() for m in linears]
        self.weight_grads = [m.weight.grad for m in linears]
        self.bias_grads = [m.bias.grad for m in linears]
        self._one = torch.ones((), dtype=self.weights[0].dtype, device=self.weights[0].device)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One training step's gradients for inputs `x` (N, ...) and labels `y` (N,): each
        parameter's .grad written in place; returns the mean cross-entropy (a 0-d tensor)."""
        n = len(y)
        a = x.reshape(n, -1)
        acts = [a]  # each layer's input: the weight gradients need them
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            a = torch.addmm(b, a, w.t())  # what F.linear calls
            if i < last:
                a = torch.relu(a)
                acts.append(a)
        logp = torch.log_softmax(a, 1)
        loss, total_weight = _aten.nll_loss_forward.default(logp, y, None, _MEAN, _IGNORE)
        dlogp = _aten.nll_loss_backward.default(
            self._one, logp, y, None, _MEAN, _IGNORE, total_weight
        )
        dz = _compat.log_softmax_backward(dlogp, logp, 1, logp.dtype)
        for i in range(last, -1, -1):
            # dz.t() @ input, not input.t() @ dz: autograd's choice for a transposed weight,
            # and a different summation order would change the last bits
            torch.mm(dz.t(), acts[i], out=self.weight_grads[i])
            torch.sum(dz, 0, out=self.bias_grads[i])
            if i:  # the input layer's dX is never needed
                dz = _aten.threshold_backward.default(torch.mm(dz, self.weights[i]), acts[i], 0)
        return loss
