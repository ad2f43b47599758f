"""The deployment artifacts of a trained model, each written into an export directory, read
back from disk and measured (one export.csv row each, COLUMNS):

    model.pt            the run's own dense fp32 state_dict (the baseline; not rewritten)
    model.l1z           the shared-weight model in l1sweep's format (sweep.deploy.archive)
    model.onnx          the shared-weight model as ONNX fp32 (the `deploy` extra)
    model.int8.onnx     model.onnx with int8 weights (onnxruntime's dynamic quantization)
    model.compact.l1z   the compact model (sweep.models.compact), with kept_inputs.csv
    model.compact.onnx  the compact model as ONNX fp32

`Source` is what they are made from, `Written` a file on disk, `Missing` the one-line reason a
file is not written; `measure_artifacts` writes and measures them all. Every file is written
through a temporary file and renamed (`write_atomic`): no half-written artifact.
"""

from __future__ import annotations

import gzip
import math
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
import torch.nn as nn

from sweep.deploy import archive, latency
from sweep.deploy.measure import accuracy, compressed_nnz, logits_of, torch_predict
from sweep.models import compact as compact_
from sweep.models import deployable

ARCHIVE = "model.l1z"
COMPACT = "model.compact.l1z"
KEPT_INPUTS = "kept_inputs.csv"
CSR = "model.l1z (torch CSR)"
DEPLOY_HINT = 'pip install -e ".[deploy]" (onnx, onnxscript, onnxruntime)'
COLUMNS = ["artifact", "bytes", "ratio_to_dense_fp32", "ratio_to_gzip_dense",
           "bits_per_nonzero", "val_acc", "test_acc", "max_abs_logit_diff", "argmax_agreement",
           "shape", "flops", "seconds", *latency.columns(), "note"]  # fmt: skip


@dataclass
class Source:
    """What the artifacts are made from: the trained model (from model.pt), its shared-weight
    version (what the archive stores), the data, and how to rebuild the module."""

    run_dir: Path
    trained: nn.Module
    shared: nn.Module
    arch: dict
    bits: int
    data: object  # sweep.data.Dataset, on the CPU
    allow_targets: tuple[str, ...] = ()
    example: torch.Tensor = field(init=False)
    _compact: object = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.example = self.data.x_val[:2]

    def compact(self) -> deployable.Deployable:
        """The shared-weight model compacted (its removed units taken out), checked on the
        validation split against the shared model; Missing (the one-line reason) where it
        cannot be."""
        if self._compact is None:
            try:
                names = getattr(self.data, "feature_names", None)
                self._compact = deployable.deployable(self.shared, self.data.x_val, names)
            except compact_.CannotCompact as e:
                self._compact = Missing(f"no compact model: {e}")
        if isinstance(self._compact, Missing):
            raise self._compact
        return self._compact


@dataclass
class Written:
    """An artifact on disk: its file, how to run the file as read back from disk, and the
    in-memory model it was made from (max_abs_logit_diff is against it)."""

    path: Path
    predict: Callable[[np.ndarray], np.ndarray]
    reference: nn.Module
    module: nn.Module | None = None  # the torch module read back (for timing), if any
    holds: nn.Module | None = None  # the model the file holds (shape, flops); else reference


class Missing(Exception):
    """An artifact that cannot be written here; its message is the row's note."""


def write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Write through a temporary file beside `path`, then rename: no half-written artifact."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def dense_pt(src: Source, out: Path) -> Written:
    """The run's own model.pt (dense fp32): the baseline, read back with weights_only."""
    path = src.run_dir / "model.pt"
    model = archive.rebuild(src.arch, src.allow_targets, str(path))
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return Written(path, torch_predict(model.eval()), src.trained, model)


def l1z(src: Source, out: Path) -> Written:
    """Write model.l1z (sweep.deploy.archive) into `out` atomically and read it back: its bytes
    on disk and the accuracies of the decoded model."""
    path = out / ARCHIVE
    blob = archive.encode(src.shared, src.bits, src.arch)
    write_atomic(path, lambda p: p.write_bytes(blob))
    model = archive.read(path, src.allow_targets)
    return Written(path, torch_predict(model), src.shared, model)


def compact_l1z(src: Source, out: Path) -> Written:
    """The compact model (sweep.models.compact: removed neurons, filters and inputs taken out)
    as an archive that sweep.export.load reads: it takes the same inputs as the model (its
    first step gathers the kept ones). Beside it, kept_inputs.csv: the inputs it reads
    (position in the example, name). Its max_abs_logit_diff is against the masked
    shared-weight model."""
    small = src.compact()
    path = out / COMPACT
    blob = archive.encode(small.model, src.bits, small.arch)
    write_atomic(path, lambda p: p.write_bytes(blob))
    import pandas as pd

    kept = pd.DataFrame({"index": small.arch["inputs"], "name": small.names})
    write_atomic(out / KEPT_INPUTS, lambda p: kept.to_csv(p, index=False))
    model = archive.read(path, src.allow_targets)
    return Written(path, torch_predict(model), src.shared, model)


def _onnxruntime() -> ModuleType:
    """onnxruntime, once onnx and onnxscript import too; Missing (the install hint) else."""
    try:
        import onnx  # noqa: F401
        import onnxruntime
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise Missing(f"not written: {e.name} is not installed; {DEPLOY_HINT}") from None
    return onnxruntime


def _ort_predict(path: Path) -> Callable[[np.ndarray], np.ndarray]:
    """predict(x): the ONNX file's logits through an onnxruntime CPU session."""
    ort = _onnxruntime()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


def onnx_fp32(
    src: Source, out: Path, name: str = "model.onnx", model: nn.Module | None = None
) -> Written:
    """The decoded (shared-weight) model, or `model`, through torch.onnx.export's current
    (dynamo) exporter as out/name: one file (no external data), a dynamic batch axis. Missing
    without the `deploy` extra."""
    _onnxruntime()
    path = out / name
    model = src.shared if model is None else model
    import logging
    import warnings

    def write(tmp: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            logging.getLogger("torch.onnx").setLevel(logging.ERROR)
            torch.onnx.export(
                model.eval(), (src.example,), str(tmp), dynamo=True, external_data=False,
                input_names=["x"], output_names=["logits"], verbose=False,
                dynamic_shapes=({0: torch.export.Dim("batch")},),
            )  # fmt: skip

    write_atomic(path, write)
    return Written(path, _ort_predict(path), src.shared)


def compact_onnx(src: Source, out: Path) -> Written:
    """The compact model as ONNX (fp32), its logits against the masked shared model."""
    try:
        small = src.compact()
    except Missing:
        raise Missing(f"not written: no compact model ({COMPACT} says why)") from None
    written = onnx_fp32(src, out, "model.compact.onnx", small.model)
    written.holds = small.model
    return written


def onnx_int8(src: Source, out: Path) -> Written:
    """model.onnx with int8 weights, by onnxruntime's dynamic quantization (activations
    quantized at run time)."""
    _onnxruntime()
    from onnxruntime.quantization import QuantType, quantize_dynamic

    fp32 = out / "model.onnx"
    if not fp32.is_file():
        raise Missing("not written: model.onnx was not written")
    path = out / "model.int8.onnx"
    import logging

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # quantize_dynamic's hint to pre-process, on every call
    try:
        write_atomic(path, lambda tmp: quantize_dynamic(fp32, tmp, weight_type=QuantType.QInt8))
    finally:
        root.setLevel(level)
    return Written(path, _ort_predict(path), src.shared)


# An artifact: its file name and the function that writes it into `out` and reads it back.
# A new artifact is one more entry.
ARTIFACTS: list[tuple[str, Callable[[Source, Path], Written]]] = [
    ("model.pt", dense_pt),
    (ARCHIVE, l1z),
    ("model.onnx", onnx_fp32),
    ("model.int8.onnx", onnx_int8),
    (COMPACT, compact_l1z),
    ("model.compact.onnx", compact_onnx),
]


def measure_artifacts(
    src: Source,
    out: Path,
    artifacts: Sequence[str] | None = None,
    timing: tuple[int, float] | None = None,
) -> list[dict]:
    """Write every artifact into `out`, read each back from disk and measure it: one row each
    (COLUMNS). Sizes are os.path.getsize; ratios are against model.pt and its gzip -9.
    `shape` and `flops` (multiply-adds per example, sweep.models.compact.flops) are of the model the
    file holds. Where half the Linear weights or more are zeros (an unstructured model), a row
    CSR (model.l1z's weights as torch.sparse_csr, in memory: no file). timing=(repeats,
    seconds): the latency columns (sweep.deploy.latency) of every model, measured in alternation;
    None: not measured."""
    out.mkdir(parents=True, exist_ok=True)
    dense = (src.run_dir / "model.pt").read_bytes()
    gzipped = len(gzip.compress(dense, compresslevel=9, mtime=0))
    nnz = compressed_nnz(src.trained)
    data = src.data
    rows, timed = [], {}
    shape = tuple(data.x_val.shape[1:])
    for name, make in ARTIFACTS:
        if artifacts is not None and name not in artifacts:
            continue
        start = time.perf_counter()
        try:
            written = make(src, out)
        except Missing as e:
            rows.append({"artifact": name, "note": str(e)})
            continue
        seconds = time.perf_counter() - start
        rows.append({"artifact": name, **_scores(written, data, os.path.getsize(written.path),
                                                 len(dense), gzipped, nnz),
                     **_structure(_held(written), shape),
                     "seconds": seconds, "note": ""})  # fmt: skip
        timed[name] = _runner(written)
    if ARCHIVE in timed and latency.linear_zeros(src.shared) >= 0.5:  # unstructured zeros
        sparse = latency.csr(archive.read(out / ARCHIVE, src.allow_targets))
        written = Written(out / ARCHIVE, torch_predict(sparse), src.shared, sparse)
        rows.append({"artifact": CSR, **_scores(written, data, None, len(dense), gzipped, nnz),
                     **_structure(src.shared, shape),
                     "note": f"in memory: {ARCHIVE}'s Linear weights as torch.sparse_csr "
                             "(torch's sparse kernels)"})  # fmt: skip
        timed[CSR] = latency.torch_runner(sparse)
    if timing and "model.pt" in timed:
        timed = {k: v for k, v in timed.items() if v is not None}
        x = data.x_test[:256].numpy()
        measured = latency.measure(timed, x, "model.pt", *timing)
        for row in rows:
            row.update(measured.get(row["artifact"], {}))
    return rows


def _scores(
    written: Written, data: object, size: int | None, dense: int, gzipped: int, nnz: int
) -> dict:
    """A file's size ratios (size None: no file) and its accuracies as read back."""
    val = logits_of(written.predict, data.x_val)
    test = logits_of(written.predict, data.x_test)
    ref = logits_of(torch_predict(written.reference), data.x_test)
    sizes = {}
    if size is not None:
        sizes = {"bytes": size, "ratio_to_dense_fp32": dense / size,
                 "ratio_to_gzip_dense": gzipped / size,
                 "bits_per_nonzero": 8 * size / nnz if nnz else math.nan}  # fmt: skip
    return {
        **sizes, "val_acc": accuracy(val, data.y_val), "test_acc": accuracy(test, data.y_test),
        "max_abs_logit_diff": float(np.abs(test - ref).max()),
        "argmax_agreement": float((test.argmax(1) == ref.argmax(1)).mean()),
    }  # fmt: skip


def _structure(model: nn.Module, input_shape: tuple[int, ...]) -> dict:
    """`shape` ('777-32-10': inputs read, then each layer's units) and `flops` of a model."""
    gather = next((m for m in model.modules() if isinstance(m, deployable.Gather)), None)
    n_in = len(gather.index) if gather is not None else math.prod(input_shape)
    params = [m for m in model.modules() if isinstance(m, compact_.PARAM_LAYERS)]
    widths = [n_in] + [m.weight.shape[0] for m in params]
    return {"shape": "-".join(map(str, widths)), "flops": compact_.flops(model, input_shape)}


def _held(written: Written) -> nn.Module:
    """The in-memory model a written file holds."""
    for model in (written.module, written.holds):
        if model is not None:
            return model
    return written.reference


def _runner(written: Written) -> latency.Runner | None:
    """How latency times a written file: its torch module, an ONNX session, or not at all."""
    if written.module is not None:
        return latency.torch_runner(written.module)
    if written.path.suffix == ".onnx":
        return latency.ort_runner(written.path)
    return None
