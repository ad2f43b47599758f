"""Sparsity measures. Every figure counts the parameters the regularizer acts on."""

from __future__ import annotations

import copy

import torch
import torch.nn as nn


@torch.no_grad()
def layer_table(model: nn.Module, counted: list[nn.Parameter], tol: float) -> list[dict]:
    """One row per counted tensor: layer, shape, n, nnz, n_le_tol, sparsity, sparsity_tol."""
    rows = []
    ids = {id(p) for p in counted}
    for name, p in model.named_parameters():
        if id(p) not in ids:
            continue
        n = p.numel()
        nnz = int(torch.count_nonzero(p))
        small = int((p.abs() <= tol).sum())
        rows.append(
            {
                "layer": name,
                "shape": "x".join(map(str, p.shape)),
                "n": n,
                "nnz": nnz,
                "n_le_tol": small,
                "sparsity": (n - nnz) / n,
                "sparsity_tol": small / n,
            }
        )
    return rows


def totals(rows: list[dict]) -> dict:
    """Whole-model figures from the per-layer rows, so the two always add up."""
    n = sum(r["n"] for r in rows)
    nnz = sum(r["nnz"] for r in rows)
    small = sum(r["n_le_tol"] for r in rows)
    return {"n_params": n, "nnz": nnz, "sparsity": (n - nnz) / n, "sparsity_tol": small / n}


@torch.no_grad()
def active_inputs(model: nn.Module) -> int | None:
    """Input features with at least one non-zero outgoing weight in the model's first layer;
    None where that layer is not Linear: a convolution applies one kernel to every pixel, so
    no weight belongs to one input and zeros in it drop no input."""
    first = next(m for m in model.modules() if next(m.parameters(recurse=False), None) is not None)
    if not isinstance(first, nn.Linear):
        return None
    return int((first.weight != 0).any(dim=0).sum())


@torch.no_grad()
def pruned(model: nn.Module, counted: list[nn.Parameter], tol: float) -> nn.Module:
    """A copy of the model with every counted weight of |w| <= tol set to exactly zero."""
    clone = copy.deepcopy(model)
    ids = {id(p) for p in counted}
    for p, q in zip(model.parameters(), clone.parameters()):
        if id(p) in ids:
            q.masked_fill_(q.abs() <= tol, 0.0)
    return clone


def zero_scales(model: nn.Module) -> int | None:
    """BatchNorm channels whose scale (gamma) is exactly zero (network slimming's pruned
    channels, `regularizer=bn_l1`); None for a model without a BatchNorm with a scale."""
    norms = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
    scales = [m.weight for m in model.modules() if isinstance(m, norms) and m.weight is not None]
    return sum(int((g == 0).sum()) for g in scales) if scales else None
