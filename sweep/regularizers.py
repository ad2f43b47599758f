"""L1 / L2 / elastic-net regularization, as a loss penalty or as a proximal step."""

from __future__ import annotations

import torch
import torch.nn as nn

from sweep.errors import UserError


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
    """

    def __init__(self, l1: float, l2: float, proximal: bool, params: str) -> None:
        l1, l2 = check_nonnegative("l1_lambda", l1), check_nonnegative("l2_lambda", l2)
        if params not in ("all", "weights"):
            raise UserError(f"regularizer.params must be 'all' or 'weights', got {params!r}")
        self.l1, self.l2, self.proximal, self.params = l1, l2, proximal, params

    def select(self, model: nn.Module) -> list[nn.Parameter]:
        """The parameters the regularizer acts on; every sparsity figure counts these."""
        return [p for p in model.parameters() if self.params == "all" or p.dim() > 1]

    def meter(self, params: list[torch.Tensor]) -> list[list[torch.Tensor]]:
        """Running per-tensor sums of the norms the penalty's value needs: [l1 norms, l2 norms]."""
        return [[p.new_zeros(()) for p in params] if lam else [] for lam in (self.l1, self.l2)]

    @torch.no_grad()
    def measure_(
        self,
        meter: list[list[torch.Tensor]],
        params: list[torch.Tensor],
        signs: list[torch.Tensor] | None = None,
    ) -> None:
        """Add this step's |w|_1 and |w|_2^2 per tensor to the meter, as dot products:
        |w|_1 = w . sign(w) reuses the signs the L1 gradient needs, and on the CPU a dot
        costs a third of a norm kernel; forming the penalty's value every step would take
        eight small kernels more."""
        l1_sums, l2_sums = meter
        if l1_sums:
            signs = signs if signs is not None else torch._foreach_sign(params)
            torch._foreach_add_(l1_sums, [p.view(-1) @ s.view(-1) for p, s in zip(params, signs)])
        if l2_sums:
            torch._foreach_add_(l2_sums, [p.view(-1) @ p.view(-1) for p in params])

    def value(self, meter: list[list[torch.Tensor]]) -> float:
        """`l1 * sum|w| + l2 * sum w^2`, summed over the steps the meter has seen."""
        l1_sums, l2_sums = meter
        return self.l1 * float(sum(l1_sums, 0.0)) + self.l2 * float(sum(l2_sums, 0.0))

    def penalty(self, params: list[torch.Tensor]) -> float:
        """The penalty's value at these weights."""
        meter = self.meter(params)
        self.measure_(meter, params)
        return self.value(meter)

    @torch.no_grad()
    def add_gradient_(
        self, params: list[torch.Tensor], meter: list[list[torch.Tensor]] | None = None
    ) -> None:
        """Add the penalty's gradient to p.grad, as autograd would for loss + penalty; with a
        meter, also this step's norms (the seed prints loss + penalty at each step's weights).
        Call it between backward and the optimizer step, while p holds the step's weights.

        Done by hand rather than through autograd: the same values (sign(0) = 0 is the
        subgradient torch's abs uses) in a few fused kernels instead of a graph per step.
        """
        signs = torch._foreach_sign(params) if self.l1 else None
        if meter is not None:
            self.measure_(meter, params, signs)
        grads = [p.grad for p in params]
        if self.l1 and not self.proximal:
            torch._foreach_add_(grads, signs, alpha=self.l1)
        if self.l2:
            torch._foreach_add_(grads, params, alpha=2.0 * self.l2)

    @torch.no_grad()
    def prox_(self, params: list[torch.Tensor], lr: float) -> None:
        """Soft-threshold in place: w - clamp(w, -t, t) == sign(w) * max(|w| - t, 0)."""
        if not (self.proximal and self.l1):
            return
        t = lr * self.l1
        clipped = torch._foreach_clamp_max(params, t)
        torch._foreach_clamp_min_(clipped, -t)
        torch._foreach_sub_(params, clipped)
