"""Models: the seed's SimpleNet is mlp(hidden=[128]); lenet5 is the convolutional one.

A model factory is called with the data's `n_inputs`, `n_classes` and `input_shape` (the shape
of one example, e.g. (28, 28)) and returns an nn.Module mapping a batch of such examples to
class logits."""

from collections import OrderedDict

import torch.nn as nn

from sweep.errors import UserError


def mlp(
    n_inputs: int, n_classes: int, hidden: list[int], input_shape: tuple[int, ...] | None = None
) -> nn.Sequential:
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


def lenet5(n_inputs: int, n_classes: int, input_shape: tuple[int, ...]) -> nn.Sequential:
    """LeNet-5 as usually rebuilt for 28x28 images (LeCun et al. 1998, ReLU and max pooling):
    conv 6@5x5 (padded) - pool - conv 16@5x5 - pool - 120 - 84 - classes; 61.7k parameters."""
    if tuple(input_shape)[-2:] != (28, 28) or len(input_shape) not in (2, 3):
        raise UserError(
            f"model=lenet5 needs 28x28 single-channel images (data=mnist, fashion_mnist), got "
            f"examples of shape {tuple(input_shape)}; use model=simple_net or model=mlp"
        )
    return nn.Sequential(
        OrderedDict(
            image=nn.Unflatten(1, (1, 28)) if len(input_shape) == 2 else nn.Identity(),  # a channel
            conv1=nn.Conv2d(1, 6, 5, padding=2),
            relu1=nn.ReLU(),
            pool1=nn.MaxPool2d(2),
            conv2=nn.Conv2d(6, 16, 5),
            relu2=nn.ReLU(),
            pool2=nn.MaxPool2d(2),
            flatten=nn.Flatten(),
            fc1=nn.Linear(16 * 5 * 5, 120),
            relu3=nn.ReLU(),
            fc2=nn.Linear(120, 84),
            relu4=nn.ReLU(),
            fc3=nn.Linear(84, n_classes),
        )
    )


def compact_net(layers: list, inputs: list[int], input_shape: list[int] | None = None) -> nn.Module:
    """A compact model as sweep.export writes it (deployable.build): the kept `inputs` (flat
    positions in each example) gathered, then `layers` ([name, layer class, arguments] each).
    Takes the same inputs, of `input_shape`, as the model it was compacted from."""
    import math

    from sweep.models.deployable import build

    return build(layers, inputs, math.prod(input_shape) if input_shape else None)
