"""Convolutional networks for `prune=neurons` on real graphs: `resnet` (ResNet-20 and its CIFAR
family, He et al. 2016) and `torchvision` (any torchvision classification model by name).

Both take the data's examples as they come, (n, H, W) for one-channel images or (n, C, H, W),
and return class logits (n, n_classes)."""

from __future__ import annotations

import torch
import torch.nn as nn

from sweep.errors import UserError


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers and the identity added back (He et al. 2016, fig. 2); where the
    stride or the width changes, the shortcut is a 1x1 conv + BN (the paper's option B), so
    every add joins two tensors of the same channels: the coupling a channel cut follows."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(n, c_in, H, W) -> (n, c_out, H / stride, W / stride)."""
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """The CIFAR ResNet (He et al. 2016, sec. 4.2): a 3x3 conv of `width` channels, three
    stages of (depth - 2) / 6 basic blocks at width, 2 * width and 4 * width channels (the
    second and third halve the image), global average pooling, a Linear to the classes.
    depth=20, width=16 is ResNet-20 (0.27M parameters for 10 classes)."""

    def __init__(self, channels: int, n_classes: int, depth: int = 20, width: int = 16) -> None:
        super().__init__()
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
            raise UserError(f"model.depth must be 6n + 2 with n >= 1 (8, 14, 20, 32, ...), "
                            f"got {depth!r}")  # fmt: skip
        if isinstance(width, bool) or not isinstance(width, int) or width < 1:
            raise UserError(f"model.width must be an integer >= 1, got {width!r}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(channels, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        stages, c_in = [], width
        for i, c_out in enumerate((width, 2 * width, 4 * width)):
            blocks = [BasicBlock(c_in if j == 0 else c_out, c_out, 2 if i and j == 0 else 1)
                      for j in range(n)]  # fmt: skip
            stages.append(nn.Sequential(*blocks))
            c_in = c_out
        self.layer1, self.layer2, self.layer3 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 * width, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(n, H, W) or (n, C, H, W) images -> (n, n_classes) logits."""
        if x.dim() == 3:  # one-channel images come without their channel axis
            x = x.unsqueeze(1)
        x = torch.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


def _channels(input_shape: tuple[int, ...] | None, model: str) -> int:
    """The image channels of examples of `input_shape`: (H, W) -> 1, (C, H, W) -> C."""
    shape = tuple(input_shape or ())
    if len(shape) == 2:
        return 1
    if len(shape) == 3 and shape[0] in (1, 3):
        return int(shape[0])
    raise UserError(
        f"model={model} needs images, (H, W) or (1 or 3, H, W) per example, got examples of "
        f"shape {shape}; use model=mlp"
    )


def resnet(
    n_inputs: int,
    n_classes: int,
    input_shape: tuple[int, ...] | None = None,
    depth: int = 20,
    width: int = 16,
) -> ResNet:
    """ResNet-`depth` of first-stage `width` channels for the data's images (28x28 or 32x32,
    1 or 3 channels; any size of at least 8x8 works)."""
    channels = _channels(input_shape, "resnet")
    if min(tuple(input_shape or (0,))[-2:]) < 8:
        raise UserError(f"model=resnet needs images of at least 8x8, got {tuple(input_shape)}")
    return ResNet(channels, n_classes, depth, width)


class _WithChannelAxis(nn.Module):
    """A model of (n, C, H, W) images that also takes one-channel (n, H, W) ones."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(n, H, W) or (n, C, H, W) -> the net's logits."""
        return self.net(x.unsqueeze(1) if x.dim() == 3 else x)


def torchvision_model(
    n_inputs: int, n_classes: int, input_shape: tuple[int, ...] | None = None, name: str = ""
) -> nn.Module:
    """torchvision.models.get_model(`name`, weights=None, num_classes=n_classes), its first
    conv rebuilt for the data's channels where they differ from 3 (same kernel, stride and
    padding; new weights: nothing pretrained is read). Raises UserError for an unknown name
    or a model whose first layer is not a Conv2d."""
    import torchvision

    channels = _channels(input_shape, "torchvision")
    names = torchvision.models.list_models(module=torchvision.models)
    if name not in names:
        raise UserError(f"model.name must be a torchvision classification model "
                        f"(e.g. resnet18, mobilenet_v3_small), got {name!r}")  # fmt: skip
    net = torchvision.models.get_model(name, weights=None, num_classes=n_classes)
    if channels != 3:
        parent, attr, first = _first_conv(net)
        if not isinstance(first, nn.Conv2d):
            raise UserError(f"model=torchvision: {name}'s first layer is not a Conv2d; it "
                            f"cannot take {channels}-channel images")  # fmt: skip
        setattr(parent, attr, nn.Conv2d(
            channels, first.out_channels, first.kernel_size, first.stride, first.padding,
            first.dilation, first.groups, first.bias is not None))  # fmt: skip
    return _WithChannelAxis(net)


def _first_conv(net: nn.Module) -> tuple[nn.Module, str, nn.Module | None]:
    """(parent module, attribute name, module) of the first Conv2d in `net`'s modules."""
    for parent in net.modules():
        for attr, child in parent.named_children():
            if isinstance(child, nn.Conv2d):
                return parent, attr, child
    return net, "", None
