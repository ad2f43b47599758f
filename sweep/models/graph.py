"""Channels out of any traceable network: the dependency graph of Torch-Pruning (Fang et al.,
"DepGraph: Towards Any Structural Pruning", CVPR 2023; `torch-pruning` on PyPI) says which
channels are coupled (a residual add joins its two inputs' channels, a concatenation maps
its inputs' channels to ranges of its output's, a BatchNorm's channels are its conv's, a
depthwise conv's input and output channels are one, a Linear after a flatten or a global
pool reads each channel's positions); this module cuts whole coupled channel groups out of a
copy of the model, and folds each BatchNorm into the convolution before it.

Where `sweep.models.compact` follows a plain nn.Sequential (an MLP, lenet5) it is used as
before; this path takes every other model (`compact.measures` falls back to it).

A *plan* is {root layer name: channel indices to cut}, a root being the first Conv/Linear of
each coupled group (Torch-Pruning's `get_all_groups`); the output layer (the Conv/Linear
whose output is the logits) is never a root, so the classes are never cut. The graph is
traced through autograd on one example (Torch-Pruning's tracer), so Python control flow in
`forward` is fine as long as the example takes the path every input takes.
"""

from __future__ import annotations

import copy
import logging
import math
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn as nn

from sweep.errors import UserError
from sweep.models.cost import BATCHNORMS, CONVS

log = logging.getLogger(__name__)

ROOTS = (*CONVS, nn.Linear)
Plan = dict[str, list[int]]


class CannotCut(UserError):
    """A model whose channels this module cannot cut; the message names the construct."""


def example(model: nn.Module, input_shape: tuple[int, ...]) -> torch.Tensor:
    """One random example batch (2, *input_shape) on the model's device and dtype (2: a
    BatchNorm in training mode needs more than one value per channel)."""
    p = next(model.parameters())
    gen = torch.Generator().manual_seed(0)
    return torch.rand(2, *input_shape, generator=gen).to(device=p.device, dtype=p.dtype)


class Graph:
    """The dependency graph of `model` traced on `example(model, input_shape)`.

    Raises CannotCut (one line) where the model does not run on the example, where a layer
    with parameters runs off the autograd path from the input to the logits (a detach(),
    torch.no_grad() or a non-differentiable op in forward), or where the logits are not
    one tensor of (n, classes)."""

    def __init__(self, model: nn.Module, input_shape: tuple[int, ...]) -> None:
        import torch_pruning as tp

        self.model, self.input_shape = model, tuple(input_shape)
        x = example(model, input_shape)
        ran: list[str] = []
        names = {m: n for n, m in model.named_modules()}
        hooks = [m.register_forward_hook(lambda m, i, o: ran.append(names[m]))
                 for m in model.modules() if isinstance(m, ROOTS)]  # fmt: skip
        was_training = model.training
        try:
            with torch.enable_grad():
                self.dg = tp.DependencyGraph().build_dependency(model, x, verbose=False)
        except Exception as e:  # the user's forward: whatever it raises, one line
            raise CannotCut(f"the model does not run on an example of shape "
                            f"{tuple(input_shape)}: {type(e).__name__}: {e}") from None  # fmt: skip
        finally:
            for h in hooks:
                h.remove()
            model.train(was_training)
        if not ran:
            raise CannotCut("the model has no Conv or Linear layer to cut channels of")
        off = [n for n in dict.fromkeys(ran) if model.get_submodule(n) not in self.dg.module2node]
        if off:
            raise CannotCut(
                f"layer {off[0]!r} runs off the autograd path from the input to the logits "
                "(a detach(), torch.no_grad() or a non-differentiable op in forward), so "
                "its channels' couplings cannot be traced"
            )
        self.output = ran[-1]  # the layer whose output is the logits: never cut
        self.names = names

    def groups(self) -> Iterator[tuple[str, Any]]:
        """(root layer name, Torch-Pruning group of all its channels) for every coupled group
        the output layer is not in."""
        out = self.model.get_submodule(self.output)
        order = {m: i for i, m in enumerate(self.names)}
        found = [
            (self.names[g[0].dep.target.module], g)
            for g in self.dg.get_all_groups(ignored_layers=[out], root_module_types=ROOTS)
        ]

        def first(group: Any) -> int:  # where the group's channels are first made
            return min(order.get(item.dep.target.module, len(order)) for item in group)

        yield from sorted(found, key=lambda rg: first(rg[1]))  # the model's own layer order

    def channel_groups(self, group: Any) -> int:
        """g where a grouped conv (groups=g, not depthwise) is in the group: its channels
        must then go g at a time, position j of every conv group together (Torch-Pruning's
        MetaPruner rule), so the unit of a cut is channels {j + k * C / g}; else 1."""
        found = [m.groups for m in (item.dep.target.module for item in group)
                 if isinstance(m, ROOTS[:3]) and 1 < m.groups != m.out_channels]  # fmt: skip
        return max(found, default=1)

    def units(self, group: Any) -> tuple[int, int]:
        """(g, C / g): the channel groups (`channel_groups`) and the units of a cut."""
        g = self.channel_groups(group)
        return g, self.dg.get_out_channels(group[0].dep.target.module) // g

    def channels_of(self, group: Any, units: list[int]) -> list[int]:
        """The root's channels of the cut's `units` (positions j in each channel group)."""
        g, n = self.units(group)
        return sorted(j + k * n for j in units for k in range(g))

    def dead_units(self, group: Any) -> torch.Tensor:
        """`dead`, per unit of a cut: every one of its channels dead."""
        g, n = self.units(group)
        return self.dead(group).view(g, n).all(0)

    def group_of(self, root: str, idxs: list[int]) -> Any:
        """The Torch-Pruning group that cuts channels `idxs` of layer `root`'s output."""
        module = self.model.get_submodule(root)
        fn = self.dg.get_pruner_of_module(module).prune_out_channels
        return self.dg.get_pruning_group(module, fn, idxs)

    @torch.no_grad()
    def dead(self, group: Any) -> torch.Tensor:
        """Which of the group's channels (bool, over its root's output channels) are exactly
        zero wherever they are made: every coupled Conv/Linear row, bias, and BatchNorm
        scale and shift is zero there, so cutting them changes no output."""
        n = self.dg.get_out_channels(group[0].dep.target.module)
        alive = torch.zeros(n, dtype=torch.bool)
        for item in group:
            m = item.dep.target.module
            if not self.dg.is_out_channel_pruning_fn(item.dep.handler):
                continue
            if not isinstance(m, (*ROOTS, *BATCHNORMS)):
                continue
            idx, root = torch.tensor(item.idxs), torch.tensor(item.root_idxs)
            for p in (m.weight, m.bias):
                if p is not None:
                    rows = p.detach().index_select(0, idx.to(p.device)).reshape(len(idx), -1)
                    alive[root[(rows != 0).any(1).cpu()]] = True
        return ~alive


# The graphs of the models a run measures: tracing one is what a row's figures cost most
# (a ResNet-8's trace, seconds on a loaded core), and a model's couplings do not change as
# its weights train. Keyed by the model's identity, checked against its modules, parameter
# shapes and the example's shape; a few entries, since each holds its model.
_GRAPHS: OrderedDict[int, tuple[tuple, Graph, bool]] = OrderedDict()
_KEEP = 4


def _signature(model: nn.Module, input_shape: tuple[int, ...]) -> tuple:
    """What a traced graph of `model` depends on: its modules (names and identities), its
    parameters' identities and shapes, its dtype and device, and the example's shape."""
    modules = tuple((n, id(m)) for n, m in model.named_modules())
    params = tuple((id(p), tuple(p.shape), p.dtype, p.device) for p in model.parameters())
    return tuple(input_shape), modules, params


def graph_of(model: nn.Module, input_shape: tuple[int, ...]) -> Graph:
    """`Graph(model, input_shape)`, traced once per model: the same Graph again while the
    model's modules and parameter shapes are those it was traced with (its weights may
    change: every figure of a Graph reads them when asked). Raises what Graph raises."""
    key, sig = id(model), _signature(model, input_shape)
    found = _GRAPHS.get(key)
    if found is not None and found[0] == sig and found[1].model is model:
        _GRAPHS.move_to_end(key)
        return found[1]
    graph = Graph(model, input_shape)
    _remember(model, sig, graph, False)
    return graph


def _remember(model: nn.Module, sig: tuple, graph: Graph, checked: bool) -> None:
    _GRAPHS[id(model)] = (sig, graph, checked)
    _GRAPHS.move_to_end(id(model))
    while len(_GRAPHS) > _KEEP:
        _GRAPHS.popitem(last=False)


def cut_(graph: Graph, plan: Plan) -> None:
    """Cut, in place, the plan's channels out of `graph.model` (and every coupled layer)."""
    for root, idxs in plan.items():
        if idxs:
            graph.group_of(root, sorted(idxs)).prune()


@torch.no_grad()
def fold_batchnorms_(graph: Graph) -> int:
    """Fold, in place, each BatchNorm whose only input is a conv read by nothing else into
    that conv (its weight and bias rescaled with the running statistics: the eval-mode
    BatchNorm, Ioffe and Szegedy 2015, as an affine map); the BatchNorm becomes Identity.
    Returns how many were folded. The model must be in eval mode to compute the same."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    folded = 0
    for bn_name, bn in list(graph.model.named_modules()):
        node = graph.dg.module2node.get(bn)
        if not isinstance(bn, BATCHNORMS) or node is None or len(node.inputs) != 1:
            continue
        conv = node.inputs[0].module
        convs = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
        if not isinstance(conv, convs) or len(node.inputs[0].outputs) != 1:
            continue
        _replace(graph.model, graph.names[conv], fuse_conv_bn_eval(conv.eval(), bn.eval()))
        _replace(graph.model, bn_name, nn.Identity())
        folded += 1
    return folded


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attr, new)


def compact_model(
    model: nn.Module, input_shape: tuple[int, ...], plan: Plan, fold: bool = True
) -> nn.Module:
    """A copy of `model` (eval mode) with the plan's channels cut and (fold) its BatchNorms
    folded: a real nn.Module of fewer channels. Equal to the masked model's logits where the
    plan's channels are exactly zero (`Graph.dead`). fold=False keeps the BatchNorms: the
    weights are then a subset of the model's own values (what an archive's codebook keeps
    exactly); ONNX Runtime folds them itself when it loads the file."""
    small = copy.deepcopy(model).eval()
    graph = Graph(small, input_shape)  # a trace of its own: deep-copying one measured 2x slower
    cut_(graph, plan)
    if fold:
        fold_batchnorms_(graph)
    return small.eval()


def dead_plan(graph: Graph) -> Plan:
    """The plan that cuts every channel already exactly zero (each group keeps one unit)."""
    plan = {}
    for root, group in graph.groups():
        gone = graph.dead_units(group)
        if bool(gone.all()):
            gone[0] = False
        plan[root] = graph.channels_of(group, gone.nonzero().flatten().tolist())
    return plan


@torch.no_grad()
def index_masks(
    model: nn.Module, input_shape: tuple[int, ...], plan: Plan
) -> dict[str, torch.Tensor]:
    """{parameter name: bool mask of its shape, False where the plan's cut removes the
    entry}: the plan applied to a copy whose every parameter holds its own element indices
    (float64, exact below 2**53), so what survives the cut names what is kept, whatever
    coupling (residual, concatenation, grouped conv) Torch-Pruning followed."""
    twin = copy.deepcopy(model)
    graph = Graph(twin, input_shape)
    for p in twin.parameters():
        p.data = torch.arange(p.numel(), dtype=torch.float64, device=p.device).view(p.shape)
    cut_(graph, plan)
    kept = dict(twin.named_parameters())
    masks = {}
    for name, p in model.named_parameters():
        m = torch.zeros(p.numel(), dtype=torch.bool, device=p.device)
        m[kept[name].detach().reshape(-1).long()] = True
        masks[name] = m.view(p.shape)
    return masks


def check(model: nn.Module, input_shape: tuple[int, ...]) -> Graph:
    """Before training: the graph of `model`, and a trial cut (the first unit of every group,
    masked in one copy, cut in another) whose logits must agree; raises CannotCut (one line)
    naming the layer whose channels' cut breaks and what breaks: a channel count written into
    forward, channels joined to the model's input, a normalization across channels. The
    graph is `graph_of`'s, and a model that passed is not tried again while its graph holds
    (the trial's outcome is the couplings', not the weights')."""
    graph = graph_of(model, input_shape)
    if _GRAPHS[id(model)][2]:
        return graph
    plan = {root: graph.channels_of(group, [0]) for root, group in graph.groups()
            if graph.units(group)[1] > 1}  # fmt: skip
    if not plan:
        raise CannotCut("the model has no hidden layer with more than one channel to cut")
    if _trial(model, input_shape, plan) is not None:
        for root in plan:  # only on failure: which group's cut breaks, to name it
            why = _trial(model, input_shape, {root: plan[root]})
            if why is not None:
                raise CannotCut(f"cutting channels of layer {root!r} breaks the model: {why}")
        raise CannotCut(f"cutting channels breaks the model: {_trial(model, input_shape, plan)}")
    _remember(model, _signature(model, input_shape), graph, True)
    return graph


def _trial(model: nn.Module, input_shape: tuple[int, ...], plan: Plan) -> str | None:
    """Why the model with `plan` cut does not compute what it computes with it masked, or
    None where it does."""
    masked = copy.deepcopy(model).eval()
    x = example(model, input_shape)
    try:
        masks = index_masks(masked, input_shape, plan)
        with torch.no_grad():
            for name, p in masked.named_parameters():
                p.mul_(masks[name])
            small = compact_model(masked, input_shape, plan)
            want, got = masked(x), small(x)
    except CannotCut:
        raise
    # the user's forward on fewer channels: what torch raises for a shape that no longer
    # fits; anything else (a TypeError, a KeyError) is a fault of l1sweep's, not the model's
    except (RuntimeError, ValueError, IndexError, AssertionError) as e:
        return (f"{type(e).__name__}: {e} (a channel count written into forward, or "
                "channels added to the model's input?)")  # fmt: skip
    if want.shape != got.shape or not torch.allclose(want, got, rtol=1e-4, atol=1e-5):
        return ("it computes another function with the channels cut than with them zeroed "
                "(a normalization across channels, e.g. LayerNorm or GroupNorm?)")  # fmt: skip
    return None


def shape_string(graph: Graph, plan: Plan | None = None) -> str:
    """The short form of a graph's widths: each group's channels, then the classes
    (`8-8-16-16-32-32-10` for a ResNet: coupled channels counted once); with `plan`, the
    widths of the compact model that cuts it (each group's channels less the plan's)."""
    cut = plan or {}
    widths = [graph.dg.get_out_channels(g[0].dep.target.module) - len(cut.get(root, ()))
              for root, g in graph.groups()]  # fmt: skip
    return "-".join(str(w) for w in [*widths, graph.dg.get_out_channels(
        graph.model.get_submodule(graph.output))])  # fmt: skip


def measures(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, Any]:
    """The row's figures of a graph: channels_removed and groups_removed (the channels
    exactly zero, `Graph.dead`, that the compact model leaves out), compact_shape (the
    compact model's `shape_string`), flops and flops_ratio (`compact.flops`, of the compact
    model and dense / compact). Raises CannotCut for a model it cannot follow (`check`)."""
    from sweep.models.cost import flops

    graph = check(model, input_shape)
    plan = dead_plan(graph)
    small = compact_model(model, input_shape, plan)
    removed = sum(len(v) for v in plan.values())
    dense, sparse = flops(model, input_shape), flops(small, input_shape)
    return {
        "groups_removed": removed,
        "channels_removed": removed,
        "compact_shape": shape_string(graph, plan),
        "flops": sparse,
        "flops_ratio": dense / sparse if sparse else math.inf,
    }


# The layers a compact model's archive records, with the constructor arguments that rebuild
# each at its new size (the rest of the network is the original's, built from its _target_).
_ARGS = {
    "Conv1d": ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation",
               "groups", "padding_mode"),
    "Linear": ("in_features", "out_features"),
    "BatchNorm1d": ("num_features", "eps", "momentum", "affine", "track_running_stats"),
    "Identity": (),
}  # fmt: skip
_ARGS.update(Conv2d=_ARGS["Conv1d"], Conv3d=_ARGS["Conv1d"], BatchNorm2d=_ARGS["BatchNorm1d"],
             BatchNorm3d=_ARGS["BatchNorm1d"])  # fmt: skip


def layout(small: nn.Module) -> dict[str, list]:
    """{layer name: [class name, constructor arguments]} of every Conv, Linear, BatchNorm and
    Identity of the compact model: with the original network's `_target_`, what rebuilds it
    (`narrowed`) in a loader that has torch and numpy only (JSON values: no pickle)."""
    out = {}
    for name, m in small.named_modules():
        kind = type(m).__name__
        if name and kind in _ARGS and type(m) is getattr(nn, kind):
            args = {k: getattr(m, k) for k in _ARGS[kind]}
            if kind != "Identity" and "BatchNorm" not in kind:
                args["bias"] = m.bias is not None
            out[name] = [kind, {k: list(v) if isinstance(v, tuple) else v for k, v in args.items()}]
    return out


def narrowed(model: dict, layers: dict) -> nn.Module:
    """The network `model` (an archive's architecture: a `_target_` under sweep.models and its
    arguments) with each of `layers` (`layout`'s record) replaced by a fresh layer of the
    recorded size: the compact model's architecture, its weights loaded after. Raises
    UserError for a `_target_` outside sweep.models (a compact archive rebuilds l1sweep's own
    networks only; a user's model's compact form is its ONNX file)."""
    from sweep.config import targets

    target = model.get("_target_") if isinstance(model, dict) else None
    if not isinstance(target, str) or not targets.is_allowed(target, ("sweep.models.*",)):
        raise UserError(f"a compact archive rebuilds networks of sweep.models only, not {target!r}")
    factory = targets.locate(target)
    net = factory(**targets.accepted(factory, {k: v for k, v in model.items() if k != "_target_"}))
    for name, (kind, args) in layers.items():
        if kind not in _ARGS:
            raise UserError(f"a compact archive names an unknown layer {kind!r} at {name!r}")
        _replace(net, name, getattr(nn, kind)(**args))
    return net.eval()
