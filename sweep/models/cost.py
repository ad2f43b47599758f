"""What a model costs to run: multiply-adds per example (FLOPs, as the field counts them for
Linear and Conv layers). Its own module so that both compaction paths (models/compact.py for a
plain Sequential, models/graph.py for any traceable net) measure with it without importing each
other."""

from __future__ import annotations

import torch
import torch.nn as nn


def flops(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-adds per example of the model's Linear and Conv layers (in * out for a Linear;
    out_channels * out_h * out_w * in_channels / groups * kernel_h * kernel_w for a Conv2d);
    biases, activations and pooling are not counted. Measured by running one zero example of
    `input_shape` through the model with hooks, so any model whose layers are these works."""
    total = 0

    def count(m: nn.Module, inputs: tuple, out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(m, nn.Linear):
            total += m.in_features * out.numel()
        else:  # a conv: each output value is a dot product over in/groups * kernel inputs
            total += out.numel() * m.weight[0].numel()

    handles = [
        m.register_forward_hook(count)
        for m in model.modules()
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d))
    ]
    was_training = model.training
    model.eval()
    try:
        p = next(model.parameters())
        model(torch.zeros(1, *input_shape, dtype=p.dtype, device=p.device))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return total
