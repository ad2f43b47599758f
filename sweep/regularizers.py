"""L1 / L2 / elastic-net regularization, as a loss penalty or as a proximal step."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from sweep.errors import UserError

# params=weights: the `weight` of these layer types (and their subclasses) is regularized and
# counted. Biases, normalization scales and embeddings are not; regularizer.params=[...] names
# other types, regularizer.params=all takes every parameter.
WEIGHT_LAYERS = ("Linear", "Conv1d", "Conv2d", "Conv3d")


def check_nonnegative(key: str, value: object) -> float:
    """`value` as a float, or a UserError naming `key` if it is not a number >= 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"{key} must be a number, got {value!r}")
    if not value >= 0:  # also rejects nan
        raise UserError(f"{key} must be >= 0, got {value}")
    return float(value)


class Regularizer:
    """`l1 * sum|w| + l2 * sum w^2` over the parameters chosen by `params`.

    proximal=False (the seed's method): the L1 term is minimised by its subgradient
    `l1 * sign(w)`, which makes weights oscillate around zero but rarely reach it.
    proximal=True: after each optimizer step, w <- sign(w) * max(|w| - lr * l1, 0), the
    proximal operator of the L1 term, which puts weights exactly on zero. With Adam this
    is a decoupled shrinkage (like AdamW's decoupled weight decay): the threshold is
    lr * l1 for every weight, not scaled by Adam's per-weight step size, since no exact
    proximal form exists under Adam's preconditioner.
    The L2 term is always a gradient term: `2 * l2 * w`.

    The methods take the regularized weights as one flat tensor `w` (and their gradient
    as `g`), which `sweep.train.flatten_parameters` makes: each step is then a handful of
    kernels over all weights at once instead of a handful per parameter tensor.
    """

    def __init__(self, l1: float, l2: float, proximal: bool, params: str | Sequence[str]) -> None:
        l1, l2 = check_nonnegative("l1_lambda", l1), check_nonnegative("l2_lambda", l2)
        if isinstance(params, str):
            if params not in ("all", "weights"):
                raise UserError(
                    f"regularizer.params must be all, weights or a list of layer types "
                    f"(e.g. [Linear,Embedding]), got {params!r}"
                )
            layers = WEIGHT_LAYERS if params == "weights" else ()
        else:
            layers = tuple(str(t) for t in params)
            if not layers or not all(t.isidentifier() for t in layers):
                raise UserError(
                    "regularizer.params lists layer class names, e.g. [Linear,Conv2d,MyLayer]; "
                    f"got {list(params)!r}"
                )
            params = ",".join(layers)  # as the CSV's sparsity_params column shows it
        self.l1, self.l2, self.proximal, self.params = l1, l2, proximal, params
        self.layers = layers

    def for_finetuning(self) -> Regularizer:
        """The regularizer masked fine-tuning after pruning uses: this one without its L1 term
        (the mask does the sparsifying then), the L2 term and the counted parameters kept."""
        return Regularizer(0.0, self.l2, self.proximal, self.params)

    def select(self, model: nn.Module) -> list[nn.Parameter]:
        """The parameters the regularizer acts on; every sparsity figure counts these.

        params=all: every parameter (biases included, as the seed counts). Otherwise the
        `weight` parameter of every module whose class, or a base class, is named in
        `self.layers` (WEIGHT_LAYERS for params=weights), in model.parameters() order.
        """
        if self.params == "all":
            return list(model.parameters())
        ids = {
            id(m.weight)
            for m in model.modules()
            if isinstance(getattr(m, "weight", None), nn.Parameter)
            and any(c.__name__ in self.layers for c in type(m).__mro__)
        }
        chosen = [p for p in model.parameters() if id(p) in ids]
        if not chosen:
            raise UserError(
                f"regularizer.params={self.params} selects no parameter of this model (it has "
                f"no {'/'.join(self.layers)} layer with a weight); name its layer types, "
                "e.g. regularizer.params=[MyLayer], or use regularizer.params=all"
            )
        return chosen

    def meter(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Running sums, on w's device, of the norms the penalty's value needs: (|w|_1, |w|_2^2)."""
        return w.new_zeros(()), w.new_zeros(())

    def value(self, meter: tuple[torch.Tensor, torch.Tensor]) -> float:
        """`l1 * sum|w| + l2 * sum w^2`, summed over the steps the meter has seen."""
        return self.l1 * float(meter[0]) + self.l2 * float(meter[1])

    def penalty(self, w: torch.Tensor) -> float:
        """The penalty's value at these weights."""
        return self.l1 * float(w.abs().sum()) + self.l2 * float(w @ w)

    @torch.no_grad()
    def add_gradient_(
        self,
        w: torch.Tensor,
        g: torch.Tensor,
        meter: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> None:
        """Add the penalty's gradient to g, as autograd would for loss + penalty; with a meter,
        also this step's norms (the seed prints loss + penalty at each step's weights).
        Call it between backward and the optimizer step, while w holds the step's weights.

        Done by hand rather than through autograd: the same values (sign(0) = 0 is the
        subgradient torch's abs uses) in a few kernels instead of a graph per step.
        """
        signs = torch.sign(w) if self.l1 else None
        if meter is not None:
            if self.l1:  # |w|_1 = w . sign(w): reuses the signs, cheaper than a norm kernel
                meter[0].add_(w @ signs)
            if self.l2:
                meter[1].add_(w @ w)
        if self.l1 and not self.proximal:
            g.add_(signs, alpha=self.l1)
        if self.l2:
            g.add_(w, alpha=2.0 * self.l2)

    @torch.no_grad()
    def prox_(self, w: torch.Tensor, lr: float) -> None:
        """Soft-threshold in place: w - clamp(w, -t, t) == sign(w) * max(|w| - t, 0)."""
        if self.proximal and self.l1:
            t = lr * self.l1
            w.sub_(w.clamp(-t, t))
