"""Export trained models for deployment, and load an exported archive back.

    python -m sweep.export DIR [--trials N [N ...] | --front | --best] [--bits N] [--epochs N]
                               [--no-onnx | --opset N] [--latency-rounds N] [--latency-seconds S]
    python -m sweep.export model.l1z [--allow-targets PATTERN ...]   # check an archive

DIR is a run directory (`python -m sweep.run`), a trial directory, or a sweep directory (its
results.csv; default: the trials on the Pareto front of val_acc and sparsity; a copied or
moved sweep's trials are read and exported where they are now, beside its results.csv). For
each model it writes `<run or trial dir>/export/`: `model.l1z` (l1sweep's compressed format,
docs/deploy.md), `model.onnx` and `model.int8.onnx` (with the `deploy` extra; opset: --opset,
else torch.onnx's default), the compact model (every removed neuron, filter and input taken
out, sweep.models.compact) as `model.compact.l1z` and `model.compact.onnx` with
`kept_inputs.csv` (the inputs it reads; it takes the full inputs and gathers them itself), and
`export.csv`, one row per artifact with its bytes on disk, the accuracies of the file read
back from disk, its shape and FLOPs, the batch shapes it takes, an ONNX file's opset and IR
version, and its measured latency against the dense model's (sweep.deploy.latency). The
directory is replaced as a whole: it holds exactly the files export.csv lists (and
kept_inputs.csv), as readable as model.pt. A file that cannot be written here (a model compact
cannot follow, a model the ONNX exporter cannot trace) gets a one-line note saying why, and
the rest are written. It reads model.pt, results.csv and the study; it changes none of them.

In code, with torch and numpy alone (nothing here is unpickled):

    from sweep.export import load
    model = load("outputs/runs/.../export/model.l1z")   # an nn.Module in eval mode
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn as nn

from sweep.deploy import archive, artifacts, codebook, files, measure, onnx_files
from sweep.deploy.artifacts import ARCHIVE, COMPACT, Source
from sweep.errors import UserError

if TYPE_CHECKING:
    import pandas as pd
    from omegaconf import DictConfig

# What the command prints of export.csv (the file has every column, artifacts.COLUMNS).
SHOWN = ["artifact", "bytes", "ratio_to_dense_fp32", "test_acc", "max_abs_logit_diff", "shape",
         "flops", "opset", "ir_version"]  # fmt: skip
# Latency timing by default: rounds, and seconds of calls per model and round.
LATENCY_ROUNDS, LATENCY_SECONDS = 3, 0.1
# The root config, whose export.* a run written before that node existed falls back to.
ROOT_CONFIG = Path(__file__).resolve().parent.parent / "conf" / "config.yaml"


def load(path: str | Path, allow_targets: Sequence[str] = ()) -> nn.Module:
    """The model a `model.l1z` archive holds: rebuilt from the architecture it names, the
    decoded weights loaded, in eval mode, on the CPU. Needs torch and numpy only; nothing is
    unpickled. A model outside l1sweep (`_target_` not under sweep.* or torch.nn.*) is built
    only if `allow_targets` allows it (patterns as in the config: ["mypkg.*"]).

    Raises ArchiveError (a UserError), one line naming the file: unreadable, not an archive
    (magic), another format version, truncated, checksum mismatch, malformed, a refused or
    unimportable model, or tensors that do not fit the model it builds."""
    return archive.read(path, allow_targets)


# ---- run directories ---------------------------------------------------------------------


def _config(run_dir: Path) -> DictConfig:
    """A run's .hydra/config.yaml; UserError where it has none."""
    from omegaconf import OmegaConf

    path = run_dir / ".hydra" / "config.yaml"
    if not path.is_file():
        raise UserError(f"{run_dir} has no .hydra/config.yaml: is it a run or trial directory?")
    return OmegaConf.load(path)


def _status(run_dir: Path) -> None:
    """UserError unless the run completed (metrics.json's status; none: an older run)."""
    import json

    metrics = run_dir / "metrics.json"
    if not metrics.is_file():
        return
    status = json.loads(metrics.read_text()).get("status", "complete")
    if status != "complete":
        raise UserError(f"{run_dir} is a {status} run; only a complete run's model can be exported")


def _root_export() -> DictConfig:
    """conf/config.yaml's export node (bits, epochs): the defaults, written once there."""
    from omegaconf import OmegaConf

    return OmegaConf.load(ROOT_CONFIG).export


def source(
    run_dir: Path,
    bits: int | None,
    epochs: int | None,
    log: Callable[[str], None] = print,
) -> Source:
    """Rebuild a run's data and model from its .hydra/config.yaml and model.pt; share the
    weights (fine-tuning the codebook `epochs` epochs; None: the run config's export.*, or
    conf/config.yaml's for a run written before export.* existed). Raises UserError: no
    model, not complete, no layer to compress, bits outside 1..8, negative epochs."""
    from sweep.config import user_code
    from sweep.task import job
    from sweep.training import train

    if not (run_dir / "model.pt").is_file():
        seeds = sorted(p.name for p in run_dir.glob("seed_*") if (p / "model.pt").is_file())
        hint = f" (a repeated run: export its {seeds[0]}/ ... )" if seeds else ""
        raise UserError(f"{run_dir} has no model.pt: nothing to export{hint}")
    _status(run_dir)
    cfg = _config(run_dir)
    node = cfg.get("export") or _root_export()
    bits = bits if bits is not None else int(node.bits)
    epochs = epochs if epochs is not None else int(node.epochs)
    if bits not in codebook.BITS:
        raise UserError(f"--bits must be in {codebook.BITS[0]}..{codebook.BITS[-1]}, got {bits}")
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
    arch = measure.architecture(cfg.model, data.n_inputs, data.n_classes, data.image_shape)
    if epochs:
        log(f"fine-tuning the {bits}-bit codebooks {epochs} epochs on the training split")
    shared = codebook.finetune(model, bits, data.x_train, data.y_train, epochs, seed=cfg.seed)
    allow = tuple(user_code.allowed(cfg.model))
    return Source(run_dir, model, shared, arch, bits, data, allow)


def export_run(
    run_dir: Path,
    bits: int | None = None,
    epochs: int | None = None,
    log: Callable[[str], None] = print,
    onnx: bool = True,
    timing: tuple[int, float] | None = (LATENCY_ROUNDS, LATENCY_SECONDS),
    opset: int | None = None,
) -> list[dict]:
    """Export one run or trial directory into run_dir/export/; returns export.csv's rows.
    onnx=False: model.pt, model.l1z and model.compact.l1z only (the ONNX exporter takes most
    of the time). timing: (rounds, seconds per model and round) of the latency measurement
    (sweep.deploy.latency), None: not measured. opset: the ONNX files' (None: torch.onnx's
    default; check it first with onnx_files.check_opset).

    export/ is written as a unit (files.write_dir): it ends up holding exactly this
    export's files, an earlier export's gone; where the export fails, the earlier one stays."""
    import pandas as pd

    start = time.perf_counter()
    out = run_dir / "export"
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} is not a directory: move it away, export writes a directory there")
    src = source(run_dir, bits, epochs, log)
    src.opset = opset
    chosen = None if onnx else ["model.pt", ARCHIVE, COMPACT]

    def write(tmp: Path) -> tuple[list[dict], pd.DataFrame]:
        rows = artifacts.measure_artifacts(src, tmp, chosen, timing)
        frame = pd.DataFrame(rows)
        columns = artifacts.COLUMNS
        frame = frame[[c for c in columns if c in frame] + [c for c in frame if c not in columns]]
        for column in ("opset", "ir_version"):  # integers, empty where not an ONNX file
            if column in frame:
                frame[column] = frame[column].astype("Int64")
        files.write_atomic(tmp / "export.csv", lambda p: frame.to_csv(p, index=False))
        return rows, frame

    rows, frame = files.write_dir(out, write)
    log(f"{out} ({src.bits} bits, {time.perf_counter() - start:.1f} s):")
    _show(frame, log)
    for row in rows:
        if row.get("note"):
            log(f"{row['artifact']}: {row['note']}")
    return rows


def _show(frame: pd.DataFrame, log: Callable[[str], None]) -> None:
    """export.csv's SHOWN columns as a table, then which batch shapes each file takes."""
    import pandas as pd

    shown = [c for c in SHOWN if c in frame] + [c for c in frame if c.startswith("speedup_")]
    table = frame[shown].copy()
    for column in ("opset", "ir_version"):  # blank, not <NA>, where not an ONNX file
        if column in table:
            table[column] = table[column].map(lambda v: "" if pd.isna(v) else str(v))
    log(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    if "input" in frame:  # the same array fits every file of a line
        for shape, group in frame.dropna(subset=["input"]).groupby("input", sort=False):
            log(f"input {shape}: {', '.join(group['artifact'])}")


def chosen_runs(path: Path, trials: Sequence[int] | None, front: bool, best: bool) -> list[Path]:
    """The run directories DIR stands for: itself (a run or trial), or a sweep's trials."""
    if not path.is_dir():
        raise UserError(f"{path} is not a directory; pass a run, trial or sweep directory")
    if not (path / "results.csv").is_file():
        if trials or front or best:
            raise UserError(f"{path} is not a sweep directory (no results.csv): drop "
                            "--trials/--front/--best to export the run itself")  # fmt: skip
        return [path]
    from sweep.analysis import fronts
    from sweep.analysis import load as sweeps  # pandas: only for a sweep directory

    frame = sweeps.load([path])
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
        rows = [fronts.best(frame)[0]]
    else:
        rows = list(frame.index[fronts.pareto_front(frame)])
        if not rows:
            raise UserError(f"{path} has no complete trial to export")
    return [sweeps.trial_dir(frame.loc[i]) for i in rows]


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


def _parser() -> argparse.ArgumentParser:
    """The command line of `python -m sweep.export` (its --help is this module's docstring)."""
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
    parser.add_argument("--opset", type=int, metavar="N",
                        help="the ONNX files' opset, for an older runtime (default: torch.onnx's; "
                             "export.csv's opset and ir_version columns say what was written; "
                             "one the installed exporter cannot write is refused)")  # fmt: skip
    parser.add_argument("--latency-rounds", type=int, default=LATENCY_ROUNDS, metavar="N",
                        help="alternating timing rounds per model and configuration "
                             f"(default {LATENCY_ROUNDS}; 0: no latency columns)")  # fmt: skip
    parser.add_argument("--latency-seconds", type=float, default=LATENCY_SECONDS, metavar="S",
                        help="seconds of calls per model and round "
                             f"(default {LATENCY_SECONDS})")  # fmt: skip
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m sweep.export DIR [options]`: the chosen runs exported, export.csv written;
    0 on success, 2 with one line on bad input (a bad file, no such run)."""
    args = _parser().parse_args(argv)
    try:
        if args.dir.is_file():
            print(describe(args.dir, args.allow_targets))
            return 0
        if args.latency_rounds < 0 or args.latency_seconds <= 0:
            raise UserError("--latency-rounds must be >= 0 and --latency-seconds > 0")
        if args.opset is not None and args.no_onnx:
            raise UserError("--opset sets the ONNX files' opset, and --no-onnx writes none: "
                            "drop one of them")  # fmt: skip
        runs = chosen_runs(args.dir, args.trials, args.front, args.best)
        if args.opset is not None:
            onnx_files.check_opset(args.opset)
        timing = (args.latency_rounds, args.latency_seconds) if args.latency_rounds else None
        for run_dir in runs:
            export_run(run_dir, args.bits, args.epochs, onnx=not args.no_onnx, timing=timing,
                       opset=args.opset)  # fmt: skip
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
