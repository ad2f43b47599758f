"""l1sweep's compressed model format, `model.l1z` (docs/deploy.md has it byte by byte).

Deep Compression's pipeline (Han, Mao, Dally, ICLR 2016), on a model l1sweep made sparse:
each compressible layer (the weight of every Linear and Conv layer) keeps only its nonzeros,
their positions as a bitmap or as relative indices (gaps, with filler entries where a gap
overflows the index width), whichever codes smaller (by an estimate); their values shared
through a per-layer codebook of 2^bits centroids at most (sweep.deploy.codebook: k-means and its
fine-tuning); then the entropy coder of the standard library (lzma or zlib, whichever is
smaller per stream). Biases, codebooks and any other floating-point tensor are kept as
float16. The decoded model is what every accuracy measures.

Needs torch, numpy and the standard library only (no Hydra, no pickle): the loader of a
deployed model (sweep.export.load) is built on `read`.

    encode(model, bits, arch) -> bytes;  decode(bytes) -> state_dict;  unpack(bytes) -> Archive
    read(path) -> the module a file holds (rebuild + load_state)
"""

from __future__ import annotations

import json
import lzma
import math
import struct
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from sweep.config import targets
from sweep.deploy.codebook import (
    ArchiveError,
    Shared,
    bits_for,
    chosen_layers,
    share,
    to_float16,
)

# quantize and finetune live in codebook; docs and scripts named them here, so they stay here.
from sweep.deploy.codebook import finetune as finetune
from sweep.deploy.codebook import quantize as quantize
from sweep.errors import UserError

MAGIC = b"\x89L1Z"
VERSION = 1
HEADER = struct.Struct("<4sBII")  # magic, version, payload bytes, CRC32 of the payload
# What an archive's `_target_` may name without allow_targets: l1sweep's model factories and
# torch's layers (not all of sweep.*, as a run's config may: an archive is data from anywhere).
BUILTIN_TARGETS = ("sweep.models.*", "torch.nn.*")
WIDTHS = (4, 6, 8)  # relative index widths in bits tried per layer (Deep Compression: 5)

# Stream codecs: the id byte that starts every stream.
STORED, DEFLATE, HUFFMAN, LZMA = 0, 1, 2, 3
# lzma's literal context / position bits tried for a stream: (lc, lp, pb).
LZMA_PROPS = ((3, 0, 2), (0, 0, 0))


# ---- streams -----------------------------------------------------------------------------


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def _read_varint(buf: memoryview, pos: int) -> tuple[int, int]:
    n = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        n |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return n, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _lzma_filters(props: int, n_raw: int, preset: int = 9 | lzma.PRESET_EXTREME) -> list[dict]:
    """LZMA1 with the properties byte `props` ((pb * 5 + lp) * 9 + lc, as in .lzma files) and
    a dictionary of the raw length rounded up to a power of two (4 KiB to 64 MiB): no larger
    than the stream needs, which keeps small streams fast to code."""
    lc, rest = props % 9, props // 9
    lp, pb = rest % 5, rest // 5
    dict_size = min(max(4096, 1 << max(n_raw - 1, 1).bit_length()), 1 << 26)
    return [{"id": lzma.FILTER_LZMA1, "preset": preset, "dict_size": dict_size,
             "lc": lc, "lp": lp, "pb": pb}]  # fmt: skip


def _candidates(raw: bytes) -> list[bytes]:
    """Every coding of `raw` the format knows (codec id, its options, the coded bytes)."""
    out = [bytes([STORED]) + raw]
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15, 9)
    out.append(bytes([DEFLATE]) + deflate.compress(raw) + deflate.flush())
    huffman = zlib.compressobj(9, zlib.DEFLATED, -15, 9, zlib.Z_HUFFMAN_ONLY)
    out.append(bytes([HUFFMAN]) + huffman.compress(raw) + huffman.flush())
    for lc, lp, pb in LZMA_PROPS:
        props = (pb * 5 + lp) * 9 + lc
        coded = lzma.compress(raw, format=lzma.FORMAT_RAW, filters=_lzma_filters(props, len(raw)))
        out.append(bytes([LZMA, props]) + coded)
    return out


def pack_stream(raw: bytes) -> bytes:
    """`raw` as a stream: varint coded length, varint raw length, then the smallest coding
    (a codec byte, lzma's properties byte, the coded bytes)."""
    coded = min(_candidates(raw), key=len)
    return _varint(len(coded)) + _varint(len(raw)) + coded


def _unpack_stream(buf: memoryview, pos: int) -> tuple[bytes, int]:
    size, pos = _read_varint(buf, pos)
    n_raw, pos = _read_varint(buf, pos)
    coded = bytes(buf[pos : pos + size])
    if len(coded) != size or not size:
        raise ValueError("a stream runs past the end of the payload")
    codec, body = coded[0], coded[1:]
    if codec == STORED:
        raw = body
    elif codec in (DEFLATE, HUFFMAN):
        d = zlib.decompressobj(-15)
        raw = d.decompress(body, n_raw + 1)
    elif codec == LZMA:
        if not body or body[0] % 9 > 4 or body[0] >= 9 * 5 * 5:
            raise ValueError("bad lzma properties")
        d = lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=_lzma_filters(body[0], n_raw))
        raw = d.decompress(body[1:], n_raw + 1)
    else:
        raise ValueError(f"unknown codec {codec}")
    if len(raw) != n_raw:
        raise ValueError(f"a stream decodes to {len(raw)} bytes, its header says {n_raw}")
    return raw, pos + size


def _estimated_size(raw: bytes) -> int:
    """~ the bytes `raw` codes to, to choose a layout by (`pack_stream` tries every codec): lzma
    preset 1, its default properties (93: lc=3 lp=0 pb=2), or stored; 5-8x faster (issue 33)."""
    coded = lzma.compress(raw, format=lzma.FORMAT_RAW, filters=_lzma_filters(93, len(raw), 1))
    return min(len(raw), len(coded))


# ---- positions: bitmap or relative indices -----------------------------------------------


def relative_indices(positions: np.ndarray, width: int) -> np.ndarray:
    """Deep Compression's relative indices: for each nonzero, the zeros since the previous one;
    a gap of F = 2^width - 1 or more first emits F (a filler: skip F positions, no weight) as
    often as it fits. `positions`: ascending flat indices. Returns uint8 entries, each < 2^width."""
    filler = 2**width - 1
    gaps = np.diff(positions, prepend=-1) - 1
    fills, rest = np.divmod(gaps, filler)
    lengths = fills + 1
    out = np.full(int(lengths.sum()), filler, dtype=np.uint8)
    out[np.cumsum(lengths) - 1] = rest
    return out


def positions_from_relative(entries: np.ndarray, width: int, n: int) -> np.ndarray:
    """The flat positions relative_indices encoded; ValueError if they overrun `n` elements."""
    filler = 2**width - 1
    entries = entries.astype(np.int64)
    weight = entries != filler
    if (entries > filler).any():
        raise ValueError("a relative index exceeds its width")
    positions = np.cumsum(entries + weight)[weight] - 1
    if len(positions) and positions[-1] >= n:
        raise ValueError("relative indices run past the end of their layer")
    return positions


def _scan(shape: tuple[int, ...], order: int) -> tuple[int, ...]:
    """The axis order a layer is scanned in: 0 = as stored (output-major); 1 = input-major,
    axes 0 and 1 swapped, so an input a Linear layer no longer reads (a dead pixel) is one run
    of zeros."""
    axes = tuple(range(len(shape)))
    return (1, 0, *axes[2:]) if order == 1 and len(shape) >= 2 else axes


@dataclass
class _Layout:
    order: int
    index: str  # "bitmap" or "relative"
    width: int
    data: bytes  # the index stream's part
    codes: bytes  # the codes in scan order


def _layouts(s: Shared) -> list[_Layout]:
    out = []
    orders = (0, 1) if s.mask.ndim >= 2 else (0,)
    for order in orders:
        perm = _scan(s.mask.shape, order)
        flat_mask = s.mask.transpose(perm).reshape(-1)
        # codes in scan order: number the nonzeros in C order, then read them in scan order
        number = np.full(s.mask.shape, -1, dtype=np.int64)
        number[s.mask] = np.arange(int(s.mask.sum()))
        codes = s.codes[number.transpose(perm).reshape(-1)[flat_mask]].tobytes()
        out.append(_Layout(order, "bitmap", 0, np.packbits(flat_mask).tobytes(), codes))
        positions = np.flatnonzero(flat_mask)
        for width in WIDTHS:
            data = relative_indices(positions, width).tobytes()
            out.append(_Layout(order, "relative", width, data, codes))
    return out


def _best_layout(s: Shared) -> _Layout:
    """The layout whose index and code streams code smallest, each on its own (estimated)."""
    sizes: dict[bytes, int] = {}  # the codes are the same for every layout of one scan order

    def size(raw: bytes) -> int:
        if raw not in sizes:
            sizes[raw] = _estimated_size(raw)
        return sizes[raw]

    return min(_layouts(s), key=lambda lay: size(lay.data) + size(lay.codes))


# ---- the file ----------------------------------------------------------------------------


_INT_DTYPES = {
    torch.int8: "int8", torch.uint8: "uint8", torch.int16: "int16", torch.int32: "int32",
    torch.int64: "int64", torch.bool: "bool",
}  # fmt: skip
_NP = {"int8": "<i1", "uint8": "<u1", "int16": "<i2", "int32": "<i4", "int64": "<i8", "bool": "?"}


def encode(
    model: nn.Module,
    bits: int | Mapping[str, int],
    arch: dict,
    layers: Sequence[str] | None = None,
) -> bytes:
    """The archive of `model` (its state_dict) with `bits`-bit codebooks: bytes of the file.

    arch: how to rebuild the module, {"_target_": dotted factory or class, **its keyword
    arguments} (JSON-serializable; sweep.deploy.measure.architecture makes it from a run's
    config). layers: state-dict names to share (default: every Linear and Conv weight).
    Decoding gives exactly quantize(model, bits, layers).state_dict(). Raises ArchiveError (no
    layer to compress, bits outside 1..8, a tensor float16 cannot hold or of an unsupported
    dtype)."""
    chosen = set(chosen_layers(model, layers))
    try:
        json.dumps(arch)
    except (TypeError, ValueError) as e:
        raise ArchiveError(f"the architecture is not JSON data ({e})") from None
    tensors, index, codes, values = [], [], [], []
    for name, t in model.state_dict().items():
        t = t.detach().cpu()
        entry: dict = {"name": name, "shape": list(t.shape)}
        if name in chosen:
            if not t.is_floating_point():
                raise ArchiveError(f"layer {name} is {t.dtype}, not floating point")
            s = share(t.float().numpy(), bits_for(bits, name))
            lay = _best_layout(s)
            # only what decoding needs: a bitmap's length follows from the shape, order 0 and
            # dtype float32 are defaults (the table is part of the archive's bytes)
            entry.update(kind="shared", nnz=len(s.codes), k=len(s.codebook), index=lay.index)
            if lay.index == "relative":
                entry.update(width=lay.width, entries=len(lay.data))
            if lay.order:
                entry["order"] = lay.order
            index.append(lay.data)
            codes.append(lay.codes)
            values.append(s.codebook.astype("<f2").tobytes())
        elif t.is_floating_point():
            entry["kind"] = "float16"
            if t.dtype != torch.float32:
                entry["dtype"] = str(t.dtype).removeprefix("torch.")
            values.append(to_float16(t).numpy().astype("<f2").tobytes())
        elif t.dtype in _INT_DTYPES:
            entry.update(kind=_INT_DTYPES[t.dtype])
            values.append(t.numpy().astype(_NP[entry["kind"]]).tobytes())
        else:
            raise ArchiveError(f"tensor {name} is {t.dtype}, which the archive does not store")
        tensors.append(entry)
    meta = json.dumps({"arch": arch, "tensors": tensors}, separators=(",", ":"))
    payload = b"".join(
        pack_stream(raw)
        for raw in (meta.encode(), b"".join(index), b"".join(codes), b"".join(values))
    )
    return HEADER.pack(MAGIC, VERSION, len(payload), zlib.crc32(payload)) + payload


@dataclass
class Archive:
    """A decoded archive: the architecture, the state_dict (CPU tensors), and per tensor its
    entry of the archive's table (name, shape, kind, ...)."""

    arch: dict
    state_dict: dict[str, torch.Tensor]
    tensors: list[dict]


def unpack(data: bytes, name: str = "archive") -> Archive:
    """Decode archive bytes; `name` (the file) starts every error's line. Raises ArchiveError:
    not an l1sweep archive (magic), another format version, truncated, checksum mismatch,
    malformed contents."""
    if len(data) < HEADER.size or data[:4] != MAGIC:
        what = "is empty" if not data else "is not an l1sweep archive (no L1Z magic)"
        if data[:4] == MAGIC:
            what = f"is truncated ({len(data)} bytes, shorter than the {HEADER.size}-byte header)"
        raise ArchiveError(f"{name} {what}")
    magic, version, size, crc = HEADER.unpack_from(data)
    if version != VERSION:
        raise ArchiveError(
            f"{name} is format version {version}; this l1sweep reads version {VERSION} "
            "(export it again, or use the l1sweep that wrote it)"
        )
    payload = memoryview(data)[HEADER.size :]
    if len(payload) < size:
        raise ArchiveError(f"{name} is truncated: {len(payload)} of {size} payload bytes")
    if len(payload) > size:
        raise ArchiveError(f"{name} has {len(payload) - size} bytes after its payload")
    if zlib.crc32(payload) != crc:
        raise ArchiveError(f"{name} fails its checksum (CRC32): the file is corrupted")
    try:
        return _parse(payload)
    except (ValueError, KeyError, IndexError, TypeError, lzma.LZMAError, zlib.error) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ArchiveError(f"{name} is malformed ({reason})") from None


class _Streams:
    """The index, codes and values streams of a payload, each read from its start in turn."""

    def __init__(self, index: bytes, codes: bytes, values: bytes) -> None:
        self.data = {"index": memoryview(index), "codes": memoryview(codes),
                     "values": memoryview(values)}  # fmt: skip
        self.at = dict.fromkeys(self.data, 0)

    def take(self, key: str, n: int) -> np.ndarray:
        """The next `n` bytes of stream `key` as uint8; ValueError past its end."""
        stream, at = self.data[key], self.at[key]
        if at + n > len(stream):
            raise ValueError(f"the {key} stream is too short")
        self.at[key] = at + n
        return np.frombuffer(stream[at : at + n], dtype=np.uint8)

    def done(self) -> bool:
        """Whether every byte of every stream was read."""
        return all(self.at[k] == len(v) for k, v in self.data.items())


def _parse(payload: memoryview) -> Archive:
    pos, streams = 0, []
    for _ in range(4):
        raw, pos = _unpack_stream(payload, pos)
        streams.append(raw)
    if pos != len(payload):
        raise ValueError("bytes left after the last stream")
    meta = json.loads(streams[0].decode())
    read = _Streams(*streams[1:])
    state: dict[str, torch.Tensor] = {}
    for entry in meta["tensors"]:
        shape = tuple(int(d) for d in entry["shape"])
        if entry["kind"] == "shared":
            state[entry["name"]] = _shared_tensor(entry, shape, read)
        else:
            state[entry["name"]] = _plain_tensor(entry, shape, read)
    if not read.done():
        raise ValueError("streams hold bytes no tensor reads")
    if not isinstance(meta["arch"], dict):
        raise ValueError("the architecture is not a mapping")
    return Archive(meta["arch"], state, meta["tensors"])


def _shared_tensor(entry: dict, shape: tuple[int, ...], read: _Streams) -> torch.Tensor:
    """A shared weight from its table entry: codebook, positions (bitmap or relative indices,
    in its scan order) and codes. ValueError where the streams disagree with the entry."""
    n = math.prod(shape)
    k, nnz = int(entry["k"]), int(entry["nnz"])
    codebook = read.take("values", 2 * k).view("<f2").astype(np.float32)
    bitmap = entry["index"] == "bitmap"
    raw = read.take("index", (n + 7) // 8 if bitmap else int(entry["entries"]))
    if bitmap:
        flat = np.unpackbits(raw, count=n).astype(bool)
    elif entry["index"] == "relative":
        flat = np.zeros(n, dtype=bool)
        flat[positions_from_relative(raw, int(entry["width"]), n)] = True
    else:
        raise ValueError(f"unknown index kind {entry['index']!r}")
    if int(flat.sum()) != nnz or len(flat) != n:
        raise ValueError(f"{entry['name']}: the index holds {int(flat.sum())} of {nnz}")
    code = read.take("codes", nnz)
    if nnz and int(code.max()) >= k:
        raise ValueError(f"{entry['name']}: a code exceeds its codebook")
    scanned = np.zeros(n, dtype=np.float32)
    scanned[flat] = codebook[code]
    perm = _scan(shape, int(entry.get("order", 0)))
    w = scanned.reshape([shape[a] for a in perm]).transpose(np.argsort(perm))
    return torch.from_numpy(np.ascontiguousarray(w))


def _plain_tensor(entry: dict, shape: tuple[int, ...], read: _Streams) -> torch.Tensor:
    """A float16 or integer tensor from the values stream; ValueError for an unknown kind."""
    n, kind = math.prod(shape), entry["kind"]
    if kind == "float16":
        dtype = getattr(torch, entry.get("dtype", "float32"), None)
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise ValueError(f"unknown dtype {entry['dtype']!r}")
        half = read.take("values", 2 * n).view("<f2").reshape(shape)
        return torch.from_numpy(half.astype(np.float32)).to(dtype)
    if kind in _NP:
        size = np.dtype(_NP[kind]).itemsize
        arr = read.take("values", size * n).view(_NP[kind]).reshape(shape)
        return torch.from_numpy(arr.copy())
    raise ValueError(f"unknown tensor kind {kind!r}")


def decode(data: bytes, name: str = "archive") -> dict[str, torch.Tensor]:
    """The state_dict an archive holds (CPU tensors); errors as in unpack."""
    return unpack(data, name).state_dict


# ---- the module --------------------------------------------------------------------------


def rebuild(arch: dict, allow_targets: Sequence[str] = (), name: str = "archive") -> nn.Module:
    """The module `arch` names, built by calling its `_target_` with its arguments (those the
    target's signature accepts). Outside BUILTIN_TARGETS, the target must be allowed by
    `allow_targets` (patterns as in the config's allow_targets: "mypkg.*"), checked before any
    import. Raises ArchiveError with one line otherwise."""
    target = arch.get("_target_")
    if not isinstance(target, str) or not targets.PATTERN.fullmatch(target):
        raise ArchiveError(f"{name} names no valid model _target_ ({target!r})")
    for p in allow_targets:
        if not targets.PATTERN.fullmatch(p):
            raise ArchiveError(f"allow_targets entries name a module or a target, got {p!r}")
    if not targets.is_allowed(target, BUILTIN_TARGETS + tuple(allow_targets)):
        package = target.split(".")[0]
        raise ArchiveError(
            f"{name} builds its model with {target}, code outside l1sweep, which runs only if "
            f"you allow it: load(path, allow_targets=['{package}.*'])"
        )
    try:
        factory = targets.locate(target)
    except (ImportError, AttributeError) as e:
        reason = (str(e).splitlines() or [type(e).__name__])[0]
        raise ArchiveError(f"{name}: its model {target} cannot be imported ({reason})") from None
    kwargs = {k: v for k, v in arch.items() if k != "_target_"}
    try:
        model = factory(**targets.accepted(factory, kwargs))
    except UserError as e:
        raise ArchiveError(f"{name}: {e}") from None
    except (TypeError, ValueError, RuntimeError) as e:
        reason = (str(e).splitlines() or [type(e).__name__])[0]
        raise ArchiveError(
            f"{name}: {target} cannot be built from its arguments ({reason})"
        ) from None
    if not isinstance(model, nn.Module):
        raise ArchiveError(f"{name}: {target} returned a {type(model).__name__}, not a module")
    return model


def load_state(model: nn.Module, state: dict[str, torch.Tensor], name: str = "archive") -> None:
    """Copy `state` into `model`, every key and shape checked first (one ArchiveError line)."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    if missing or extra:
        raise ArchiveError(
            f"{name} does not fit its model: "
            + "; ".join(
                f"{what} {', '.join(keys[:3])}"
                for what, keys in (("missing", missing), ("unexpected", extra))
                if keys
            )
        )
    for k, t in own.items():
        if tuple(state[k].shape) != tuple(t.shape):
            raise ArchiveError(
                f"{name}: shape mismatch for {k}: {tuple(state[k].shape)} in the archive, "
                f"{tuple(t.shape)} in the model it builds"
            )
    # load_state_dict, not a copy into state_dict()'s tensors: a module whose state_dict is
    # another view of its parameters (deployable.FoldedLinear) converts it in its hooks
    model.load_state_dict({k: state[k].to(t.dtype) for k, t in own.items()})


def read(path: str | Path, allow_targets: Sequence[str] = ()) -> nn.Module:
    """The module a model.l1z file holds, rebuilt and in eval mode (see rebuild, load_state)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ArchiveError(f"{path}: cannot read it ({e.strerror or e})") from None
    archive = unpack(data, str(path))
    model = rebuild(archive.arch, allow_targets, str(path))
    load_state(model, archive.state_dict, str(path))
    return model.eval()
