"""Export trained models for deployment, and load an exported archive back.

    python -m sweep.export DIR [--trials N [N ...] | --front | --best] [--bits N] [--epochs N]
                               [--no-onnx] [--latency-rounds N] [--latency-seconds S]
    python -m sweep.export model.l1z [--allow-targets PATTERN ...]   # check an archive

DIR is a run directory (`python -m sweep.run`), a trial directory, or a sweep directory (its
results.csv; default: the trials on the Pareto front of val_acc and sparsity). For each model
it writes `<run or trial dir>/export/`: `model.l1z` (l1sweep's compressed format,
docs/deploy.md), `model.onnx` and `model.int8.onnx` (with the `deploy` extra), the compact
model (every removed neuron, filter and input taken out, sweep.models.compact) as
`model.compact.l1z` and `model.compact.onnx` with `kept_inputs.csv` (the inputs it reads; it
takes the full inputs and gathers them itself), and `export.csv`, one row per artifact with
its bytes on disk, the accuracies of the file read back from disk, its shape and FLOPs, and
its measured latency against the dense model's (sweep.deploy.latency). A model compact cannot
follow gets no compact files, and a one-line note saying why. It reads model.pt,
results.csv and the study; it changes none of them.

In code, with torch and numpy alone (nothing here is unpickled):

    from sweep.export import load
    model = load("outputs/runs/.../export/model.l1z")   # an nn.Module in eval mode
"""

from __future__ import annotations

import argparse
import copy
import gzip
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from sweep.deploy import archive, latency
from sweep.errors import UserError
from sweep.models import compact as compact_

ARCHIVE = "model.l1z"
COMPACT = "model.compact.l1z"
KEPT_INPUTS = "kept_inputs.csv"
CSR = "model.l1z (torch CSR)"
# what the command prints of export.csv (the file has every column)
SHOWN = ["artifact", "bytes", "ratio_to_dense_fp32", "test_acc", "max_abs_logit_diff", "shape",
         "flops"]  # fmt: skip
DEPLOY_HINT = 'pip install -e ".[deploy]" (onnx, onnxscript, onnxruntime)'
COLUMNS = ["artifact", "bytes", "ratio_to_dense_fp32", "ratio_to_gzip_dense",
           "bits_per_nonzero", "val_acc", "test_acc", "max_abs_logit_diff", "argmax_agreement",
           "shape", "flops", "seconds", *latency.columns(), "note"]  # fmt: skip


def load(path: str | Path, allow_targets: Sequence[str] = ()) -> nn.Module:
    """The model a `model.l1z` archive holds: rebuilt from the architecture it names, the
    decoded weights loaded, in eval mode, on the CPU. Needs torch and numpy only; nothing is
    unpickled. A model outside l1sweep (`_target_` not under sweep.* or torch.nn.*) is built
    only if `allow_targets` allows it (patterns as in the config: ["mypkg.*"]).

    Raises ArchiveError (a UserError), one line naming the file: unreadable, not an archive
    (magic), another format version, truncated, checksum mismatch, malformed, a refused or
    unimportable model, or tensors that do not fit the model it builds."""
    return archive.read(path, allow_targets)


# ---- measuring ---------------------------------------------------------------------------


def _logits(predict: Callable[[np.ndarray], np.ndarray], x: torch.Tensor) -> np.ndarray:
    return np.concatenate([predict(x[i : i + 4096].numpy()) for i in range(0, len(x), 4096)])


def torch_predict(model: nn.Module) -> Callable[[np.ndarray], np.ndarray]:
    """predict(x): `model`'s logits (N, classes) for inputs x (N, ...) as numpy, in eval
    mode without gradients (what onnxruntime's sessions give, for one comparison)."""
    model = model.eval()

    def predict(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(x)).numpy()

    return predict


def accuracy(logits: np.ndarray, y: torch.Tensor) -> float:
    """Top-1 accuracy (0..1) of `logits` (N, classes) against labels `y` (N,)."""
    return float((logits.argmax(1) == y.numpy()).mean())


def architecture(
    model_node: object, n_inputs: int, n_classes: int, input_shape: Sequence[int]
) -> dict:
    """The `arch` an archive stores: the config's model node (a DictConfig or dict: `_target_`
    and its keys, resolved) and the data's sizes the factory accepts, as sweep.training.train.build
    passes them. Raises UserError for a model config the archive cannot name (a nested
    `_target_`, `_partial_`, `_args_`)."""
    from omegaconf import DictConfig, OmegaConf

    if isinstance(model_node, DictConfig):
        node = OmegaConf.to_container(model_node, resolve=True)
    else:
        node = dict(model_node)
    target = node.get("_target_")
    extra = [k for k in node if k.startswith("_") and k.endswith("_") and k != "_target_"]
    nested = [k for k, v in node.items() if isinstance(v, dict) and "_target_" in v]
    if not isinstance(target, str) or extra or nested:
        raise UserError(
            f"model config {node} is not one the archive can rebuild: it needs a _target_ "
            "and plain keyword arguments (no _partial_, _args_ or nested _target_)"
        )
    from sweep.config import targets

    offered = {"n_inputs": n_inputs, "n_classes": n_classes, "input_shape": list(input_shape)}
    try:
        offered = targets.accepted(targets.locate(target), offered)
    except (ImportError, AttributeError):
        pass  # run_dir's build already imported it; keep all three
    return {"_target_": target, **{k: v for k, v in node.items() if k != "_target_"}, **offered}


def archive_metrics(
    model: nn.Module,
    data: object,
    bits: int,
    arch: dict,
    epochs: int = 0,
    layers: Sequence[str] | None = None,
    path: Path | None = None,
) -> dict:
    """What a trial's archive costs and scores, for its results row: `archive_bytes` (the
    file's size), `compression` (dense fp32 state_dict bytes / archive_bytes) and
    `archive_val_acc`, `archive_test_acc` (accuracy of the weights decoded from those bytes).
    `data`: a sweep.data.Dataset. Cheap: codebook fine-tuning only where epochs > 0. With
    `path`, the archive's bytes are also written there (the file is exactly what was scored)."""
    x, y = data.x_train.cpu(), data.y_train.cpu()
    shared = archive.finetune(model, bits, x, y, epochs, layers=layers)
    blob = archive.encode(shared, bits, arch, layers)
    if path is not None:
        path.write_bytes(blob)
    decoded = copy.deepcopy(model).cpu()  # the module; its weights replaced by the decoded
    archive.load_state(decoded, archive.decode(blob))
    predict = torch_predict(decoded)
    return {
        "archive_bytes": len(blob),
        "compression": archive.dense_bytes(model) / len(blob),
        "archive_val_acc": accuracy(_logits(predict, data.x_val.cpu()), data.y_val.cpu()),
        "archive_test_acc": accuracy(_logits(predict, data.x_test.cpu()), data.y_test.cpu()),
    }


# ---- artifacts ---------------------------------------------------------------------------


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

    def compact(self) -> compact_.Deployable:
        """The shared-weight model compacted (its removed units taken out), checked on the
        validation split against the shared model; Missing (the one-line reason) where it
        cannot be."""
        if self._compact is None:
            try:
                names = getattr(self.data, "feature_names", None)
                self._compact = compact_.deployable(self.shared, self.data.x_val, names)
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


def _atomic(path: Path, write: Callable[[Path], None]) -> None:
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
    """Write model.l1z (sweep/archive.py) into `out` atomically and read it back: its bytes
    on disk and the accuracies of the decoded model."""
    path = out / ARCHIVE
    blob = archive.encode(src.shared, src.bits, src.arch)
    _atomic(path, lambda p: p.write_bytes(blob))
    model = load(path, src.allow_targets)
    return Written(path, torch_predict(model), src.shared, model)


def compact_l1z(src: Source, out: Path) -> Written:
    """The compact model (sweep.models.compact: removed neurons, filters and inputs taken out) as an
    archive that `load` reads: it takes the same inputs as the model (its first step gathers
    the kept ones). Beside it, kept_inputs.csv: the inputs it reads (position in the example,
    name). Its max_abs_logit_diff is against the masked shared-weight model."""
    small = src.compact()
    path = out / COMPACT
    blob = archive.encode(small.model, src.bits, small.arch)
    _atomic(path, lambda p: p.write_bytes(blob))
    import pandas as pd

    kept = pd.DataFrame({"index": small.arch["inputs"], "name": small.names})
    _atomic(out / KEPT_INPUTS, lambda p: kept.to_csv(p, index=False))
    model = load(path, src.allow_targets)
    return Written(path, torch_predict(model), src.shared, model)


def _onnxruntime():
    try:
        import onnx  # noqa: F401
        import onnxruntime
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise Missing(f"not written: {e.name} is not installed; {DEPLOY_HINT}") from None
    return onnxruntime


def _ort_predict(path: Path) -> Callable[[np.ndarray], np.ndarray]:
    ort = _onnxruntime()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


def onnx_fp32(src: Source, out: Path, name: str = "model.onnx", model=None) -> Written:
    """The decoded (shared-weight) model through torch.onnx.export's current (dynamo)
    exporter, one file (no external data), a dynamic batch axis."""
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

    _atomic(path, write)
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
        _atomic(path, lambda tmp: quantize_dynamic(fp32, tmp, weight_type=QuantType.QInt8))
    finally:
        root.setLevel(level)
    return Written(path, _ort_predict(path), src.shared)


# An artifact: its file name and the function that writes it into `out` and reads it back.
# A later artifact (a structurally pruned, compact model) is one more entry.
ARTIFACTS: list[tuple[str, Callable[[Source, Path], Written]]] = [
    ("model.pt", dense_pt),
    (ARCHIVE, l1z),
    ("model.onnx", onnx_fp32),
    ("model.int8.onnx", onnx_int8),
    (COMPACT, compact_l1z),
    ("model.compact.onnx", compact_onnx),
]


def compressed_nnz(model: nn.Module) -> int:
    """Nonzeros of the compressible (Linear and Conv) weights."""
    state = model.state_dict()
    return sum(int((state[n] != 0).sum()) for n in archive.compressible(model))


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
        sparse = latency.csr(load(out / ARCHIVE, src.allow_targets))
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


def _scores(written: Written, data, size, dense: int, gzipped: int, nnz: int) -> dict:
    """A file's size ratios (size None: no file) and its accuracies as read back."""
    val = _logits(written.predict, data.x_val)
    test = _logits(written.predict, data.x_test)
    ref = _logits(torch_predict(written.reference), data.x_test)
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
    gather = next((m for m in model.modules() if isinstance(m, compact_.Gather)), None)
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
    if written.module is not None:
        return latency.torch_runner(written.module)
    if written.path.suffix == ".onnx":
        return latency.ort_runner(written.path)
    return None


# ---- run directories ---------------------------------------------------------------------


def _config(run_dir: Path):
    from omegaconf import OmegaConf

    path = run_dir / ".hydra" / "config.yaml"
    if not path.is_file():
        raise UserError(f"{run_dir} has no .hydra/config.yaml: is it a run or trial directory?")
    return OmegaConf.load(path)


def _status(run_dir: Path) -> None:
    import json

    metrics = run_dir / "metrics.json"
    if not metrics.is_file():
        return
    status = json.loads(metrics.read_text()).get("status", "complete")
    if status != "complete":
        raise UserError(f"{run_dir} is a {status} run; only a complete run's model can be exported")


def source(run_dir: Path, bits: int | None, epochs: int | None, log=print) -> Source:
    """Rebuild a run's data and model from its .hydra/config.yaml and model.pt; share the
    weights (fine-tuning the codebook `epochs` epochs; None: the config's export.* or 5 bits,
    0 epochs). Raises UserError: no model, not complete, no layer to compress."""
    from sweep.config import user_code
    from sweep.task import job
    from sweep.training import train

    if not (run_dir / "model.pt").is_file():
        seeds = sorted(p.name for p in run_dir.glob("seed_*") if (p / "model.pt").is_file())
        hint = f" (a repeated run: export its {seeds[0]}/ ... )" if seeds else ""
        raise UserError(f"{run_dir} has no model.pt: nothing to export{hint}")
    _status(run_dir)
    cfg = _config(run_dir)
    node = cfg.get("export")
    bits = bits if bits is not None else int(node.bits) if node else 5
    epochs = epochs if epochs is not None else int(node.epochs) if node else 0
    if not 1 <= bits <= 8:
        raise UserError(f"--bits must be in 1..8, got {bits}")
    if epochs < 0:
        raise UserError(f"--epochs must be >= 0, got {epochs}")
    train.set_threads(cfg.train.threads)  # the run's own thread count (null: every core)
    data = job.dataset(cfg, torch.device("cpu"))
    model = train.build(cfg.model, n_inputs=data.n_inputs, n_classes=data.n_classes,
                        input_shape=data.image_shape)  # fmt: skip
    try:
        state = torch.load(run_dir / "model.pt", map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except (RuntimeError, OSError, ValueError) as e:
        reason = (str(e).splitlines() or [type(e).__name__])[0]
        raise UserError(f"{run_dir}/model.pt does not load into its model ({reason})") from None
    model.eval()
    arch = architecture(cfg.model, data.n_inputs, data.n_classes, data.image_shape)
    if epochs:
        log(f"fine-tuning the {bits}-bit codebooks {epochs} epochs on the training split")
    shared = archive.finetune(model, bits, data.x_train, data.y_train, epochs, seed=cfg.seed)
    allow = tuple(user_code.allowed(cfg.model))
    return Source(run_dir, model, shared, arch, bits, data, allow)


def export_run(
    run_dir: Path,
    bits: int | None = None,
    epochs: int | None = None,
    log: Callable[[str], None] = print,
    onnx: bool = True,
    timing: tuple[int, float] | None = (3, 0.1),
) -> list[dict]:
    """Export one run or trial directory into run_dir/export/; returns export.csv's rows.
    onnx=False: model.pt, model.l1z and model.compact.l1z only (the ONNX exporter takes most
    of the time). timing: (rounds, seconds per model and round) of the latency measurement
    (sweep.deploy.latency), None: not measured."""
    import pandas as pd

    start = time.perf_counter()
    src = source(run_dir, bits, epochs, log)
    out = run_dir / "export"
    chosen = None if onnx else ["model.pt", ARCHIVE, COMPACT]
    rows = measure_artifacts(src, out, chosen, timing)
    frame = pd.DataFrame(rows)
    frame = frame[[c for c in COLUMNS if c in frame] + [c for c in frame if c not in COLUMNS]]
    _atomic(out / "export.csv", lambda p: frame.to_csv(p, index=False))
    log(f"{out} ({src.bits} bits, {time.perf_counter() - start:.1f} s):")
    shown = [c for c in SHOWN if c in frame] + [c for c in frame if c.startswith("speedup_")]
    log(frame[shown].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    for row in rows:
        if row.get("note"):
            log(f"{row['artifact']}: {row['note']}")
    return rows


def chosen_runs(path: Path, trials: Sequence[int] | None, front: bool, best: bool) -> list[Path]:
    """The run directories DIR stands for: itself (a run or trial), or a sweep's trials."""
    if not path.is_dir():
        raise UserError(f"{path} is not a directory; pass a run, trial or sweep directory")
    if not (path / "results.csv").is_file():
        if trials or front or best:
            raise UserError(f"{path} is not a sweep directory (no results.csv): drop "
                            "--trials/--front/--best to export the run itself")  # fmt: skip
        return [path]
    from sweep import analyze

    frame = analyze.load([path])
    if trials:
        rows = []
        for t in trials:
            match = frame.index[frame["trial"] == t]
            if not len(match):
                raise UserError(f"{path} has no trial {t}; its trials: "
                                f"{', '.join(map(str, sorted(frame['trial'])))}")  # fmt: skip
            status = frame.loc[match[0], "status"]
            if status != "complete":
                raise UserError(f"trial {t} of {path} is {status}; only a complete trial's "
                                "model can be exported")  # fmt: skip
            rows.append(match[0])
    elif best:
        rows = [analyze.best(frame)[0]]
    else:
        rows = list(frame.index[analyze.pareto_front(frame)])
        if not rows:
            raise UserError(f"{path} has no complete trial to export")
    return [analyze._trial_dir(frame.loc[i]) for i in rows]


def describe(path: Path, allow_targets: Sequence[str] = ()) -> str:
    """What an archive holds, checked by loading it: its model and, per tensor, how it is
    stored. Raises ArchiveError as load does."""
    model = load(path, allow_targets)
    table = archive.unpack(path.read_bytes(), str(path)).tensors
    lines = [f"{path}: {os.path.getsize(path)} bytes, l1sweep archive version "
             f"{archive.VERSION}, model {type(model).__name__} loads"]  # fmt: skip
    for e in table:
        how = (f"{e['nnz']} nonzeros, {e['k']} shared values, {e['index']} index"
               if e["kind"] == "shared" else e["kind"])  # fmt: skip
        lines.append(f"  {e['name']} {tuple(e['shape'])}: {how}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m sweep.export DIR [options]`: the chosen runs exported, export.csv written;
    0 on success, 2 with one line on bad input (a bad file, no such run)."""
    parser = argparse.ArgumentParser(
        prog="python -m sweep.export",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "dir", type=Path, help="a run, trial or sweep directory; or a model.l1z file to check"
    )
    parser.add_argument(
        "--allow-targets",
        nargs="+",
        default=[],
        metavar="PATTERN",
        help="checking a file: model code outside l1sweep it may run (mypkg.*)",
    )
    pick = parser.add_mutually_exclusive_group()
    pick.add_argument("--trials", type=int, nargs="+", help="a sweep's trials, by number")
    pick.add_argument(
        "--front",
        action="store_true",
        help="the sweep's Pareto front of (val_acc, sparsity) (the default)",
    )
    pick.add_argument("--best", action="store_true", help="the sweep's best trial")
    parser.add_argument("--bits", type=int, help="codebook bits, 1..8 (default: export.bits)")
    parser.add_argument("--epochs", type=int,
                        help="codebook fine-tuning epochs (default: export.epochs)")  # fmt: skip
    parser.add_argument("--no-onnx", action="store_true",
                        help="write the .l1z files only, not the ONNX files (faster)")  # fmt: skip
    parser.add_argument("--latency-rounds", type=int, default=3, metavar="N",
                        help="alternating timing rounds per model and configuration "
                             "(default 3; 0: no latency columns)")  # fmt: skip
    parser.add_argument("--latency-seconds", type=float, default=0.1, metavar="S",
                        help="seconds of calls per model and round (default 0.1)")  # fmt: skip
    args = parser.parse_args(argv)
    try:
        if args.dir.is_file():
            print(describe(args.dir, args.allow_targets))
            return 0
        if args.latency_rounds < 0 or args.latency_seconds <= 0:
            raise UserError("--latency-rounds must be >= 0 and --latency-seconds > 0")
        for run_dir in chosen_runs(args.dir, args.trials, args.front, args.best):
            timing = (args.latency_rounds, args.latency_seconds) if args.latency_rounds else None
            export_run(run_dir, args.bits, args.epochs, onnx=not args.no_onnx, timing=timing)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
