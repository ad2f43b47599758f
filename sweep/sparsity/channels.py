"""`prune=neurons` on any traceable network: which coupled channel groups to cut, and the
mask that zeroes them (`sweep.models.graph` follows the couplings and compacts).

The criterion (`prune.criterion`):
- `norm`: the channel's group L2 norm, Torch-Pruning's GroupMagnitudeImportance(p=2): over
  every coupled weight of the channel (its filters, BatchNorm scales, the next layers'
  input columns), averaged over the group's layers and divided by the group's mean, so
  groups of different size and fan-in compare (the filter norm `prune=neurons` has always
  used, extended to coupled channels);
- `bn_scale`: |gamma| of the channel's BatchNorms (network slimming, Liu et al. ICCV 2017;
  Torch-Pruning's BNScaleImportance), divided by the group's mean; a group with no BatchNorm
  falls back to `norm`.
Channels already exactly zero (`Graph.dead`) are cut first, whatever the target.

`prune.round_to` (1: off) rounds each group's kept channels to the nearest multiple of it
(`_rounded`): oneDNN's CPU convolutions work on blocks of 16 channels on AVX-512 (8 on
AVX2), so a conv's time steps with ceil(channels / 16), not with its FLOPs (docs/deploy.md:
17 channels cost as much as 32, three times 16); Torch-Pruning's pruners take the same
`round_to` (they round up; here the nearest, so the cut stays near its target).
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn as nn

from sweep.errors import UserError
from sweep.models import graph as graphs
from sweep.models.graph import Graph, Plan

log = logging.getLogger(__name__)

CRITERIA = ("norm", "bn_scale")


@torch.no_grad()
def scores(graph: Graph, group: object, criterion: str) -> torch.Tensor:
    """One score per unit of a cut of the group (a channel of its root, or with a grouped
    conv position j of every channel group: `Graph.units`), float on the CPU: the criterion
    divided by its mean over the group, -1 for a unit already dead."""
    import torch_pruning as tp

    imp = tp.importance.BNScaleImportance() if criterion == "bn_scale" else None
    s = imp(group) if imp is not None else None
    if s is None:  # norm, or a group without a BatchNorm
        s = tp.importance.GroupMagnitudeImportance(p=2)(group)
    s = torch.nan_to_num(s.detach().float().cpu(), nan=0.0)  # an all-zero group: 0 / 0
    g, n = graph.units(group)
    s = s.view(g, n).mean(0)  # a unit of the cut: position j of every channel group
    return torch.where(graph.dead_units(group), -1.0, s)


def plan(
    model: nn.Module,
    input_shape: tuple[int, ...],
    target: float,
    criterion: str,
    scope: str,
    round_to: int = 1,
) -> tuple[Plan, dict[str, int]]:
    """The channels to cut for `target` (the fraction of all groups' channels): the lowest
    scores in each group (scope=layer) or over all groups at once (scope=global), counted in
    units of a cut (`Graph.units`: channels, but for a grouped conv's); every group keeps at
    least one, and with `round_to` > 1 a multiple of it (`_rounded`). Returns (plan, each
    group's channel count)."""
    graph = graphs.graph_of(model, input_shape)
    found = [(root, scores(graph, group, criterion)) for root, group in graph.groups()]
    sizes = {root: len(s) for root, s in found}
    cut = {root: [i for i in range(len(s)) if s[i] < 0] for root, s in found}
    for root in cut:  # a group with no channel left would cut the network in two
        cut[root] = cut[root][: sizes[root] - 1]
    if scope == "layer":
        for root, s in found:
            k = min(round(target * len(s)), len(s) - 1)
            cut[root] = sorted(set(cut[root]) | set(s.argsort(stable=True)[:k].tolist()))
        return _channels(graph, _rounded(found, cut, round_to))
    every = [(float(s[i]), root, i) for root, s in found for i in range(len(s))]
    every.sort(key=lambda t: t[0])
    k = round(target * len(every)) - sum(len(c) for c in cut.values())
    left = {root: sizes[root] - len(cut[root]) for root in sizes}
    for score, root, i in every:
        if k <= 0:
            break
        if score >= 0 and left[root] > 1:
            cut[root].append(i)
            left[root] -= 1
            k -= 1
    return _channels(graph, _rounded(found, cut, round_to))


def _rounded(
    found: list[tuple[str, torch.Tensor]], cut: dict[str, list[int]], round_to: int
) -> dict[str, list[int]]:
    """`cut` with each group's kept units rounded to the nearest multiple of `round_to`
    (halves up; at least `round_to`, at most the group): the kept ones are the group's
    highest scores, so rounding up keeps the best of those cut, down cuts the worst of those
    kept. A group of fewer than `round_to` units, or round_to = 1, is left as it is."""
    if round_to <= 1:
        return cut
    out = {}
    for root, s in found:
        n, kept = len(s), len(s) - len(cut[root])
        want = min(n, max(round_to, round_to * math.floor(kept / round_to + 0.5)))
        worst = s.argsort(stable=True)[: n - want].tolist()  # dead ones (-1) first
        out[root] = cut[root] if n < round_to else sorted(worst)
    return out


def _channels(graph: Graph, cut: dict[str, list[int]]) -> tuple[Plan, dict[str, int]]:
    """The plan of channels from a cut of units (`Graph.channels_of`), and each group's
    channel count."""
    groups = dict(graph.groups())
    sizes = {root: math.prod(graph.units(groups[root])) for root in cut}
    return {root: graph.channels_of(groups[root], units) for root, units in cut.items()}, sizes


@torch.no_grad()
def mask(
    model: nn.Module,
    held: list[nn.Parameter],
    counted: list[nn.Parameter],
    input_shape: tuple[int, ...],
    target: float,
    criterion: str,
    scope: str,
    round_to: int = 1,
) -> torch.Tensor:
    """The flat keep-mask (True = kept) over `held`, in its order, that zeroes every entry
    the cut of `plan(...)` removes (filters, biases, BatchNorm scales and shifts, the next
    layers' input columns); a counted weight already zero stays zero."""
    cut, sizes = plan(model, input_shape, target, criterion, scope, round_to)
    masks = graphs.index_masks(model, input_shape, cut)
    names = {id(p): n for n, p in model.named_parameters()}
    ids = {id(p) for p in counted}
    flat = []
    for p in held:
        m = masks[names[id(p)]]
        flat.append((m & (p != 0) if id(p) in ids else m).reshape(-1))
    n = sum(sizes.values())
    log.info(
        f"prune=neurons ({criterion}): {sum(len(c) for c in cut.values())} of {n} channels "
        f"removed (target {target:.4f}); per group "
        + ", ".join(f"{root} {sizes[root] - len(cut[root])}/{sizes[root]}" for root in sizes)
    )
    return torch.cat(flat)


def reached(model: nn.Module, input_shape: tuple[int, ...], target: float, scope: str) -> bool:
    """Whether the channels already dead are as many as a cut to `target` removes."""
    graph = graphs.graph_of(model, input_shape)
    dead = [graph.dead(group) for _, group in graph.groups()]
    if scope == "layer":
        return all(int(d.sum()) >= min(round(target * len(d)), len(d) - 1) for d in dead)
    return sum(int(d.sum()) for d in dead) >= round(target * sum(len(d) for d in dead))


def check(model: nn.Module, input_shape: tuple[int, ...] | None, criterion: str) -> None:
    """Before training: UserError (one line) where prune=neurons cannot cut this model's
    channels (`sweep.models.graph.check` names the construct) or the criterion needs what
    the model lacks (bn_scale: a BatchNorm)."""
    if input_shape is None:
        raise UserError("prune=neurons on a network with its own forward needs the data's "
                        "example shape")  # fmt: skip
    try:
        graphs.check(model, tuple(input_shape))
    except graphs.CannotCut as e:
        raise UserError(f"prune=neurons cannot cut this model's channels: {e}") from None
    has_bn = any(isinstance(m, graphs.BATCHNORMS) for m in model.modules())
    if criterion == "bn_scale" and not has_bn:
        raise UserError("prune.criterion=bn_scale ranks channels by their BatchNorm scales, and "
                        "this model has no BatchNorm; use prune.criterion=norm")  # fmt: skip
