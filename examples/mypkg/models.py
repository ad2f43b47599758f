"""A model of the user's own, for a table of features."""

from __future__ import annotations

import torch
import torch.nn as nn


class TabularNet(nn.Module):
    """Linear - LayerNorm - ReLU - Linear. l1sweep gives it the n_inputs and n_classes of the
    data (it takes no input_shape, so it is not given one); `hidden` comes from its config.

    With regularizer.params=weights, L1 acts on fc1.weight and out.weight (Linear layers) and
    not on the LayerNorm; fc1 is the first layer, so features.csv says which columns it uses.
    """

    def __init__(self, n_inputs: int, n_classes: int, hidden: int = 32) -> None:
        super().__init__()
        self.fc1 = nn.Linear(n_inputs, hidden)
        self.norm = nn.LayerNorm(hidden)
        self.out = nn.Linear(hidden, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.norm(self.fc1(x.flatten(1)))))
