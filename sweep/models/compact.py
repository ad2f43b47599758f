"""Compaction: a model whose removed neurons, filters and inputs are physically taken out.

Zeros scattered in weight matrices make a file small but not a model fast; a model whose dead
neurons and unread inputs are gone runs with the dense kernels every runtime has. `compact`
follows a plain nn.Sequential of Linear, Conv2d, ReLU, MaxPool2d, Flatten, Unflatten (before
the first layer), Dropout and Identity (what sweep.models builds) and rebuilds it with fewer
units: 784-128-10 becomes, say, 430-37-10.

A unit (an input, a hidden neuron, a conv filter) is removed when
- its outgoing weights to the units still there are all zero (it is unreachable), or
- its incoming weights from the units still there are all zero: it then outputs a constant,
  act(bias), which is folded exactly into the next layer's bias (the next layer's matching
  weights times that constant, added). Into a padded Conv2d a constant channel is not
  constant at the border, so such a unit is only removed where its constant is 0.
These rules are applied until nothing changes (a removal can make another unit unreachable).
The output layer's units (the classes) are never removed.

The compact model reads only the kept inputs, flattened: `compact_model(select_inputs(x,
kept_inputs))` equals `model(x)` up to float rounding (tests/test_compact.py).
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from dataclasses import dataclass, field

import torch
import torch.nn as nn
from torch.nn.utils import skip_init  # the weights are copied in: no init

from sweep import _compat
from sweep.errors import UserError
from sweep.models.cost import flops  # noqa: F401 (compact.flops: the name callers use)

log = logging.getLogger(__name__)

PARAM_LAYERS = (nn.Linear, nn.Conv2d)
# Layers without parameters that map a constant unit to a constant and a zero unit to zero.
PASS_LAYERS = (nn.ReLU, nn.MaxPool2d, nn.Flatten, nn.Dropout, nn.Identity)
KNOWN = "Linear, Conv2d, ReLU, MaxPool2d, Flatten, Unflatten (first), Dropout, Identity"


class CannotCompact(UserError):
    """The model is not one `compact` can follow; the message says why, in one line."""


@dataclass
class Layer:
    """A Linear or Conv2d of the chain, with the parameterless layers after it (up to the next
    one) and `spread`: how many of its input columns each unit of the layer before feeds (1,
    or H*W where a conv's channels are flattened into a Linear)."""

    name: str
    module: nn.Linear | nn.Conv2d
    after: list[tuple[str, nn.Module]] = field(default_factory=list)
    spread: int = 1

    @property
    def relu(self) -> bool:
        """Whether a ReLU follows the layer (a dead unit then outputs exactly 0)."""
        return any(isinstance(m, nn.ReLU) for _, m in self.after)

    def unit_weights(self, n_in: int) -> torch.Tensor:
        """(out units, in units): whether any weight from input unit j to unit i is non-zero."""
        w = self.module.weight.detach().cpu()
        if isinstance(self.module, nn.Conv2d):
            return (w != 0).flatten(2).any(2)
        return (w != 0).view(w.shape[0], n_in, self.spread).any(2)

    def unit_sums(self, n_in: int) -> torch.Tensor:
        """(out, in units): the sum of the weights from input unit j to unit i, i.e. what a
        constant 1 on unit j adds to unit i (an unpadded conv: its kernel's sum)."""
        w = self.module.weight.detach().cpu()
        if isinstance(self.module, nn.Conv2d):
            return w.flatten(2).sum(2)
        return w.view(w.shape[0], n_in, self.spread).sum(2)

    def bias(self) -> torch.Tensor:
        """The layer's bias (out units,), zeros where it has none, on the CPU."""
        m = self.module
        if m.bias is None:
            return torch.zeros(m.weight.shape[0], dtype=m.weight.dtype)
        return m.bias.detach().cpu()

    @property
    def padded(self) -> bool:
        """Whether the layer is a zero-padded conv (a constant input is then not constant at
        the borders, so a dead channel's constant cannot be folded into the next bias)."""
        return isinstance(self.module, nn.Conv2d) and any(p != 0 for p in self.module.padding)


@dataclass
class Chain:
    """A Sequential model as compact sees it: the layers before the first Linear/Conv2d
    (`prefix`), the Linear/Conv2d layers in order, and the input units of the first one."""

    prefix: list[tuple[str, nn.Module]]
    layers: list[Layer]
    n_inputs: int  # input units: the first Linear's in_features or the first Conv's channels

    @property
    def hidden(self) -> list[Layer]:
        """Every layer but the output layer: the ones whose units may be removed."""
        return self.layers[:-1]


def _modules(model: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    """The leaf modules of a (nested) Sequential, named path_with_underscores."""
    if type(model) is not nn.Sequential:
        what = type(model).__name__
        raise CannotCompact(
            f"compact follows a plain nn.Sequential, and this model is a {what} with its own "
            "forward (a skip connection or other wiring it cannot see)"
        )
    out = []
    for name, m in model.named_children():
        full = f"{prefix}_{name}" if prefix else name
        if _compat.has_module_hooks(m, forward_only=True):
            raise CannotCompact(f"compact cannot follow layer {full}: it has a forward hook")
        out.extend(_modules(m, full) if isinstance(m, nn.Sequential) else [(full, m)])
    return out


def trace(model: nn.Module) -> Chain:
    """The model as a Chain; CannotCompact (one line: which layer, why) where it is not a plain
    Sequential of the layers compact knows, wired as it can follow."""
    if _compat.has_module_hooks(model, forward_only=True):
        raise CannotCompact("compact cannot follow the model: it has a forward hook")
    prefix: list[tuple[str, nn.Module]] = []
    layers: list[Layer] = []
    flat = False  # whether the activations are flat vectors since the last conv
    for name, m in _modules(model):
        kind = type(m)
        if kind in PARAM_LAYERS:
            layers.append(_param_layer(name, m, layers[-1].module if layers else None, flat))
            flat = kind is nn.Linear
        elif kind in PASS_LAYERS or (kind is nn.Unflatten and not layers):
            if kind is nn.Flatten and (m.start_dim, m.end_dim) != (1, -1):
                raise CannotCompact(f"compact cannot follow layer {name}: a partial Flatten")
            if kind is nn.Flatten:
                flat = True
            (layers[-1].after if layers else prefix).append((name, m))
        else:
            raise CannotCompact(
                f"compact cannot follow layer {name} ({kind.__name__}): it knows {KNOWN}"
            )
    if not layers:
        raise CannotCompact("compact found no Linear or Conv2d layer in the model")
    if isinstance(layers[-1].module, nn.Conv2d):
        raise CannotCompact("compact needs the model to end in a Linear layer (the classes)")
    first = layers[0].module
    n_inputs = first.in_features if isinstance(first, nn.Linear) else first.in_channels
    return Chain(prefix, layers, n_inputs)


def _param_layer(name: str, m: nn.Module, prev: nn.Module | None, flat: bool) -> Layer:
    """The Layer of a Linear or Conv2d `m` that follows the parameter layer `prev` (None: the
    first), `flat` telling whether a Flatten came between; CannotCompact where compact cannot
    carry the wiring over."""
    kind = type(m)
    if kind is nn.Conv2d and (m.groups != 1 or m.padding_mode != "zeros"):
        raise CannotCompact(
            f"compact cannot follow layer {name}: a Conv2d with groups={m.groups}, "
            f"padding_mode={m.padding_mode} (it knows groups=1 with zero padding)"
        )
    if prev is None:
        return Layer(name, m)
    if kind is nn.Conv2d and (flat or isinstance(prev, nn.Linear)):
        raise CannotCompact(
            f"compact cannot follow layer {name}: a Conv2d after a Linear or Flatten"
        )
    spread = 1
    if kind is nn.Linear and isinstance(prev, nn.Conv2d):
        if not flat or m.in_features % prev.out_channels:
            raise CannotCompact(
                f"compact cannot follow layer {name}: a Linear after a Conv2d needs "
                f"a Flatten between, and in_features a multiple of the channels"
            )
        spread = m.in_features // prev.out_channels
    elif kind is nn.Linear and m.in_features != prev.out_features:
        raise CannotCompact(f"compact cannot follow layer {name}: widths disagree")
    return Layer(name, m, spread=spread)


@torch.no_grad()
def removed(chain: Chain) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """Which units go: (inputs kept, per layer units kept, per layer units removed as
    constants). The rules and their fixed point are the module docstring's."""
    layers = chain.layers
    last = len(layers) - 1
    widths = [chain.n_inputs] + [L.module.weight.shape[0] for L in layers]
    links = [L.unit_weights(widths[k]) for k, L in enumerate(layers)]
    sums = [L.unit_sums(widths[k]) for k, L in enumerate(layers)]
    kept_in = torch.ones(widths[0], dtype=torch.bool)
    kept = [torch.ones(n, dtype=torch.bool) for n in widths[1:]]
    const = [torch.zeros(n, dtype=torch.bool) for n in widths[1:]]
    while True:
        values = constants(chain, const, sums)
        before = (kept_in.clone(), [k.clone() for k in kept], [c.clone() for c in const])
        kept_in &= links[0][kept[0]].any(0)
        for k in range(last):
            feeds = kept_in if k == 0 else kept[k - 1]
            has_in = links[k][:, feeds].any(1)
            has_out = links[k + 1][kept[k + 1]].any(0)
            foldable = ~torch.tensor(layers[k + 1].padded) | (values[k] == 0)
            newly_const = kept[k] & ~has_in & foldable
            const[k] |= newly_const
            kept[k] &= ~newly_const & has_out
        after = (kept_in, kept, const)
        if all(torch.equal(a, b) for a, b in zip(_flat(before), _flat(after))):
            return kept_in, kept, const


def _flat(masks: tuple) -> list[torch.Tensor]:
    return [masks[0], *masks[1], *masks[2]]


def constants(chain: Chain, const: list[torch.Tensor], sums: list[torch.Tensor]) -> list:
    """Each layer's output value (after its ReLU, if any) of every unit, taking as input only
    the constant units of the layer before: exact for the units in `const`, which see
    nothing else."""
    values, prev = [], None
    for k, L in enumerate(chain.layers):
        z = L.bias().clone()
        if prev is not None and const[k - 1].any() and not L.padded:
            z += sums[k][:, const[k - 1]] @ prev[const[k - 1]]
        prev = z.clamp(min=0) if L.relu else z
        values.append(prev)
    return values


@torch.no_grad()
def compact(
    model: nn.Module,
    input_shape: tuple[int, ...],
    feature_names: tuple[str, ...] | None = None,
) -> tuple[nn.Sequential, torch.Tensor | list[str]]:
    """The model without its removed units, and which inputs it reads.

    model: a plain Sequential (sweep.models' mlp, linear, lenet5, or any of the layers the
    module docstring lists); input_shape: one example's shape, e.g. (28, 28) or (n_features,).
    Returns (compact_model, kept_inputs): kept_inputs is a bool tensor of input_shape (True:
    the input is read) or, given feature_names, the names of the kept features. The compact
    model takes `select_inputs(x, mask)`: the kept inputs of each example, flattened, shape
    (batch, n_kept); its logits equal the model's up to float rounding. Raises CannotCompact
    (a UserError, one line) for a model it cannot follow. The model is not changed.
    """
    chain = trace(model)
    was_training = model.training
    model.eval()
    try:
        shapes = _shapes(chain, input_shape)
    finally:
        model.train(was_training)
    kept_in, kept, const = removed(chain)
    sums = [L.unit_sums(n) for L, n in zip(chain.layers, [chain.n_inputs, *(len(k) for k in kept)])]
    values = constants(chain, const, sums)
    first = chain.layers[0].module
    if isinstance(first, nn.Conv2d):
        c, h, w = shapes[0]
        mask = kept_in[:, None, None].expand(c, h, w).reshape(input_shape)
        modules: list[tuple[str, nn.Module]] = [
            ("image", nn.Unflatten(1, (int(kept_in.sum()), h, w)))
        ]
    else:
        mask = kept_in.reshape(input_shape)
        modules = [("flatten", nn.Flatten())]
    cols = kept_in
    for k, L in enumerate(chain.layers):
        rows = kept[k]
        bias = L.bias().clone()
        if k and const[k - 1].any() and not L.padded:
            bias += sums[k][:, const[k - 1]] @ values[k - 1][const[k - 1]]
        modules.append((L.name, _kept_part(L, rows, cols, bias[rows])))
        modules.extend(L.after)
        cols = rows
    device = chain.layers[0].module.weight.device
    compact_model = nn.Sequential(OrderedDict(modules)).to(device).eval()
    if feature_names is not None:
        return compact_model, [n for n, k in zip(feature_names, mask.flatten().tolist()) if k]
    return compact_model, mask.cpu()


def _kept_part(L: Layer, rows: torch.Tensor, cols: torch.Tensor, bias: torch.Tensor) -> nn.Module:
    """A new Linear/Conv2d holding layer L's kept units (bool `rows`) over the kept units of
    the layer before (bool `cols`), with `bias` (the kept rows', constants folded in)."""
    m = L.module
    weight = m.weight.detach().cpu()[rows]
    if isinstance(m, nn.Linear):
        weight = weight.view(len(weight), len(cols), L.spread)[:, cols].flatten(1)
        new: nn.Module = skip_init(nn.Linear, weight.shape[1], weight.shape[0])
    else:
        weight = weight[:, cols]
        new = skip_init(nn.Conv2d, weight.shape[1], weight.shape[0], m.kernel_size,
                        m.stride, m.padding, m.dilation)  # fmt: skip
    new = new.to(dtype=weight.dtype)
    new.weight.copy_(weight)
    new.bias.copy_(bias)
    return new


def select_inputs(x: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
    """The inputs a compact model reads: x (batch, *input_shape) flattened, the columns of the
    bool mask `kept` (input_shape) only; (batch, n_kept)."""
    return x.reshape(len(x), -1)[:, kept.reshape(-1).to(x.device)]


def _shapes(chain: Chain, input_shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    """The shape of one example at each Linear/Conv2d layer's input (a zero batch of one
    through the model); CannotCompact where the model does not take this input shape."""
    x = torch.zeros(1, *input_shape, dtype=chain.layers[0].module.weight.dtype,
                    device=chain.layers[0].module.weight.device)  # fmt: skip
    shapes = []
    try:
        for _, m in chain.prefix:
            x = m(x)
        for L in chain.layers:
            shapes.append(tuple(x.shape[1:]))
            x = L.module(x)
            for _, m in L.after:
                x = m(x)
    except RuntimeError as e:
        raise CannotCompact(f"the model does not take inputs of shape {input_shape}: {e}") from e
    return shapes


@torch.no_grad()
def shape_string(model: nn.Sequential, n_inputs: int) -> str:
    """'430-37-10': the inputs read, then the units (neurons, channels) of each layer."""
    widths = [n_inputs] + [m.weight.shape[0] for m in model if isinstance(m, PARAM_LAYERS)]
    return "-".join(map(str, widths))


def measures(model: nn.Module, input_shape: tuple[int, ...]) -> dict:
    """The row's structured figures: groups_removed (hidden neurons and filters, and inputs
    (features, or channels of a conv first layer) removed), compact_shape, flops (of the
    compact model) and flops_ratio (dense / compact). Empty figures (None) for a model compact
    cannot follow, with one log line saying why."""
    try:
        chain = trace(model)
        small, kept = compact(model, input_shape)
    except CannotCompact as e:
        return _graph_measures(model, input_shape, e)
    n_kept = int(kept.sum())
    units = chain.n_inputs + sum(L.module.weight.shape[0] for L in chain.hidden)
    dense, sparse = flops(model, input_shape), flops(small, (n_kept,))
    return {
        "groups_removed": units - _units(small),
        "compact_shape": shape_string(small, n_kept),
        "flops": sparse,
        "flops_ratio": dense / sparse if sparse else math.inf,
    }


def _graph_measures(model: nn.Module, input_shape: tuple[int, ...], why: Exception) -> dict:
    """A network with its own forward: its channels through the dependency graph
    (`sweep.models.graph`), or empty figures with one log line saying why neither path can."""
    from sweep.models import graph

    try:
        return graph.measures(model, tuple(input_shape))
    except graph.CannotCut as e:
        log.info(f"no compact figures: {why}; {e}")
        return dict.fromkeys(MEASURES)


# The row's figures that only a compact model has.
MEASURES = ("groups_removed", "channels_removed", "compact_shape", "flops", "flops_ratio")


def check_objective(model: nn.Module, input_shape: tuple[int, ...], metrics: list[str]) -> None:
    """Before training: an objective on a compact figure (`flops`, ...) needs a model compact
    can follow. Raises UserError, one line, naming the objective and why; any other model
    trains (its compact figures are empty)."""
    wanted = [m for m in metrics if m in MEASURES]
    if not wanted:
        return
    try:
        compact(model, input_shape)
    except CannotCompact as e:
        from sweep.models import graph

        try:
            graph.check(model, tuple(input_shape))
            return
        except graph.CannotCut as cut:
            raise UserError(
                f"the objective's {', '.join(wanted)} is of the compact model, which this "
                f"model has none of ({e}; {cut}); use an objective without it, e.g. "
                "objective=pareto"
            ) from None


def _units(small: nn.Sequential) -> int:
    """Input units and hidden units of a compact model (its output units excluded)."""
    params = [m for m in small if isinstance(m, PARAM_LAYERS)]
    first = params[0]
    n_in = first.in_features if isinstance(first, nn.Linear) else first.in_channels
    return n_in + sum(m.weight.shape[0] for m in params[:-1])
