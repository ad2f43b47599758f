"""Pruning after training (group `prune`): which regularized weights (or, for `neurons`, whole
neurons and filters) become exact zeros, in how many rounds, and how each round is fine-tuned.
The fine-tuning itself is train.fit with a mask; this module only decides the masks."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn

from sweep.config import schema
from sweep.errors import UserError
from sweep.models import compact
from sweep.sparsity import channels

log = logging.getLogger(__name__)

METHODS = ("none", "magnitude", "threshold", "neurons")


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

    A path (`path=[0.5, 0.8, ..., 0.99]`, magnitude and neurons) replaces the rounds' rule:
    its levels, strictly increasing in (0, 1), are the rounds' targets, each fine-tuned from
    the previous level's model with the mask growing, and each level's model is a point of
    the trial's accuracy-sparsity curve (sweep/results/points.py). `stop_at` ends the walk at one of
    the levels (of the path, or of the rounds' rule): the run is then exactly the walk's
    first levels, so any point reproduces as a single run. `keep_models` keeps each level's
    weights (level_<r>.pt beside model.pt).
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
        path: list[float] | None = None,
        stop_at: float | None = None,
        keep_models: bool = False,
        inputs: float = 0.0,
        criterion: str = "norm",
        round_to: int = 1,
    ) -> None:
        if method not in METHODS:
            raise UserError(f"prune.method must be one of {', '.join(METHODS)}, got {method!r}")
        self.method = method
        if method == "none":
            return
        if inputs and type(self) is Pruner:  # NeuronPruner takes it
            raise UserError(
                f"prune.inputs removes inputs with prune=neurons; prune={method} removes single "
                f"weights: set prune.inputs=0 or prune=neurons (got prune.inputs={inputs})"
            )
        neuron_options = (  # NeuronPruner's own: (key, value, its default, what it does)
            ("criterion", criterion, "norm", "ranks channels for prune=neurons"),
            ("round_to", round_to, 1, "rounds the channels prune=neurons keeps"),
        )
        for key, value, default, does in neuron_options:
            if value != default and type(self) is Pruner:
                raise UserError(f"prune.{key} {does}; prune={method} removes single weights: "
                                f"set prune.{key}={default}")  # fmt: skip
        _check_options(sparsity, scope, rounds, epochs, lr_scale)
        self.sparsity, self.scope, self.tol = float(sparsity), scope, float(tol)
        self.epochs, self.lr_scale = epochs, lr_scale
        self.rounds = rounds if method in ("magnitude", "neurons") else 1
        self.planned = self.rounds  # the rounds' rule's R, whatever stop_at cuts off
        self.path = check_path(path, method) if path is not None else None
        self.keep_models = bool(keep_models)
        self.stop_at: float | None = None
        if stop_at is not None:
            self.stop_at = self._level(stop_at)
        self.rounds = len(self.targets())

    @property
    def active(self) -> bool:
        """Whether pruning runs at all (method is not none)."""
        return self.method != "none"

    @property
    def target(self) -> float:
        """The final sparsity (fraction of the counted weights removed, 0..1): the last level."""
        return self.targets()[-1]

    def columns(self) -> dict:
        """The options as results.csv columns (prune_<option>); none for method=none."""
        if not self.active:
            return {}
        cut = {"prune_sparsity": self.target, "prune_scope": self.scope,
               "prune_rounds": self.rounds} if self.method != "threshold" else {}  # fmt: skip
        if self.path is not None:
            cut["prune_path"] = ",".join(repr(x) for x in self.targets())
        return {**cut, "prune_epochs": self.epochs, "prune_lr_scale": self.lr_scale}

    def targets(self) -> list[float]:
        """The sparsity each round reaches: the path's levels, else 1 - (1 - sparsity)^(r/R)
        for r = 1..R (the last is `sparsity` exactly); up to `stop_at` where it is set."""
        levels = self._levels()
        if self.stop_at is None:
            return levels
        return levels[: levels.index(self.stop_at) + 1]

    def _levels(self) -> list[float]:
        if self.path is not None:
            return list(self.path)
        r = self.planned
        return [1.0 - (1.0 - self.sparsity) ** (i / r) for i in range(1, r)] + [self.sparsity]

    def _level(self, stop_at: float) -> float:
        """The level `stop_at` names (equal to 1e-9: a printed float reads back within it)."""
        if self.method == "threshold":
            raise UserError("prune.stop_at applies to prune=magnitude and neurons, not threshold")
        levels = self._levels()
        near = [x for x in levels if _number(stop_at) and abs(x - stop_at) <= 1e-9]
        if not near:
            shown = ", ".join(repr(x) for x in levels)
            raise UserError(f"prune.stop_at must be one of the levels walked ({shown}), "
                            f"got {stop_at!r}")  # fmt: skip
        return near[0]

    def reached(self, model: nn.Module, counted: list[nn.Parameter], target: float) -> bool:
        """Whether the model is already at `target` without a cut: as many of the regularized
        weights exactly zero as `keep` would make (the proximal L1 step's zeros)."""
        zeros = int((flat(counted) == 0).sum())
        return zeros >= round(target * sum(p.numel() for p in counted))

    def check(self, model: nn.Module, input_shape: tuple[int, ...] | None = None) -> None:
        """Raise UserError, before any training, if this pruning cannot act on `model` (which
        takes examples of `input_shape`)."""

    def held(self, model: nn.Module, counted: list[nn.Parameter]) -> list[nn.Parameter]:
        """The tensors `mask` covers, in its order: the regularized weights `counted`."""
        return counted

    def mask(self, model: nn.Module, counted: list[nn.Parameter], target: float) -> torch.Tensor:
        """The flat mask (True = kept) over `held(model, counted)` after pruning to `target`."""
        return self.keep(flat(counted), [p.numel() for p in counted], target)

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


def _number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_path(path: object, method: str) -> list[float]:
    """The levels of `prune.path` as floats; UserError (one line) for a path that cannot be
    walked: another method than magnitude or neurons, an empty list, a level outside (0, 1),
    levels not strictly increasing."""
    if method not in ("magnitude", "neurons"):
        raise UserError(f"prune.path applies to prune=magnitude and neurons, not {method}")
    levels = list(path) if isinstance(path, Sequence) and not isinstance(path, str) else None
    if not levels or not all(_number(x) for x in levels):
        raise UserError(f"prune.path must be a non-empty list of sparsities, got {path!r}")
    for x in levels:
        if not 0.0 < x < 1.0:
            raise UserError(f"prune.path levels must be in (0, 1), got {x!r} in {levels}")
    for a, b in zip(levels, levels[1:]):
        if b <= a:
            what = "repeats" if a == b else "is not increasing at"
            raise UserError(f"prune.path {what} {b!r} (after {a!r}): list each sparsity once, "
                            f"in increasing order, e.g. [0.5, 0.8, 0.9]")  # fmt: skip
    return [float(x) for x in levels]


def flat(params: list[torch.Tensor]) -> torch.Tensor:
    """The tensors back to back, as one flat copy (the order Pruner.keep's `sizes` follow)."""
    return torch.cat([p.detach().reshape(-1) for p in params])


@torch.no_grad()
def apply_(params: list[torch.Tensor], keep: torch.Tensor) -> None:
    """Zero, in place, every element of `params` whose entry of the flat mask is False."""
    for p, kept in zip(params, keep.split([p.numel() for p in params])):
        p.mul_(kept.view_as(p))


class NeuronPruner(Pruner):
    """`neurons`: structured pruning. Removes whole hidden neurons (a Linear layer's output
    rows) and conv filters, those with the smallest L2 norm of their incoming weights, until
    `sparsity` of them are gone: in each layer (scope=layer) or over all layers at once
    (scope=global), each norm divided by its layer's mean norm so that layers of different
    fan-in compare; every layer keeps at least one unit. The output layer's units (the
    classes) are never removed. Rounds, fine-tuning and lr as for `magnitude` (Pruner).

    A removed unit's incoming weights, its bias and its outgoing weights (the next layer's
    columns it feeds) are masked to exactly zero, so the model computes what
    `sweep.models.compact.compact` makes of it. Units already dead (incoming weights and bias all
    zero, or outgoing weights all zero: a group lasso's) are removed first, and regularized
    weights already zero stay zero. The mask covers every parameter, in the order
    `sweep.training.train.flatten_parameters(model, counted)` lays them out.

    `inputs` (a fraction in [0, 1), 0 by default): the first Linear layer's inputs removed
    too, those whose column of weights (over the neurons kept) has the smallest L2 norm, in
    the same rounds (round r reaches inputs * target_r / sparsity); an input already unread
    (its column all zero: a group lasso's `inputs` groups) is removed first. This is the
    pruning counterpart of `regularizer.groups=inputs`: pixel or feature selection by norm.

    Any other traceable network (residual adds, concatenations, BatchNorm, grouped and
    depthwise convs: a model `compact.trace` cannot follow) takes the channel path,
    `sweep.sparsity.channels`: whole coupled channel groups cut by `criterion` (`norm`, the
    group's L2 norm, or `bn_scale`, network slimming's |gamma|), the mask zeroing every
    coupled parameter; `check` finds which path a model takes, before training.
    """

    def __init__(
        self,
        method: str,
        inputs: float = 0.0,
        criterion: str = "norm",
        round_to: int = 1,
        **options: Any,
    ) -> None:
        super().__init__(method, **options)  # criterion, round_to: this class's own
        if isinstance(inputs, bool) or not isinstance(inputs, (int, float)):
            raise UserError(f"prune.inputs must be a number in [0, 1), got {inputs!r}")
        if not 0.0 <= inputs < 1.0:
            raise UserError(f"prune.inputs must be in [0, 1), got {inputs}")
        rules = schema.rules(schema.PruneConfig)
        for key, value in (("criterion", criterion), ("round_to", round_to)):
            schema.check_value(f"prune.{key}", rules[key], value)
        self.round_to = int(round_to)
        self.inputs = float(inputs) if self.active else 0.0
        self.criterion = criterion
        self.graph_shape: tuple[int, ...] | None = None  # set by check: the channel path

    def columns(self) -> dict:
        """The options as results.csv columns, prune_inputs and prune_criterion among them."""
        if not self.active:
            return {}
        return {**super().columns(), "prune_inputs": self.inputs,
                "prune_criterion": self.criterion}  # fmt: skip

    def check(self, model: nn.Module, input_shape: tuple[int, ...] | None = None) -> None:
        """Before training: UserError (one line) where `model` has no neurons this pruner can
        remove: a wiring neither compact nor the channel graph can follow, or no hidden
        layer; or where prune.inputs is set and the first layer is not a Linear one."""
        try:
            chain = compact.trace(model)
        except compact.CannotCompact:
            chain = None
        if chain is None or self.criterion != "norm" or self.round_to > 1:
            if self.inputs > 0:
                raise UserError(
                    "prune.inputs removes a plain MLP's inputs; this model's channels are "
                    "cut through its graph: set prune.inputs=0"
                )
            channels.check(model, input_shape, self.criterion)
            self.graph_shape = tuple(input_shape)  # type: ignore[arg-type]
            return
        if not chain.hidden:
            raise UserError(
                "prune=neurons needs a hidden layer, and this model has only its output layer "
                "(model=linear); use prune=magnitude, or regularizer=group_l1 "
                "regularizer.groups=inputs to remove inputs"
            )
        first = chain.layers[0].module
        if self.inputs > 0 and not isinstance(first, nn.Linear):
            raise UserError(
                f"prune.inputs removes the first Linear layer's inputs, and this model's first "
                f"layer is a {type(first).__name__}; set prune.inputs=0"
            )

    def input_level(self, target: float) -> float:
        """The fraction of inputs removed at the round that reaches `target`: prune.inputs
        scaled as the neurons' levels grow (the last level of the walk lands on it)."""
        final = self._levels()[-1]
        return self.inputs * target / final if final > 0 else self.inputs

    def inputs_cut(self, target: float, n_inputs: int) -> int:
        """How many of the first layer's `n_inputs` inputs the round reaching `target` removes
        (one is always kept)."""
        return min(round(self.input_level(target) * n_inputs), n_inputs - 1)

    def held(self, model: nn.Module, counted: list[nn.Parameter]) -> list[nn.Parameter]:
        """The parameters the mask covers, in flatten_parameters' order: the counted weights,
        then every other parameter (biases: a removed neuron's bias is held at zero too)."""
        ids = {id(p) for p in counted}
        return [*counted, *(p for p in model.parameters() if id(p) not in ids)]

    def reached(self, model: nn.Module, counted: list[nn.Parameter], target: float) -> bool:
        """Whether the units already dead (a group lasso's) are as many as a cut to `target`
        removes, in each layer (scope=layer) or over all (scope=global)."""
        if self.graph_shape is not None:
            return channels.reached(model, self.graph_shape, target, self.scope)
        dead = self.removed(model, 0.0)
        if self.inputs > 0:
            first = compact.trace(model).layers[0].module.weight
            unread = int((first == 0).all(0).sum())
            if unread < self.inputs_cut(target, first.shape[1]):
                return False
        if self.scope == "layer":
            return all(int(d.sum()) >= min(round(target * len(d)), len(d) - 1) for d in dead)
        return sum(int(d.sum()) for d in dead) >= round(target * sum(len(d) for d in dead))

    @torch.no_grad()
    def removed(self, model: nn.Module, target: float) -> list[torch.Tensor]:
        """Per hidden layer of `compact.trace(model)`, a bool mask of its units to remove."""
        chain = compact.trace(model)
        scores = []
        for k, layer in enumerate(chain.hidden):
            w = layer.module.weight.detach()
            norms = w.flatten(1).norm(dim=1)
            nxt = chain.layers[k + 1]
            outgoing = nxt.unit_weights(len(norms)).any(0)
            dead = ((norms == 0) & (layer.bias() == 0)) | ~outgoing
            mean = float(norms[~dead].mean()) if (~dead).any() else 1.0
            scores.append(torch.where(dead, -1.0, norms / (mean or 1.0)))
        cut = [s < 0 for s in scores]  # the dead are removed whatever the target
        if self.scope == "layer":
            for s, c in zip(scores, cut):
                k = min(round(target * len(s)), len(s) - 1)
                c[s.argsort(stable=True)[:k]] = True
            return cut
        every = torch.cat(scores)
        owner = torch.cat([torch.full((len(s),), i) for i, s in enumerate(scores)])
        start = [0, *torch.tensor([len(s) for s in scores]).cumsum(0).tolist()]
        left = [int((~c).sum()) for c in cut]
        k = round(target * len(every)) - sum(int(c.sum()) for c in cut)
        for j in every.argsort(stable=True).tolist():
            if k <= 0:
                break
            i = int(owner[j])
            if every[j] >= 0 and left[i] > 1:  # a layer with no unit left cuts the network
                cut[i][j - start[i]] = True
                left[i] -= 1
                k -= 1
        return cut

    @torch.no_grad()
    def mask(self, model: nn.Module, counted: list[nn.Parameter], target: float) -> torch.Tensor:
        """The keep-mask (1 = kept, 0 = removed; one entry per parameter of `held`, flat) that
        removes the neurons with the smallest norms until `target` of the groups are gone."""
        if self.graph_shape is not None:
            return channels.mask(model, self.held(model, counted), counted, self.graph_shape,
                                 target, self.criterion, self.scope, self.round_to)  # fmt: skip
        chain = compact.trace(model)
        cut = self.removed(model, target)
        params = self.held(model, counted)
        ids = {id(p) for p in counted}
        masks = {id(p): (p != 0) if id(p) in ids else torch.ones_like(p, dtype=torch.bool)
                 for p in params}  # fmt: skip
        for k, gone in enumerate(cut):
            layer, nxt = chain.layers[k], chain.layers[k + 1]
            masks[id(layer.module.weight)][gone] = False
            if layer.module.bias is not None:
                masks[id(layer.module.bias)][gone] = False
            out = masks[id(nxt.module.weight)]
            if isinstance(nxt.module, nn.Conv2d):
                out[:, gone] = False
            else:
                out.view(len(out), len(gone), nxt.spread)[:, gone] = False
        n = sum(len(c) for c in cut)
        read = ""
        if self.inputs > 0:  # the columns of the first layer's kept rows with the least norm
            w, kept = chain.layers[0].module.weight, masks[id(chain.layers[0].module.weight)]
            norms = torch.where(kept.any(0), (w * kept).norm(dim=0), -1.0)  # unread first
            kept[:, norms.argsort(stable=True)[: self.inputs_cut(target, w.shape[1])]] = False
            read = f"; inputs {int(kept.any(0).sum())}/{w.shape[1]}"
        log.info(
            f"prune=neurons: {sum(int(c.sum()) for c in cut)} of {n} hidden units removed "
            f"(target {target:.4f}); per layer "
            + ", ".join(f"{L.name} {int((~c).sum())}/{len(c)}" for L, c in zip(chain.hidden, cut))
            + read
        )
        return torch.cat([masks[id(p)].reshape(-1) for p in params])


def _check_options(
    sparsity: object, scope: str, rounds: object, epochs: object, lr_scale: object
) -> None:
    """Raise UserError naming the first prune option out of its range: the schema's rules
    (sweep/config/schema.py, PruneConfig), for a Pruner built in code as from a config."""
    ranges = schema.rules(schema.PruneConfig)
    values = {"scope": scope, "sparsity": sparsity, "rounds": rounds, "epochs": epochs,
              "lr_scale": lr_scale}  # fmt: skip
    for key, value in values.items():
        schema.check_value(f"prune.{key}", ranges[key], value)
