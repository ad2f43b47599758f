"""Pruning after training (group `prune`): which regularized weights become exact zeros, in
how many rounds, and how each round is fine-tuned. The fine-tuning itself is sweep.train.fit
with a mask; this module only decides the masks."""

from __future__ import annotations

import torch

from sweep.errors import UserError

METHODS = ("none", "magnitude", "threshold")


class Pruner:
    """`magnitude`: set the smallest-|w| regularized weights to zero until `sparsity` of them
    are zero, over all of them at once (scope=global) or in each tensor (scope=layer), in
    `rounds` rounds of growing sparsity, each followed by `epochs` of masked fine-tuning at
    `lr_scale` times the optimizer's lr. Round r of R reaches 1 - (1 - sparsity)^(r/R): every
    round removes the same fraction of the weights still alive (Han et al.'s iterative
    pruning; the last round lands exactly on `sparsity`).
    `threshold`: one round that zeroes every weight with |w| <= tol, then fine-tunes.
    Weights the training already left exactly zero (the proximal L1 step's) are pruned first
    and stay zero. `none`: no pruning; the other options are ignored, so an experiment that
    sets them can still be run with prune=none (the dense baseline of objective=within_drop).
    """

    def __init__(
        self,
        method: str,
        sparsity: float = 0.0,
        scope: str = "global",
        rounds: int = 1,
        epochs: int = 0,
        lr_scale: float = 0.1,
        tol: float = 0.0,
    ) -> None:
        if method not in METHODS:
            raise UserError(f"prune.method must be one of {', '.join(METHODS)}, got {method!r}")
        self.method = method
        if method == "none":
            return
        if scope not in ("global", "layer"):
            raise UserError(f"prune.scope must be 'global' or 'layer', got {scope!r}")
        if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)):
            raise UserError(f"prune.sparsity must be a number in [0, 1), got {sparsity!r}")
        if method == "magnitude" and not 0.0 <= sparsity < 1.0:
            raise UserError(f"prune.sparsity must be in [0, 1), got {sparsity}")
        for key, value, least in (("rounds", rounds, 1), ("epochs", epochs, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise UserError(f"prune.{key} must be an integer >= {least}, got {value!r}")
        if isinstance(lr_scale, bool) or not isinstance(lr_scale, (int, float)) or lr_scale <= 0:
            raise UserError(f"prune.lr_scale must be a number > 0, got {lr_scale!r}")
        self.sparsity, self.scope, self.tol = float(sparsity), scope, float(tol)
        self.epochs, self.lr_scale = epochs, lr_scale
        self.rounds = rounds if method == "magnitude" else 1

    @property
    def active(self) -> bool:
        return self.method != "none"

    @property
    def target(self) -> float:
        return self.targets()[-1]

    def columns(self) -> dict:
        """The options as results.csv columns (prune_<option>); none for method=none."""
        if not self.active:
            return {}
        cut = {"prune_sparsity": self.sparsity, "prune_scope": self.scope,
               "prune_rounds": self.rounds} if self.method == "magnitude" else {}  # fmt: skip
        return {**cut, "prune_epochs": self.epochs, "prune_lr_scale": self.lr_scale}

    def targets(self) -> list[float]:
        """The sparsity each magnitude round reaches; the last is `sparsity` exactly."""
        r = self.rounds
        return [1.0 - (1.0 - self.sparsity) ** (i / r) for i in range(1, r)] + [self.sparsity]

    @torch.no_grad()
    def keep(self, w: torch.Tensor, sizes: list[int], target: float) -> torch.Tensor:
        """The mask (True = kept) of the flat regularized weights `w` (tensors of `sizes`
        elements, back to back) after pruning to `target`; weights already zero stay pruned."""
        if self.method == "threshold":
            return w.abs() > self.tol
        keep = w != 0
        parts = [(w, keep)] if self.scope == "global" else zip(w.split(sizes), keep.split(sizes))
        for part, kept in parts:  # kept is a view of keep
            k = round(target * part.numel())
            # argsort, not a threshold: ties at the cut would miss the target count
            kept[part.abs().argsort(stable=True)[:k]] = False
        return keep


def flat(params: list[torch.Tensor]) -> torch.Tensor:
    """The tensors back to back, as one flat copy (the order Pruner.keep's `sizes` follow)."""
    return torch.cat([p.detach().reshape(-1) for p in params])


@torch.no_grad()
def apply_(params: list[torch.Tensor], keep: torch.Tensor) -> None:
    """Zero, in place, every element of `params` whose entry of the flat mask is False."""
    for p, kept in zip(params, keep.split([p.numel() for p in params])):
        p.mul_(kept.view_as(p))
