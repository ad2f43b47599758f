"""The ONNX files of an export: model.onnx (fp32), model.int8.onnx (onnxruntime's dynamic
quantization) and model.compact.onnx, written with torch.onnx's exporter (the `deploy` extra)
and run back from disk with onnxruntime.

They take x of the dense model's input shape, (batch, *input_shape) as the data gives it
(digits: (batch, 8, 8)); their opset is torch.onnx's default or `Source.opset` (`check_opset`),
their IR version the lowest that opset allows. An exporter that fails on a model is a
`Missing` with its one-line reason, not a traceback.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
import torch.nn as nn

from sweep.deploy.files import COMPACT, DEPLOY_HINT, Missing, Source, Written, write_atomic
from sweep.errors import UserError


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


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Everything written to stdout and stderr in the block discarded, Python's and the
    libraries' own (file descriptors 1 and 2): torch.onnx's exporter prints its progress, the
    graphs it could not trace and its converters' fallbacks, and onnxruntime's quantizer its
    hints. What went wrong comes back as the exception, said in one line (`_reason`)."""
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved = [os.dup(1), os.dup(2)]
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
        os.dup2(null, 2)
        with open(os.devnull, "w") as sink:
            with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
                yield
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, null):
            os.close(fd)


ANSI = re.compile(r"\x1b\[[0-9;]*m")
# torch.export names the user's line that it could not trace after this
WHERE = re.compile(r'File "([^"]+)", line (\d+), in (\S+)\n\s*(\S[^\n]*)')


def _reason(e: BaseException) -> str:
    """An exporter's exception in one line: its innermost cause's type and first line, and
    the model's line that torch.export names, if it names one."""
    inner = e
    while inner.__cause__ is not None:
        inner = inner.__cause__
    text = ANSI.sub("", str(inner))
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    what = f"{type(inner).__name__}: {first}" if first else type(inner).__name__
    where = WHERE.search(ANSI.sub("", f"{e}\n{inner}"))
    if where:
        file, line, function, code = where.groups()
        what += f" (at {file}:{line} in {function}: {code.strip()})"
    return what


def _onnx_format(path: Path) -> dict:
    """An ONNX file's opset (the default ai.onnx domain's) and IR version, as the file says."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    return {"opset": opset, "ir_version": model.ir_version}


def _lowest_ir(path: Path) -> None:
    """Rewrite the ONNX file with the lowest IR version its opsets allow (the onnx package's
    table), where that is below the exporter's (torch writes IR 10 whatever the opset, which
    runtimes older than its opset need not read), if the file still checks at that version."""
    import onnx
    from onnx import checker, helper

    model = onnx.load(str(path))
    lowest = helper.find_min_ir_version_for(list(model.opset_import))
    if lowest >= model.ir_version:
        return
    exported = model.ir_version
    model.ir_version = lowest
    try:
        checker.check_model(model)
    except checker.ValidationError:
        model.ir_version = exported
        return
    onnx.save(model, str(path))


def _export_onnx(model: nn.Module, example: torch.Tensor, path: Path, opset: int | None) -> None:
    """torch.onnx.export's current (dynamo) exporter, quietly: one file, input x with a
    dynamic batch axis, output logits, at `opset` (None: the exporter's default)."""
    import logging
    import warnings

    with _quiet(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        torch.onnx.export(
            model.eval(), (example,), str(path), dynamo=True, external_data=False,
            input_names=["x"], output_names=["logits"], verbose=False, opset_version=opset,
            dynamic_shapes=({0: torch.export.Dim("batch")},),
        )  # fmt: skip


def onnx_fp32(
    src: Source, out: Path, name: str = "model.onnx", model: nn.Module | None = None
) -> Written:
    """The decoded (shared-weight) model, or `model`, through torch.onnx.export's current
    (dynamo) exporter as out/name: one file (no external data), a dynamic batch axis, at
    src.opset (None: the exporter's default), the lowest IR version that opset allows.
    Missing without the `deploy` extra, where the exporter fails on the model (one line:
    why, and the model's line it names), or where it cannot convert the model to src.opset."""
    _onnxruntime()
    path = out / name
    model = src.shared if model is None else model
    what = type(model).__name__

    def write(tmp: Path) -> None:
        try:
            _export_onnx(model, src.example, tmp, src.opset)
        except Exception as e:  # the exporter's failure on this model, not this program's
            raise Missing(f"not written: torch.onnx.export cannot export {what}: "
                          f"{_reason(e)}") from None  # fmt: skip
        got = _onnx_format(tmp)["opset"]
        if src.opset is not None and got != src.opset:  # the exporter keeps its own opset
            raise Missing(f"not written: torch.onnx.export could not convert {what} to opset "
                          f"{src.opset} (it wrote opset {got})")  # fmt: skip
        _lowest_ir(tmp)

    write_atomic(path, write)
    return Written(path, _ort_predict(path), src.shared, format=_onnx_format(path))


def check_opset(opset: int) -> None:
    """UserError (one line, with the opsets it does write) unless torch.onnx's exporter here
    writes ONNX opset `opset`: tried on a small model (Flatten, Linear, ReLU, a dynamic batch),
    since the exporter silently keeps its own opset where it cannot convert to the one asked.
    Nothing to check (the ONNX rows say what to install) without the deploy extra."""
    try:
        _onnxruntime()
    except Missing:
        return
    import onnx

    def writes(version: int) -> bool:
        probe = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU())
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "probe.onnx"
            try:
                _export_onnx(probe, torch.zeros(2, 2, 2), path, version)
            except Exception:
                return False
            return _onnx_format(path)["opset"] == version

    newest = onnx.defs.onnx_opset_version()  # the newest the onnx package (its converter) knows
    exporter = f"torch {torch.__version__.split('+')[0]}'s ONNX exporter (onnx {onnx.__version__})"
    if 0 < opset <= newest and writes(opset):
        return
    if opset > newest:
        low = None
    else:  # the lowest opset it writes, above the one asked (bisected: a few exports)
        low, high = max(opset + 1, 1), newest
        while low < high:
            middle = (low + high) // 2
            low, high = (low, middle) if writes(middle) else (middle + 1, high)
    span = f"opsets {low}..{newest}" if low is not None else f"opsets up to {newest}"
    raise UserError(f"--opset {opset}: {exporter} does not write opset {opset} here; it "
                    f"writes {span}: choose one of those, or leave --opset out for its default"
                    )  # fmt: skip


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
    quantized at run time). Missing where model.onnx is not written, or the quantizer fails."""
    _onnxruntime()
    from onnxruntime.quantization import QuantType, quantize_dynamic

    fp32 = out / "model.onnx"
    if not fp32.is_file():
        raise Missing("not written: model.onnx was not written")
    path = out / "model.int8.onnx"
    import logging

    def write(tmp: Path) -> None:
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # quantize_dynamic's hint to pre-process, on every call
        try:
            with _quiet():
                quantize_dynamic(fp32, tmp, weight_type=QuantType.QInt8)
        except Exception as e:  # the quantizer's failure on this model
            raise Missing(f"not written: onnxruntime's quantize_dynamic failed: {_reason(e)}"
                          ) from None  # fmt: skip
        finally:
            root.setLevel(level)

    write_atomic(path, write)
    return Written(path, _ort_predict(path), src.shared, format=_onnx_format(path))


# An artifact: its file name and the function that writes it into `out` and reads it back.
# A new artifact is one more entry.
