"""Codebooks: each compressible weight (every Linear and Conv layer's) as at most 2^bits
shared values plus its exact zeros, and the fine-tuning of those shared values.

Deep Compression's weight sharing (Han, Mao, Dally, ICLR 2016, section 3): per layer, a
1-D k-means over the nonzeros gives the centroids (the codebook) and each nonzero's code; then
the centroids may be trained, each moved by the summed gradients of the weights sharing it.
The archive format (sweep.deploy.archive) stores what `share` gives; `quantize` is the model
that format decodes to. Needs torch and numpy only.

    quantize(model, bits) -> the shared-weight model in memory (what the archive decodes to)
    finetune(model, bits, x, y, epochs) -> the shared-weight model, centroids trained
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from sweep.errors import UserError

BITS = range(1, 9)  # codebook widths the archive stores: codes are one byte
COMPRESSED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)  # the layers whose weight is compressed
FLOAT16_MAX = 65504.0


# Defined here, beneath the format that re-exports it (sweep.deploy.archive.ArchiveError), as
# sharing raises it too: a model the archive cannot be made from.
class ArchiveError(UserError):
    """A file that is not a readable l1sweep archive, or a model it cannot be made from; the
    message is one line that names the file and what is wrong."""


# ---- weight sharing ----------------------------------------------------------------------


@dataclass
class Shared:
    """One layer's weight as shared values: `codebook` (K float16 centroids, ascending) and, for
    each nonzero of the weight in C order (`mask`, bool of the weight's shape), its `codes`
    entry (uint8 < K). values() is the weight the archive decodes to."""

    mask: np.ndarray
    codes: np.ndarray
    codebook: np.ndarray

    def values(self) -> np.ndarray:
        """The dense float32 weights: each kept position holds its codebook value, others 0."""
        out = np.zeros(self.mask.shape, dtype=np.float32)
        out[self.mask] = self.codebook.astype(np.float32)[self.codes]
        return out


def kmeans_1d(values: np.ndarray, k: int, iterations: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd's k-means on scalars, centroids started evenly from min to max (Deep Compression's
    "linear initialization", their best for accuracy: it keeps the rare large weights).
    Deterministic. Returns (centroids ascending, float64; labels, int64 per value); clusters
    left empty are dropped, so there may be fewer than k centroids.

    On a line a cluster is a run of the sorted values between two midpoints of neighbouring
    centroids, so the values are sorted once and each step finds the k - 1 run ends
    (`searchsorted` of the midpoints) and the runs' sums from a prefix sum: O(k log n) a step
    after the O(n log n) sort, where assigning every value anew is O(n log k) a step (8x
    faster on a 64x128 layer, 20x on a 784x300 one: issue 33). The same steps, labels and
    stopping rule as assigning each value; a centroid differs from the per-value sum in the
    last bits of float64 (1e-16, far below the float16 the archive stores)."""
    x = values.astype(np.float64)
    ascending = np.sort(x)
    prefix = np.concatenate(([0.0], np.cumsum(ascending)))
    centroids = np.linspace(x.min(), x.max(), k)
    ends = mids = None
    for i in range(max(iterations, 1)):
        # nearest centroid: the centroids are sorted, so the midpoints split the line; a
        # value on a midpoint goes to the lower centroid (searchsorted's side="left" below)
        new_mids = (centroids[1:] + centroids[:-1]) / 2
        new = np.searchsorted(ascending, new_mids, side="right")
        if i and np.array_equal(new, ends):
            break
        ends, mids = new, new_mids
        edges = np.concatenate(([0], ends, [len(x)]))
        counts = np.diff(edges)
        sums = prefix[edges[1:]] - prefix[edges[:-1]]
        used = counts > 0
        centroids = np.where(used, sums / np.maximum(counts, 1), centroids)
    labels = np.searchsorted(mids, x)  # each value's cluster, by the last step's midpoints
    used = np.unique(labels)
    remap = np.zeros(len(centroids), dtype=np.int64)
    remap[used] = np.arange(len(used))
    return centroids[used], remap[labels]


def share(weight: np.ndarray, bits: int) -> Shared:
    """The weight (any shape, float) as at most 2^bits shared values plus its exact zeros.
    A weight that already holds at most 2^bits distinct nonzeros keeps them (rounded to
    float16), so sharing a shared weight again changes nothing. Raises ArchiveError for bits outside
    1..8 or values float16 cannot hold (non-finite, or |w| > 65504)."""
    if not (isinstance(bits, int) and bits in BITS):
        raise ArchiveError(f"bits must be an integer in {BITS[0]}..{BITS[-1]}, got {bits!r}")
    w = np.asarray(weight, dtype=np.float32)
    if not np.isfinite(w).all() or np.abs(w).max(initial=0.0) > FLOAT16_MAX:
        raise ArchiveError("weights must be finite and within float16's range (|w| <= 65504)")
    mask = w != 0
    nonzero = w[mask]
    distinct, inverse = np.unique(nonzero, return_inverse=True)
    if len(distinct) <= 2**bits:  # already shared (e.g. fine-tuned): keep its values
        codebook, merged = np.unique(distinct.astype(np.float16), return_inverse=True)
        return Shared(mask, merged[inverse].astype(np.uint8), codebook)
    if not len(nonzero):
        return Shared(mask, np.zeros(0, np.uint8), np.zeros(0, np.float16))
    centroids, labels = kmeans_1d(nonzero, 2**bits)
    return Shared(mask, labels.astype(np.uint8), centroids.astype(np.float16))


def compressible(model: nn.Module) -> list[str]:
    """State-dict names of the weights the archive shares: those of every Linear and Conv
    layer (and their subclasses), in state_dict order."""
    names = {
        f"{prefix}.weight" if prefix else "weight"
        for prefix, m in model.named_modules()
        if isinstance(m, COMPRESSED) and isinstance(getattr(m, "weight", None), torch.Tensor)
    }
    return [n for n in model.state_dict() if n in names]


def chosen_layers(model: nn.Module, layers: Sequence[str] | None) -> list[str]:
    """The state-dict names to share: `layers`, or by default every compressible weight.
    Raises ArchiveError where there is none (no Linear or Conv layer)."""
    chosen = compressible(model) if layers is None else list(layers)
    if not chosen:
        raise ArchiveError(
            f"{type(model).__name__} has no Linear or Conv layer: nothing to compress"
        )
    return chosen


def bits_for(bits: int | Mapping[str, int], name: str) -> int:
    """The codebook bits of layer `name`: `bits` itself, or its entry (ArchiveError if none)."""
    if isinstance(bits, Mapping):
        if name not in bits:
            raise ArchiveError(f"bits names no width for layer {name}")
        return bits[name]
    return bits


def to_float16(t: torch.Tensor) -> torch.Tensor:
    """A copy of `t` as the archive stores it: a floating-point tensor rounded to float16 (and
    back to its dtype), any other copied as it is. Raises ArchiveError for values float16
    cannot hold (non-finite, or |t| > 65504)."""
    if t.is_floating_point() and not bool(
        torch.isfinite(t).all() and t.abs().max() <= FLOAT16_MAX if t.numel() else True
    ):
        raise ArchiveError("parameters must be finite and within float16's range (<= 65504)")
    return t.to(torch.float16).to(t.dtype) if t.is_floating_point() else t.clone()


@torch.no_grad()
def quantize(
    model: nn.Module, bits: int | Mapping[str, int], layers: Sequence[str] | None = None
) -> nn.Module:
    """A copy of `model` as its archive decodes it: each compressed layer's weight shared to at
    most 2^bits values (zeros kept), every other floating-point tensor rounded to float16
    (and back to its dtype). `layers`: state-dict names to share (default: compressible);
    `bits`: one width for all, or {layer name: bits}. Raises ArchiveError: no layer to share,
    bits outside 1..8, values float16 cannot hold."""
    chosen = set(chosen_layers(model, layers))
    out = copy.deepcopy(model).cpu()
    state = out.state_dict()
    for name, t in state.items():
        if name in chosen:
            t.copy_(torch.from_numpy(share(t.numpy(), bits_for(bits, name)).values()))
        else:
            t.copy_(to_float16(t))
    return out


# ---- codebook fine-tuning ----------------------------------------------------------------


def finetune(
    model: nn.Module,
    bits: int | Mapping[str, int],
    x: torch.Tensor,
    y: torch.Tensor,
    epochs: int,
    lr: float = 1e-3,
    batch_size: int = 64,
    seed: int = 0,
    layers: Sequence[str] | None = None,
) -> nn.Module:
    """quantize(model, bits, layers), then its shared centroids fine-tuned on (x, y) for
    `epochs` epochs of minibatch cross-entropy with the sparsity mask and each weight's
    centroid held (Deep Compression, section 3: each centroid moves by the sum of the
    gradients of the weights that share it, which autograd gives through the gather
    `centroids[codes]`); the other floating-point parameters (biases) train too. Adam at `lr`.

    x: (n, *input shape) float, y: (n,) int64 class indices, on the model's device or CPU.
    Returns the shared-weight model (CPU), every value float16-exact, so encode of it stores
    exactly these weights. epochs=0 returns quantize(model, bits, layers)."""
    shared = quantize(model, bits, layers)
    if epochs <= 0:
        return shared
    device = x.device
    chosen = chosen_layers(shared, layers)
    state = shared.state_dict()
    centroids, index = {}, {}
    for name in chosen:
        s = share(state[name].numpy(), bits_for(bits, name))  # exact: already shared
        k = len(s.codebook)
        full = np.full(s.mask.shape, k, dtype=np.int64)  # code k: the held zero
        full[s.mask] = s.codes
        centroids[name] = torch.tensor(s.codebook.astype(np.float32), device=device)
        centroids[name].requires_grad_(True)
        index[name] = torch.from_numpy(full).to(device)
    work = copy.deepcopy(shared).to(device).train()
    others = {n: p for n, p in work.named_parameters() if n not in centroids}
    optimizer = torch.optim.Adam([*centroids.values(), *others.values()], lr=lr)
    zero = torch.zeros(1, device=device)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        perm = torch.randperm(len(y), generator=gen).to(device)
        for i in range(0, len(y), batch_size):
            idx = perm[i : i + batch_size]
            weights = {n: torch.cat([c, zero])[index[n]] for n, c in centroids.items()}
            logits = torch.func.functional_call(work, weights, (x[idx],))
            loss = nn.functional.cross_entropy(logits, y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        for name, c in centroids.items():
            work.state_dict()[name].copy_(torch.cat([c.detach(), zero])[index[name]])
    work = work.cpu().eval()
    # centroids and biases to float16: the values the archive stores
    return quantize(work, bits, chosen)
