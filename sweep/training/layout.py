"""Channels-last training for conv nets on the CPU, with the trainer's flat parameter buffers.

oneDNN's CPU convolutions run faster on NHWC ("channels last") tensors than on torch's default
NCHW (PyTorch's "Channels Last Memory Format" tutorial; `benchmarks/conv_train_speed.py`
measures it here: 1.34x to 1.43x a ResNet-8 training step on one thread). The trainer keeps every
parameter as a view of one flat buffer (`train.flatten_parameters`), in NCHW order, which
the regularizers' groups and the pruning masks index, so the weights themselves cannot
change layout. Instead each step reads the conv weights through a channels-last copy
(`Tensor.contiguous(memory_format=...)`, differentiable: the gradient flows back into the
flat buffer's NCHW view) and feeds the batch channels-last; the copies are a few hundred
kilobytes a step, against the convolutions' gigaflops.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn


def has_conv2d(model: nn.Module) -> bool:
    """Whether the model has a 2-D convolution (what channels-last changes)."""
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def channels_last_forward(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """forward(x) -> model(x)'s logits, computed with x and every 4-D parameter (the conv
    weights, (out, in / groups, kH, kW)) in channels-last layout; the same values as
    model(x) up to float rounding (the summation order of a convolution may differ), the
    gradients landing in the parameters as they are (their own layout), buffers (BatchNorm's
    running statistics) updated in place as by model(x). x of any shape: a 4-D batch
    (n, C, H, W) is converted, any other passed as it is (a model may add the channel axis
    itself; its first conv then reads NCHW, the rest still run channels-last)."""
    names = [n for n, p in model.named_parameters() if p.dim() == 4]

    def forward(x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        params = dict(model.named_parameters())
        last = {n: params[n].contiguous(memory_format=torch.channels_last) for n in names}
        return torch.func.functional_call(model, last, (x,), strict=False)

    return forward
