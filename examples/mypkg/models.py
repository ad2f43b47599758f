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


class SmallResNet(nn.Module):
    """A residual net of the user's own for small images (digits' 8x8): a conv-BatchNorm-ReLU
    stem of `width` channels, one basic block (He et al. 2016) that halves the resolution and
    doubles the channels, its shortcut a strided 1x1 conv with a BatchNorm (He et al.'s
    projection shortcut), global average pooling, a Linear to the classes.

    l1sweep gives it n_classes and the data's input_shape ((H, W) or (C, H, W)). Its adds
    couple channels that prune=neurons cuts together, through the model's dependency graph
    (docs/own_model_and_data.md, "Your own conv net").
    """

    def __init__(self, n_classes: int, input_shape: tuple[int, ...], width: int = 8) -> None:
        super().__init__()
        channels = 1 if len(input_shape) == 2 else int(input_shape[0])
        wide = 2 * width
        self.stem = nn.Conv2d(channels, width, 3, padding=1, bias=False)
        self.bn0 = nn.BatchNorm2d(width)
        self.conv1 = nn.Conv2d(width, wide, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(wide)
        self.conv2 = nn.Conv2d(wide, wide, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(wide)
        self.shortcut = nn.Sequential(
            nn.Conv2d(width, wide, 1, stride=2, bias=False), nn.BatchNorm2d(wide)
        )
        self.out = nn.Linear(wide, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:  # (n, H, W): one channel
            x = x.unsqueeze(1)
        x = torch.relu(self.bn0(self.stem(x)))
        y = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(y)) + self.shortcut(x))  # the add couples channels
        return self.out(x.mean((2, 3)))
