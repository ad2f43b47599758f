"""The compact model as something to ship: it takes the original inputs (a `Gather` of the
kept ones first), is described by a plain `spec` of its layers, and is rebuilt from that spec
(`build`, what `sweep.models.compact_net` calls when an archive is loaded). `deployable` makes
one from a trained model and checks its logits against the model's on real inputs."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils import skip_init  # the weights are loaded in: no init

from sweep.models.compact import CannotCompact, compact

# The layers a compact model is made of, and the constructor arguments that describe each.
SPEC_ARGS = {
    "Linear": ("in_features", "out_features"),
    "Conv2d": ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation"),
    "ReLU": (),
    "MaxPool2d": ("kernel_size", "stride", "padding", "dilation", "ceil_mode"),
    "Flatten": ("start_dim", "end_dim"),
    "Unflatten": ("dim", "unflattened_size"),
    "Dropout": ("p",),
    "Identity": (),
}


class Gather(nn.Module):
    """The compact model's first step: each example (batch, *input_shape) flattened, then only
    the kept inputs, in order (`index`: their flat positions); out (batch, len(index)). A model
    with it takes the same inputs as the model it was compacted from. Where the kept inputs
    are a few runs of consecutive positions (pixels dropped at the image's border), it copies
    the runs (torch.cat of slices: about 3x faster than index_select at batch 256 here)."""

    MAX_RUNS = 32  # more runs than this: one index_select

    def __init__(self, index: list[int], n_inputs: int | None = None) -> None:
        super().__init__()
        # not in the state_dict: the archive's architecture names the inputs
        self.register_buffer("index", torch.tensor(index, dtype=torch.long), persistent=False)
        # every input kept, in order (n_inputs of them): nothing to gather, no copy
        self.every = index == list(range(len(index))) and len(index) == n_inputs
        starts = [i for k, i in enumerate(index) if k == 0 or index[k - 1] != i - 1]
        ends = [i + 1 for k, i in enumerate(index) if k == len(index) - 1 or index[k + 1] != i + 1]
        self.runs = list(zip(starts, ends)) if 0 < len(starts) <= self.MAX_RUNS else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, ...) flattened, then only the kept input positions: (N, kept)."""
        x = x.flatten(1)
        if self.every:
            return x
        if self.runs is not None:
            return torch.cat([x[:, a:b] for a, b in self.runs], 1)
        if torch.onnx.is_in_onnx_export():
            # rows of the transposed batch: onnxruntime's Gather along axis 1 copies an element
            # at a time (measured once here, a 588-of-784 model at batch 256: 1.65 ms, 0.32 ms
            # so); in torch eager the transposes cost more than they save at batch 1
            return x.t().index_select(0, self.index).t()
        return x.index_select(1, self.index)


class FoldedLinear(nn.Linear):
    """The compact model's first Linear with its input gather folded in: it reads every input,
    x (N, n_inputs), through a weight (out_features, n_inputs) whose columns of the inputs
    not kept are zero, one dense matmul instead of a gather's copy and a smaller matmul (the
    same logits, up to float rounding). Its state_dict holds the kept columns only, weight
    (out_features, in_features = len(index)), what an archive stores and what a Linear after
    a Gather holds: load_state_dict scatters them into the zero matrix, state_dict gathers
    them back. Trained, the dropped columns stay zero (their gradient is zeroed). Given the
    kept inputs only, x (N, in_features), it computes the same as that Linear."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        inputs: list[int],
        n_inputs: int,
        bias: bool = True,
        device: object = None,
        dtype: object = None,
    ) -> None:
        super().__init__(in_features, out_features, bias, device, dtype)
        if len(inputs) != in_features or in_features >= n_inputs:
            raise ValueError(f"{len(inputs)} kept inputs of {n_inputs} for {in_features}")
        with torch.no_grad():  # every input's column; the kept ones hold the Linear's init
            full = self.weight.new_zeros(out_features, n_inputs)
            full[:, inputs] = self.weight
        self.weight = nn.Parameter(full)
        # not in the state_dict: the archive's architecture names the inputs
        self.register_buffer("index", torch.tensor(inputs, dtype=torch.long), persistent=False)
        self.n_inputs = n_inputs
        self.masked: tuple = ()  # (the weight whose gradient hook is set,): not a Parameter
        self.register_state_dict_post_hook(_kept_columns)
        self.register_load_state_dict_pre_hook(_every_column)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, n_inputs) or (N, in_features: the kept inputs only) -> (N, out_features)."""
        w = self.weight
        if x.shape[-1] != self.n_inputs:
            return F.linear(x, w.index_select(1, self.index), self.bias)
        if w.requires_grad and torch.is_grad_enabled() and not any(m is w for m in self.masked):
            w.register_hook(self._kept_gradient)  # the dropped columns stay zero
            self.masked = (w,)
        return F.linear(x, w, self.bias)

    def _kept_gradient(self, grad: torch.Tensor) -> torch.Tensor:
        kept = torch.zeros(self.n_inputs, dtype=grad.dtype, device=grad.device)
        return grad * kept.index_fill_(0, self.index.to(grad.device), 1.0)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, reads {self.in_features} of {self.n_inputs} inputs"


def _kept_columns(module: FoldedLinear, state: dict, prefix: str, meta: object) -> None:
    """state_dict's post-hook: the weight's kept columns, (out_features, in_features)."""
    key = prefix + "weight"
    state[key] = state[key].index_select(1, module.index.to(state[key].device))


def _every_column(module: FoldedLinear, state: dict, prefix: str, *args: object) -> None:
    """load_state_dict's pre-hook: kept columns (out_features, in_features) scattered into
    the zero matrix over every input (out_features, n_inputs)."""
    key = prefix + "weight"
    w = state.get(key)
    if w is not None and tuple(w.shape) == (module.out_features, module.in_features):
        full = w.new_zeros(module.out_features, module.n_inputs)
        state[key] = full.index_copy_(1, module.index.to(w.device), w)


def spec(model: nn.Sequential) -> list[list]:
    """A compact model's layers as JSON data: [name, layer class, {constructor arguments}] each
    (SPEC_ARGS); build(spec(m), ...) makes the same modules, state_dict keys included."""
    out = []
    for name, m in model.named_children():
        kind = type(m).__name__
        if kind not in SPEC_ARGS:
            raise CannotCompact(f"a compact model holds no {kind} (layer {name})")
        args = {a: getattr(m, a) for a in SPEC_ARGS[kind]}
        out.append([name, kind, {k: list(v) if isinstance(v, tuple) else v
                                 for k, v in args.items()}])  # fmt: skip
    return out


def folds(n_inputs: int, n_kept: int, out_features: int) -> bool:
    """Whether the first Linear reads every input with its gather folded in (FoldedLinear)
    rather than after a Gather of the `n_kept` of `n_inputs` inputs: where at least half the
    inputs are kept and the multiply-adds on the dropped ones, (n_inputs - n_kept) *
    out_features per example, cost no more than the gather (about 26 multiply-adds per
    gathered input). Measured here (torch 2.14 eager, one thread, index_select against
    F.linear with zero columns, batch 1 and 256, 64 and 784 inputs, 8 to 128 outputs): 588 of
    784 into 32, the Fashion-MNIST recipe's, 1.36x faster folded at batch 256 and 1.41x at
    batch 1; 588 into 128 or 392 into 32, 0.9x (so those keep the Gather). Against the
    Gather's copy of runs (a digits model reading 48 of 64 pixels in 8 runs, into 32),
    folded was 1.5x faster at batch 256 and 1.65x at batch 1."""
    return 2 * n_kept >= n_inputs and (n_inputs - n_kept) * out_features <= 26 * n_kept


def build(
    layers: list, inputs: list[int], n_inputs: int | None = None, fold: bool = True
) -> nn.Sequential:
    """The module a spec describes, after a Gather of `inputs` (flat positions of the kept
    inputs, of `n_inputs` per example); its weights uninitialized (loaded from an archive).
    Where the first layer is a Linear, `fold` is true and `folds` says it is faster, the
    gather is folded into that Linear instead (a Flatten, then a FoldedLinear: the same
    state_dict, the same logits). Either way the module takes the full inputs (batch,
    *input_shape). ValueError for a layer class outside SPEC_ARGS."""
    gather = Gather(list(inputs), n_inputs)
    first = next((k for k, (_, kind, _) in enumerate(layers) if kind in ("Linear", "Conv2d")),
                 None)  # fmt: skip
    fold = (
        fold
        and first is not None
        and layers[first][1] == "Linear"
        and n_inputs is not None
        and not gather.every
        and all(kind in ("Flatten", "Dropout", "Identity") for _, kind, _ in layers[:first])
        and folds(n_inputs, len(inputs), layers[first][2]["out_features"])
    )
    modules: list[tuple[str, nn.Module]] = [("inputs", nn.Flatten() if fold else gather)]
    for k, (name, kind, args) in enumerate(layers):
        if kind not in SPEC_ARGS or set(args) - set(SPEC_ARGS[kind]):
            raise ValueError(f"a compact model holds no {kind} with arguments {sorted(args)}")
        if fold and k == first:
            modules.append((name, FoldedLinear(**args, inputs=list(inputs), n_inputs=n_inputs)))
        elif kind in ("Linear", "Conv2d"):
            modules.append((name, skip_init(getattr(nn, kind), **args)))
        else:
            modules.append((name, getattr(nn, kind)(**args)))
    return nn.Sequential(OrderedDict(modules))


def n_read(model: nn.Module) -> int | None:
    """How many inputs a built compact model reads (its Gather's or FoldedLinear's kept
    inputs); None for a model with neither (it reads all it is given)."""
    for m in model.modules():
        if isinstance(m, (Gather, FoldedLinear)):
            return len(m.index)
    return None


@dataclass
class Deployable:
    """A compact model ready to write: `model` (a Gather, then the compact layers: it takes the
    original inputs), `arch` (what an archive stores to rebuild it: sweep.models.compact_net),
    `kept` (bool mask of input_shape), `names` (the kept inputs' names: feature names, or the
    positions, e.g. '(3, 14)'), `gap` (max |compact - masked| logit on the inputs checked)."""

    model: nn.Sequential
    arch: dict
    kept: torch.Tensor
    names: list[str]
    gap: float


@torch.no_grad()
def deployable(
    model: nn.Module,
    x: torch.Tensor,
    feature_names: tuple[str, ...] | None = None,
    tolerance: float = 1e-4,
) -> Deployable:
    """compact(model) as a model that takes the original inputs, checked on real data `x`
    (batch, *input_shape): its logits must equal the model's within `tolerance` (absolute,
    times max(1, the largest |logit|)). Raises CannotCompact (one line) for a model compact
    cannot follow or logits that disagree."""
    input_shape = tuple(x.shape[1:])
    small, mask = compact(model, input_shape)
    index = mask.flatten().nonzero().flatten().tolist()
    layers = spec(small)
    net = build(layers, index, mask.numel())
    net.load_state_dict(small.state_dict())
    net.eval()
    model_was = model.training
    model.eval()
    try:
        ref = model(x)
    finally:
        model.train(model_was)
    gap = float((net(x) - ref).abs().max()) if len(x) else 0.0
    if not gap <= tolerance * max(1.0, float(ref.abs().max())):
        raise CannotCompact(f"the compact model's logits differ from the model's by {gap:.3g}")
    if feature_names is not None and len(feature_names) == mask.numel():
        names = [feature_names[i] for i in index]
    else:
        names = [str(tuple(int(v) for v in torch.unravel_index(torch.tensor(i), input_shape)))
                 for i in index]  # fmt: skip
    arch = {"_target_": "sweep.models.compact_net", "layers": layers, "inputs": index,
            "input_shape": list(input_shape)}  # fmt: skip
    return Deployable(net, arch, mask, names, gap)
