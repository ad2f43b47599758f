"""Built-in models (`builtin`: the seed's MLP, lenet5, the compact net an archive rebuilds;
`resnet`: ResNet-20's family and torchvision's models), `compact` (removing dead neurons,
inputs and channels of a plain Sequential; FLOPs) and `graph` (channels out of any network
Torch-Pruning's dependency graph traces).

`sweep.models.mlp`, `.lenet5` and `.compact_net` are the `_target_`s configs and archives name.
"""

from sweep.models.builtin import compact_net, lenet5, mlp

__all__ = ["compact_net", "lenet5", "mlp"]
