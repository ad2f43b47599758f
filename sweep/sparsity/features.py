"""The feature report: which input features a trained model still uses.

L1 on the first layer is feature selection: an input whose outgoing weights are all exactly
zero no longer affects the output. A trial on a table (data with feature names) writes
features.csv, one row per input feature in the data's column order.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch
import torch.nn as nn

from sweep.data.datasets import Dataset

COLUMNS = ["feature", "selected", "nnz", "weight_norm"]


def first_layer_weight(model: nn.Module, n_inputs: int) -> torch.Tensor | None:
    """The (out, n_inputs) weight of the model's first layer with parameters, if that layer is
    a Linear taking the flattened inputs; None otherwise (a convolution, an embedding, ...)."""
    for module in model.modules():
        if next(module.parameters(recurse=False), None) is None:
            continue
        if isinstance(module, nn.Linear) and module.in_features == n_inputs:
            return module.weight
        return None
    return None


@torch.no_grad()
def table(model: nn.Module, names: tuple[str, ...]) -> pd.DataFrame | None:
    """Per input feature: `selected` (any first-layer weight from it is non-zero), `nnz` (how
    many are), `weight_norm` (the L2 norm of its first-layer weights). None where the first
    layer is not a Linear over these features."""
    weight = first_layer_weight(model, len(names))
    if weight is None:
        return None
    w = weight.detach().float().cpu()
    nnz = (w != 0).sum(dim=0)
    return pd.DataFrame(
        {
            "feature": list(names),
            "selected": (nnz > 0).numpy(),
            "nnz": nnz.numpy(),
            "weight_norm": w.norm(dim=0).numpy(),
        },
        columns=COLUMNS,
    )


def write(model: nn.Module, data: Dataset, path: Path) -> None:
    """Write features.csv for data with feature names (tables); nothing for images."""
    if data.feature_names is None:
        return
    frame = table(model, data.feature_names)
    if frame is not None:
        frame.to_csv(path, index=False)
