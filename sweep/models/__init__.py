"""Built-in models (`builtin`: the seed's MLP, lenet5, the compact net an archive rebuilds)
and `compact` (removing dead neurons, inputs and channels; FLOPs).

`sweep.models.mlp`, `.lenet5` and `.compact_net` are the `_target_`s configs and archives name.
"""

from sweep.models.builtin import compact_net, lenet5, mlp

__all__ = ["compact_net", "lenet5", "mlp"]
