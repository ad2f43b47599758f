"""What the sparsity buys in bytes: model.l1z archives of l1sweep's own runs against the dense
fp32 state_dict, with test accuracy measured on each archive loaded back from disk.

    python benchmarks/compress.py --smoke          # digits, seconds (tests/test_compress_bench.py)
    python benchmarks/compress.py                  # Fashion-MNIST: the targets of issue 22
    python benchmarks/compress.py --work DIR       # keep the runs in DIR (reused when rerun)

Full mode, every run trained by `python -m sweep.run` in a subprocess (`train.threads=1`):
- simple_net, `experiment=fashion_frontier prune.sparsity=S`, seeds 0-3, its archive at
  `--bits` (fine-tuned `--epochs`), against the dense model of the same recipe and seed
  (`regularizer=none prune=none`): bytes, ratio to model.pt, test accuracy drop. Target: at
  least 80x and at most 1.0 point (stretch: 120x within 1.5).
- the same bytes for L1 alone, magnitude pruning alone, and L1 then pruning (seed 0);
- lenet5 (dense, and L1 then pruning at --lenet-sparsity): for bits 8..2 its archive; the
  smallest whose validation accuracy is within 1.0 point of the dense model's (chosen on
  validation, test read off).
A run whose model.pt already exists in the work directory is not trained again. The last line
is machine-readable: key=value pairs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from sweep import export  # noqa: E402
from sweep.deploy import artifacts  # noqa: E402
from sweep.deploy import measure as measures  # noqa: E402

FRONTIER = ["experiment=fashion_frontier", "train.log_every=5", "train.threads=1"]
SMOKE = ["train.threads=1", "train.log_every=50"]
# lenet5 trains about 10x slower than simple_net here: a shorter recipe, the same for its dense
LENET = ["train.epochs=6", "prune.rounds=1", "prune.epochs=2"]


def train(work: Path, name: str, overrides: list[str]) -> Path:
    """`python -m sweep.run OVERRIDES` into work/name (skipped where its model.pt exists)."""
    run = work / name
    if (run / "model.pt").is_file() and (run / "metrics.json").is_file():
        return run
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "sweep.run", *overrides, f"hydra.run.dir={run}"],
        cwd=work, capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "ignore"},
    )  # fmt: skip
    if proc.returncode != 0:
        sys.exit(f"run {name} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    print(f"  trained {name} in {time.perf_counter() - start:.0f} s", flush=True)
    return run


def measure(run: Path, bits: int, epochs: int) -> dict:
    """The run's archive at `bits` (codebooks fine-tuned `epochs`), written to
    run/export-b<bits>e<epochs>/model.l1z and loaded back with sweep.export.load."""
    start = time.perf_counter()
    src = export.source(run, bits, epochs, log=lambda *a: None)
    out = run / f"export-b{bits}e{epochs}"
    out.mkdir(exist_ok=True)
    written = artifacts.l1z(src, out)
    seconds = time.perf_counter() - start
    metrics = json.loads((run / "metrics.json").read_text())
    d = src.data
    val = measures.logits_of(written.predict, d.x_val, 4096)
    test = measures.logits_of(written.predict, d.x_test, 4096)
    return {
        "bytes": os.path.getsize(written.path),
        "dense_bytes": os.path.getsize(run / "model.pt"),
        "val_acc": measures.accuracy(val, d.y_val),
        "test_acc": measures.accuracy(test, d.y_test),
        "model_val_acc": metrics["val_acc"],
        "model_test_acc": metrics["test_acc"],
        "sparsity": metrics["sparsity"],
        "nnz": measures.compressed_nnz(src.trained),
        "seconds": seconds,
    }


def row(label: str, m: dict, dense: dict | None = None) -> str:
    ratio = m["dense_bytes"] / m["bytes"]
    drop = f"  drop {100 * (dense['test_acc'] - m['test_acc']):5.2f} pt" if dense else ""
    return (
        f"{label:28s} zeros {m['sparsity']:.4f}  archive {m['bytes']:6d} B  {ratio:6.1f}x  "
        f"{8 * m['bytes'] / max(m['nnz'], 1):5.2f} bits/nnz  test {m['model_test_acc']:.4f} "
        f"-> {m['test_acc']:.4f} loaded{drop}  ({m['seconds']:.1f} s)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="digits, a few seconds")
    parser.add_argument("--work", type=Path, help="keep runs here (default: a temporary dir)")
    parser.add_argument(
        "--sparsity", type=float, default=0.96, help="the frontier's prune.sparsity"
    )
    parser.add_argument("--bits", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=0, help="codebook fine-tuning epochs")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--lenet-sparsity", type=float, default=0.9)
    parser.add_argument("--lenet-epochs", type=int, default=0, help="lenet5's fine-tuning epochs")
    parser.add_argument("--l1-lambda", type=float, default=5e-4, help="L1 alone's strength")
    parts = ["seeds", "methods", "lenet5"]
    parser.add_argument("--parts", nargs="+", default=parts, choices=parts, help="what full runs")
    a = parser.parse_args()
    torch.set_num_threads(1)  # as the runs train (train.threads=1); a shared CPU thrashes on more
    with tempfile.TemporaryDirectory() as tmp:
        work = (a.work or Path(tmp)).resolve()
        work.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        figures = (smoke if a.smoke else full)(work, a)
        print(f"{figures} wall_s={time.perf_counter() - start:.0f}", flush=True)


def smoke(work: Path, a: argparse.Namespace) -> str:
    dense = measure(train(work, "dense", [*SMOKE, "regularizer=none"]), a.bits, 0)
    sparse = measure(train(work, "pruned", [*SMOKE, "prune=magnitude", "prune.sparsity=0.8",
                                            "prune.epochs=50"]), a.bits, a.epochs)  # fmt: skip
    print(row("digits dense", dense))
    print(row("digits pruned 80%", sparse, dense))
    return (
        f"mode=smoke bits={a.bits} dense_bytes={sparse['dense_bytes']} "
        f"archive_bytes={sparse['bytes']} ratio={sparse['dense_bytes'] / sparse['bytes']:.2f} "
        f"dense_test={dense['model_test_acc']:.4f} archive_test={sparse['test_acc']:.4f}"
    )


def full(work: Path, a: argparse.Namespace) -> str:
    figures = [f"mode=full sparsity={a.sparsity} bits={a.bits} epochs={a.epochs}"]
    if "seeds" in a.parts:
        figures.append(seeds(work, a))
    if "methods" in a.parts:
        methods(work, a)
    if "lenet5" in a.parts:
        figures.append(lenet5(work, a))
    return "\n" + " ".join(figures)


def seeds(work: Path, a: argparse.Namespace) -> str:
    print(f"simple_net, experiment=fashion_frontier prune.sparsity={a.sparsity}, "
          f"{a.bits}-bit codebooks, {a.epochs} fine-tuning epochs", flush=True)  # fmt: skip
    ratios, drops = [], []
    for seed in a.seeds:
        dense_run = train(work, f"dense_s{seed}", [*FRONTIER, "regularizer=none", "prune=none",
                                                   f"seed={seed}"])  # fmt: skip
        run = train(work, f"frontier{a.sparsity}_s{seed}",
                    [*FRONTIER, f"prune.sparsity={a.sparsity}", f"seed={seed}"])  # fmt: skip
        dense = json.loads((dense_run / "metrics.json").read_text())
        m = measure(run, a.bits, a.epochs)
        ratios.append(m["dense_bytes"] / m["bytes"])
        drops.append(100 * (dense["test_acc"] - m["test_acc"]))
        print(row(f"seed {seed} (dense {dense['test_acc']:.4f})", m, dense), flush=True)
    met = all(r >= 80 for r in ratios) and all(d <= 1.0 for d in drops)
    stretch = all(r >= 120 for r in ratios) and all(d <= 1.5 for d in drops)
    print(f"target 80x within 1.0 point on every seed: {'met' if met else 'NOT met'}; "
          f"stretch 120x within 1.5: {'met' if stretch else 'not met'}", flush=True)  # fmt: skip
    return (f"min_ratio={min(ratios):.1f} max_drop={max(drops):.2f} target_met={met} "
            f"stretch_met={stretch}")  # fmt: skip


def methods(work: Path, a: argparse.Namespace) -> None:
    print("\nmethods, seed 0 (same recipe):", flush=True)
    dense_run = train(work, "dense_s0", [*FRONTIER, "regularizer=none", "prune=none", "seed=0"])
    dense = json.loads((dense_run / "metrics.json").read_text())
    runs = {
        "dense": ("dense_s0", [*FRONTIER, "regularizer=none", "prune=none"]),
        f"L1 alone ({a.l1_lambda:g})": ("l1only_s0",
                                        [*FRONTIER, "prune=none", f"l1_lambda={a.l1_lambda}"]),
        f"pruning alone ({a.sparsity})": (f"pruneonly{a.sparsity}_s0",
            [*FRONTIER, "regularizer=none", f"prune.sparsity={a.sparsity}"]),
        f"L1 then pruning ({a.sparsity})": (f"frontier{a.sparsity}_s0",
                                            [*FRONTIER, f"prune.sparsity={a.sparsity}"]),
    }  # fmt: skip
    for label, (name, overrides) in runs.items():
        m = measure(train(work, name, [*overrides, "seed=0"]), a.bits, a.epochs)
        print(row(label, m, dense), flush=True)


def lenet5(work: Path, a: argparse.Namespace) -> str:
    print(f"\nlenet5, seed 0 ({' '.join(LENET)}), bits chosen on validation:", flush=True)
    lenet = [*FRONTIER, "model=lenet5", *LENET]
    lenet_dense = train(work, "lenet5_dense_s0", [*lenet, "regularizer=none", "prune=none"])
    ldense = json.loads((lenet_dense / "metrics.json").read_text())
    lrun = train(work, f"lenet5_{a.lenet_sparsity}_s0",
                 [*lenet, f"prune.sparsity={a.lenet_sparsity}"])  # fmt: skip
    best = None
    for bits in (8, 6, 5, 4, 3, 2):
        m = measure(lrun, bits, a.lenet_epochs)
        print(row(f"lenet5 {a.lenet_sparsity} {bits} bits", m, ldense), flush=True)
        if 100 * (ldense["val_acc"] - m["val_acc"]) <= 1.0 and (
            best is None or m["bytes"] < best[1]["bytes"]):  # fmt: skip
            best = (bits, m)
    if not best:
        return "lenet5_ratio=none"
    bits, m = best
    return (f"lenet5_bits={bits} lenet5_bytes={m['bytes']} "
            f"lenet5_ratio={m['dense_bytes'] / m['bytes']:.1f} "
            f"lenet5_drop={100 * (ldense['test_acc'] - m['test_acc']):.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
