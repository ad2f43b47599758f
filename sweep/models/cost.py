"""What a model costs to run: multiply-adds per example (FLOPs, as the field counts them for
Linear and Conv layers). Its own module so that both compaction paths (models/compact.py for a
plain Sequential, models/graph.py for any traceable net) measure with it without importing each
other."""

from __future__ import annotations

import torch
import torch.nn as nn

CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
# Examples per forward pass when a whole split is scored without gradients (training.accuracy,
# the archive's and exported files' read-back). A network of Linear layers is a few matmuls a
# batch, fastest in big batches. A conv net's activations are (batch, channels, H, W): a
# ResNet-8 at width 16 on 28x28 images holds 50 MB a layer at 1,024 images, and scoring the
# 10,000 test images took 6.2 s at 8,192 a batch, 3.6 s at 512 and 1.7 s at 256 (2 threads;
# issue 32's fashion_resnet run spent 43 s of its 47 s scoring after training).
EVAL_BATCH_FLAT, EVAL_BATCH_CONV = 8192, 256


def eval_batch(model: nn.Module) -> int:
    """Examples per no-gradient forward pass for `model`: EVAL_BATCH_CONV where it has a
    convolution, else EVAL_BATCH_FLAT (the figures behind them are at their definition)."""
    conv = any(isinstance(m, CONVS) for m in model.modules())
    return EVAL_BATCH_CONV if conv else EVAL_BATCH_FLAT


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
        if isinstance(m, (nn.Linear, *CONVS))
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
