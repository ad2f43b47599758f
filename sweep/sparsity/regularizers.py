"""L1 / L2 / elastic-net regularization, as a loss penalty or as a proximal step; the group
lasso and the sparse group lasso over whole neurons, filters and inputs."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn

from sweep.config import schema
from sweep.errors import UserError
from sweep.models.cost import BATCHNORMS

# params=weights: the `weight` of these layer types (and their subclasses) is regularized and
# counted. Biases, normalization scales and embeddings are not; regularizer.params=[...] names
# other types, regularizer.params=all takes every parameter.
WEIGHT_LAYERS = ("Linear", "Conv1d", "Conv2d", "Conv3d")
# The layers whose weight rows are neurons (Linear) or filters (Conv): the structured groups.
GROUP_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
GROUPINGS = schema.GROUPINGS


def conv(m: nn.Module) -> bool:
    """Whether `m` is a convolution (its rows are filters, each an output channel)."""
    return isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d))


def check_nonnegative(key: str, value: object) -> float:
    """`value` as a float, or a UserError naming `key` if it is not a number >= 0 (the
    schema's rule, for a regularizer built in code as from a config)."""
    schema.check_value(key, schema.NONNEGATIVE, value)
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
    as `g`), which `sweep.training.train.flatten_parameters` makes: each step is then a handful of
    kernels over all weights at once instead of a handful per parameter tensor. `bind(model)`,
    called once before training, records the shapes of the tensors behind `w`, so that a
    subclass can act on views of them (a group lasso on a layer's rows).
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

    def bind(self, model: nn.Module) -> list[nn.Parameter]:
        """Select this model's regularized parameters (`select`) and record their shapes and
        offsets in the flat vector `w` the other methods take; returns the selection, in the
        order `w` holds it. Raises UserError where the selection is impossible."""
        chosen = self.select(model)
        self.shapes = [p.shape for p in chosen]
        self.offsets = [0]
        for p in chosen[:-1]:
            self.offsets.append(self.offsets[-1] + p.numel())
        return chosen

    def view(self, w: torch.Tensor, i: int) -> torch.Tensor:
        """The i-th bound tensor as a view of the flat `w` (in its own shape)."""
        n = math.prod(self.shapes[i])
        return w[self.offsets[i] : self.offsets[i] + n].view(self.shapes[i])

    def for_finetuning(self) -> Regularizer:
        """The regularizer the masked fine-tuning after pruning uses: every sparsity term off
        (the mask holds the zeros), the L2 term and the parameter selection kept. A subclass
        whose fine-tuning needs more overrides this."""
        params = self.params if self.params in ("all", "weights") else list(self.layers)
        return Regularizer(0.0, self.l2, self.proximal, params)

    def columns(self) -> dict:
        """Extra results.csv columns of this regularizer's strengths (l1/l2 are always there)."""
        return {}

    def meter(self, w: torch.Tensor) -> tuple[torch.Tensor, ...]:
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


@dataclass(frozen=True)
class Groups:
    """One layer's groups: the slices of bound tensor `weight` (an index into
    Regularizer.shapes) along `dim` (0: its rows, each a neuron's or filter's incoming
    weights; 1: its columns, each an input's outgoing weights), with the entries of bound
    tensor `bias` (None where the bias is not regularized) in the row groups; `size` elements
    per group, biases included."""

    weight: int
    dim: int
    bias: int | None
    size: int


class GroupLasso(Regularizer):
    """The group lasso (Yuan and Lin 2006) and, with l1 > 0, the sparse group lasso (Simon et
    al. 2013; Scardapane et al. 2017):

        l1 * sum|w| + group * sum_g sqrt(|g|) * ||w_g||_2 + l2 * sum w^2

    groups: `neurons`: each Linear layer's output rows and each Conv layer's filters (with
    the neuron's bias where biases are regularized), except the output layer, whose rows are
    the classes (the last Linear/Conv module in model.modules() order); `inputs`: the first
    layer's input columns (Linear) or input channels (Conv), i.e. feature and pixel selection;
    `both`: the two families; `channels`: each hidden Conv layer's filters only (structured
    sparsity learning's filter groups, Wen et al. NIPS 2016), the conv net's channels.
    size_weighted=False drops the sqrt(|g|) weights.

    proximal=True: after each optimizer step, the elementwise soft-threshold at lr * l1 (as
    Regularizer does), then the block soft-threshold of every group,
    w_g <- w_g * max(0, 1 - lr * group * sqrt(|g|) / ||w_g||_2), which sets whole groups
    exactly to zero. For non-overlapping groups this composition is the exact proximal
    operator of the sparse group lasso (Friedman, Hastie and Tibshirani 2010, "A note on the
    group lasso and a sparse group lasso"; Simon et al. 2013, sec. 3). With groups=both a
    first-layer weight lies in a row and in a column group; the neuron step then the input
    step is the usual approximation of that overlapping prox. Under Adam the thresholds are
    decoupled, as for l1_prox. proximal=False: the penalty's (sub)gradient,
    group * sqrt(|g|) * w_g / ||w_g||_2 (0 for a zero group) and l1 * sign(w).

    Raises UserError for group < 0, an unknown `groups`, and (at bind) a model without the
    groups asked for: no hidden Linear/Conv layer for neurons, no regularized first
    Linear/Conv layer for inputs.
    """

    def __init__(
        self,
        l1: float,
        l2: float,
        proximal: bool,
        params: str | Sequence[str],
        group: float,
        groups: str = "neurons",
        size_weighted: bool = True,
    ) -> None:
        super().__init__(l1, l2, proximal, params)
        self.group = check_nonnegative("group_lambda", group)
        groups_rule = schema.rules(schema.GroupRegularizerConfig)["groups"]
        schema.check_value("regularizer.groups", groups_rule, groups)
        self.groups, self.size_weighted = groups, bool(size_weighted)
        self.families: list[Groups] = []

    def bind(self, model: nn.Module) -> list[nn.Parameter]:
        """As Regularizer.bind, and find the groups in this model's layers."""
        chosen = super().bind(model)
        index = {id(p): i for i, p in enumerate(chosen)}
        layers = [m for m in model.modules() if isinstance(m, GROUP_LAYERS)]
        self.families = []
        if self.groups in ("neurons", "both", "channels"):
            for m in layers[:-1]:
                if id(m.weight) not in index or (self.groups == "channels" and not conv(m)):
                    continue
                bias = index.get(id(m.bias)) if m.bias is not None else None
                size = m.weight[0].numel() + (bias is not None)
                self.families.append(Groups(index[id(m.weight)], 0, bias, size))
            if not self.families and self.groups == "channels":
                raise UserError(
                    "regularizer.groups=channels finds no hidden Conv layer with a regularized "
                    "weight in this model; use regularizer.groups=neurons"
                )
            if not self.families:
                raise UserError(
                    "regularizer.groups=neurons finds no hidden Linear/Conv layer with a "
                    "regularized weight in this model (the output layer's rows are the classes); "
                    "use regularizer.groups=inputs, or a model with a hidden layer"
                )
        if self.groups in ("inputs", "both"):
            first = next(
                (m for m in model.modules() if next(m.parameters(recurse=False), None) is not None),
                None,
            )
            if not isinstance(first, GROUP_LAYERS) or id(first.weight) not in index:
                kind = type(first).__name__ if first is not None else "no layer"
                raise UserError(
                    f"regularizer.groups=inputs needs a first layer that is a Linear or Conv "
                    f"with a regularized weight; this model's first layer with parameters is "
                    f"{kind}; use regularizer.groups=neurons"
                )
            size = first.weight[:, 0].numel()
            self.families.append(Groups(index[id(first.weight)], 1, None, size))
        return chosen

    def columns(self) -> dict:
        """The options as results.csv columns: group_lambda and groups."""
        return {"group_lambda": self.group, "groups": self.groups}

    def _weight(self, grp: Groups) -> float:
        return math.sqrt(grp.size) if self.size_weighted else 1.0

    def _norms(
        self, w: torch.Tensor, grp: Groups
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, list[int]]:
        """(weight view, bias view or None, each group's L2 norm, the shape that broadcasts
        a per-group value over the weight)."""
        weight = self.view(w, grp.weight)
        dims = [d for d in range(weight.dim()) if d != grp.dim]
        norms = torch.linalg.vector_norm(weight, dim=dims)
        bias = self.view(w, grp.bias) if grp.bias is not None else None
        if bias is not None:
            norms = torch.hypot(norms, bias)
        return weight, bias, norms, [-1 if d == grp.dim else 1 for d in range(weight.dim())]

    def meter(self, w: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Running sums of (|w|_1, |w|_2^2, sum_g sqrt(|g|) ||w_g||_2)."""
        return w.new_zeros(()), w.new_zeros(()), w.new_zeros(())

    def value(self, meter: tuple[torch.Tensor, ...]) -> float:
        """The epoch's summed penalty from `meter`: the elementwise part plus group_lambda
        times the summed weighted group norms."""
        return super().value(meter) + self.group * float(meter[2])

    @torch.no_grad()
    def penalty(self, w: torch.Tensor) -> float:
        """The penalty of weights `w`: the elementwise part plus group_lambda * sum_g
        sqrt(|g|) ||w_g||_2 (Yuan and Lin 2006; weights 1 with size_weighted=false)."""
        total = sum(self._weight(g) * float(self._norms(w, g)[2].sum()) for g in self.families)
        return super().penalty(w) + self.group * total

    @torch.no_grad()
    def add_gradient_(
        self, w: torch.Tensor, g: torch.Tensor, meter: tuple[torch.Tensor, ...] | None = None
    ) -> None:
        """Add the penalty's (sub)gradient to `g` (the penalty form; the proximal form steps in
        `prox_` instead), and its value to `meter`."""
        super().add_gradient_(w, g, meter)
        if not self.group or (meter is None and self.proximal):
            return
        for grp in self.families:
            weight, bias, norms, shape = self._norms(w, grp)
            if meter is not None:
                meter[2].add_(norms.sum(), alpha=self._weight(grp))
            if not self.proximal:  # d||w_g||/dw_g = w_g / ||w_g||; 0 at a zero group
                coef = torch.where(norms > 0, self.group * self._weight(grp) / norms, 0.0)
                self.view(g, grp.weight).add_(weight * coef.view(shape))
                if bias is not None:
                    self.view(g, grp.bias).add_(bias * coef)

    @torch.no_grad()
    def prox_(self, w: torch.Tensor, lr: float) -> None:
        """The elementwise soft-threshold, then the block soft-threshold of each group."""
        super().prox_(w, lr)
        if not (self.proximal and self.group):
            return
        for grp in self.families:
            weight, bias, norms, shape = self._norms(w, grp)
            # a zero group: 1 - t / 0 = -inf, clamped to 0, and it stays zero
            scale = (1.0 - lr * self.group * self._weight(grp) / norms).clamp_(min=0.0)
            weight.mul_(scale.view(shape))
            if bias is not None:
                bias.mul_(scale)


class BatchNormL1(Regularizer):
    """Network slimming (Liu et al., "Learning Efficient Convolutional Networks through
    Network Slimming", ICCV 2017): `bn * sum |gamma|` over the scale of every BatchNorm,
    beside the elementwise terms of Regularizer on the parameters `params` selects (which
    stay the counted ones: the BatchNorm scales are not counted unless params=all).

    proximal=True: after each optimizer step, gamma <- sign(gamma) * max(|gamma| - lr * bn, 0),
    so a channel's scale lands exactly on zero (the paper uses the subgradient; the proximal
    step is what makes the zeros exact); under Adam the threshold is decoupled, as for
    l1_prox. proximal=False: the subgradient bn * sign(gamma), as the paper.
    The fine-tuning after pruning drops the term (`for_finetuning`), as for every penalty.

    Raises UserError for bn < 0 and, at bind, a model without a BatchNorm with a scale.
    """

    def __init__(
        self, l1: float, l2: float, proximal: bool, params: str | Sequence[str], bn: float
    ) -> None:
        super().__init__(l1, l2, proximal, params)
        self.bn = check_nonnegative("bn_lambda", bn)
        self.scales: list[nn.Parameter] = []

    def bind(self, model: nn.Module) -> list[nn.Parameter]:
        """As Regularizer.bind, and find every BatchNorm's scale (gamma)."""
        chosen = super().bind(model)
        self.scales = [m.weight for m in model.modules()
                       if isinstance(m, BATCHNORMS) and m.weight is not None]  # fmt: skip
        if not self.scales:
            raise UserError("regularizer=bn_l1 puts its L1 term on BatchNorm scales, and this "
                            "model has no BatchNorm with a scale; use model=resnet or "
                            "regularizer=group_l1")  # fmt: skip
        return chosen

    def columns(self) -> dict:
        """The strength as the results.csv column bn_lambda."""
        return {"bn_lambda": self.bn}

    def meter(self, w: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Running sums of (|w|_1, |w|_2^2, sum |gamma|)."""
        return w.new_zeros(()), w.new_zeros(()), w.new_zeros(())

    def value(self, meter: tuple[torch.Tensor, ...]) -> float:
        """The summed penalty from `meter`: the elementwise part plus bn * sum |gamma|."""
        return super().value(meter) + self.bn * float(meter[2])

    @torch.no_grad()
    def penalty(self, w: torch.Tensor) -> float:
        """The penalty at these weights (the scales read from the bound BatchNorms)."""
        return super().penalty(w) + self.bn * sum(float(g.abs().sum()) for g in self.scales)

    @torch.no_grad()
    def add_gradient_(
        self, w: torch.Tensor, g: torch.Tensor, meter: tuple[torch.Tensor, ...] | None = None
    ) -> None:
        """The elementwise terms, then bn * sign(gamma) into each scale's gradient (the
        penalty form) and sum |gamma| into `meter`."""
        super().add_gradient_(w, g, meter)
        if not self.bn:
            return
        for gamma in self.scales:
            if meter is not None:
                meter[2].add_(gamma.abs().sum())
            if not self.proximal:
                gamma.grad.add_(torch.sign(gamma), alpha=self.bn)

    @torch.no_grad()
    def prox_(self, w: torch.Tensor, lr: float) -> None:
        """The elementwise soft-threshold, then each BatchNorm scale's at lr * bn."""
        super().prox_(w, lr)
        if self.proximal and self.bn:
            t = lr * self.bn
            for gamma in self.scales:
                gamma.sub_(gamma.clamp(-t, t))
