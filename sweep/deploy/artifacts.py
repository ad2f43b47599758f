"""The deployment artifacts of a trained model, each written into an export directory, read
back from disk and measured (one export.csv row each, COLUMNS):

    model.pt            the run's own dense fp32 state_dict (the baseline; not rewritten)
    model.l1z           the shared-weight model in l1sweep's format (sweep.deploy.archive)
    model.onnx          the shared-weight model as ONNX fp32 (the `deploy` extra)
    model.int8.onnx     model.onnx with int8 weights (onnxruntime's dynamic quantization)
    model.compact.l1z   the compact model (sweep.models.compact), with kept_inputs.csv
    model.compact.onnx  the compact model as ONNX fp32

`Source` is what they are made from, `Written` a file on disk, `Missing` the one-line reason a
file is not written (no deploy extra, no compact model, or an exporter that fails on this
model); `measure_artifacts` writes and measures them all. Every file is written through a
temporary file and renamed (`write_atomic`), with the mode the umask gives (as model.pt has):
no half-written artifact. `write_dir` replaces a whole export directory as a unit.

The ONNX files take x of the dense model's input shape, (batch, *input_shape) as the data
gives it (digits: (batch, 8, 8)); their opset is torch.onnx's default or `Source.opset`
(`check_opset`), their IR version the lowest that opset allows. Each row's `input` says which
batch shapes the file takes, as tried on the file read back.
"""

from __future__ import annotations

import gzip
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from sweep.deploy import archive, latency
from sweep.deploy.files import (
    ARCHIVE,
    COMPACT,
    KEPT_INPUTS,
    Missing,
    Source,
    Written,
    write_atomic,
)
from sweep.deploy.measure import accuracy, compressed_nnz, logits_of, torch_predict
from sweep.deploy.onnx_files import compact_onnx, onnx_fp32, onnx_int8
from sweep.models import compact as compact_
from sweep.models import deployable
from sweep.models.cost import eval_batch

CSR = "model.l1z (torch CSR)"
COLUMNS = ["artifact", "bytes", "ratio_to_dense_fp32", "ratio_to_gzip_dense",
           "bits_per_nonzero", "val_acc", "test_acc", "max_abs_logit_diff", "argmax_agreement",
           "shape", "flops", "input", "opset", "ir_version", "seconds", *latency.columns(),
           "note"]  # fmt: skip


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
    if not small.arch:
        raise Missing("not written: a compact archive rebuilds networks of sweep.models only; "
                      "model.compact.onnx holds this one")  # fmt: skip
    path = out / COMPACT
    blob = archive.encode(small.model, src.bits, small.arch)
    write_atomic(path, lambda p: p.write_bytes(blob))
    import pandas as pd

    if "inputs" in small.arch:  # a conv net cut through its graph reads every input
        kept = pd.DataFrame({"index": small.arch["inputs"], "name": small.names})
        write_atomic(out / KEPT_INPUTS, lambda p: kept.to_csv(p, index=False))
    model = archive.read(path, src.allow_targets)
    return Written(path, torch_predict(model), src.shared, model)


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
                     "input": _takes(written, src.example), **written.format,
                     "seconds": seconds, "note": ""})  # fmt: skip
        timed[name] = _runner(written)
    if ARCHIVE in timed and latency.linear_zeros(src.shared) >= 0.5:  # unstructured zeros
        sparse = latency.csr(archive.read(out / ARCHIVE, src.allow_targets))
        written = Written(out / ARCHIVE, torch_predict(sparse), src.shared, sparse)
        rows.append({"artifact": CSR, **_scores(written, data, None, len(dense), gzipped, nnz),
                     **_structure(src.shared, shape), "input": _takes(written, src.example),
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
    batch = eval_batch(written.reference)
    val = logits_of(written.predict, data.x_val, batch)
    test = logits_of(written.predict, data.x_test, batch)
    ref = logits_of(torch_predict(written.reference), data.x_test, batch)
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
    n_in = deployable.n_read(model) or math.prod(input_shape)
    params = [m for m in model.modules() if isinstance(m, compact_.PARAM_LAYERS)]
    widths = [n_in] + [m.weight.shape[0] for m in params]
    return {"shape": "-".join(map(str, widths)), "flops": compact_.flops(model, input_shape)}


def _batch_shape(dims: Sequence[object]) -> str:
    """'(batch, 8, 8)': a batch of inputs, its first axis the batch."""
    return "(" + ", ".join(["batch", *map(str, dims)]) + ")"


def _takes(written: Written, example: torch.Tensor) -> str:
    """The batch shapes a written file takes: an ONNX file the one its input declares; a torch
    module the data's (batch, *input_shape) and, where it gives the same logits on it, the
    flat (batch, n_inputs) too (tried on two examples of the module read back)."""
    if written.path.suffix == ".onnx":
        import onnx

        graph = onnx.load(str(written.path), load_external_data=False).graph
        dims = graph.input[0].type.tensor_type.shape.dim
        return "(" + ", ".join(d.dim_param or str(d.dim_value) for d in dims) + ")"
    shape, flat = tuple(example.shape[1:]), math.prod(example.shape[1:])
    forms = [_batch_shape(shape)]
    if len(shape) > 1 and written.module is not None:
        try:
            with torch.no_grad():
                same = torch.allclose(written.module(example.reshape(len(example), flat)),
                                      written.module(example), atol=1e-6)  # fmt: skip
        except Exception:  # the module's own forward refuses the flat form
            same = False
        if same:
            forms.append(_batch_shape((flat,)))
    return " or ".join(forms)


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
