"""The compact model as something to ship: it takes the original inputs (a `Gather` of the
kept ones first), is described by a plain `spec` of its layers, and is rebuilt from that spec
(`build`, what `sweep.models.compact_net` calls when an archive is loaded). `deployable` makes
one from a trained model and checks its logits against the model's on real inputs."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn as nn
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


def build(layers: list, inputs: list[int], n_inputs: int | None = None) -> nn.Sequential:
    """The module a spec describes, after a Gather of `inputs` (flat positions of the kept
    inputs, of `n_inputs` per example); its weights uninitialized (loaded from an archive).
    ValueError for a layer class outside SPEC_ARGS."""
    modules: list[tuple[str, nn.Module]] = [("inputs", Gather(list(inputs), n_inputs))]
    for name, kind, args in layers:
        if kind not in SPEC_ARGS or set(args) - set(SPEC_ARGS[kind]):
            raise ValueError(f"a compact model holds no {kind} with arguments {sorted(args)}")
        if kind in ("Linear", "Conv2d"):
            modules.append((name, skip_init(getattr(nn, kind), **args)))
        else:
            modules.append((name, getattr(nn, kind)(**args)))
    return nn.Sequential(OrderedDict(modules))


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
