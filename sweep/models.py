"""Models: the seed's SimpleNet is mlp(hidden=[128])."""

from collections import OrderedDict

import torch.nn as nn


def mlp(n_inputs: int, n_classes: int, hidden: list[int]) -> nn.Sequential:
    """Flatten, then Linear-ReLU for each hidden width, then Linear to the classes.

    Layers are named fc1, fc2, ... as in the seed, so state_dict keys read fc1.weight.
    """
    widths = [n_inputs, *hidden, n_classes]
    layers: OrderedDict[str, nn.Module] = OrderedDict(flatten=nn.Flatten())
    for i, (w_in, w_out) in enumerate(zip(widths[:-1], widths[1:]), start=1):
        layers[f"fc{i}"] = nn.Linear(w_in, w_out)
        if i < len(widths) - 1:
            layers[f"relu{i}"] = nn.ReLU()
    return nn.Sequential(layers)
