"""The compact model as a user runs it: `sweep.export.load("model.compact.l1z")` on full images.

    python benchmarks/compact_artifact.py --work /tmp/artifact-bench --seeds 5 6
    python benchmarks/compact_artifact.py --smoke                     # digits, 1 seed, quick

For each seed, the dense baseline (`experiment=fashion_structured group_lambda=0 prune=none`)
and the structured model (`experiment=fashion_structured`) are trained as
benchmarks/structured.py trains them, and the structured run is exported as a user exports it
(`python -m sweep.export RUN --latency-rounds 0`). Then, in one process, read back from disk:

- dense:        model.pt (the dense run's), on the full inputs (batch, 28, 28)
- artifact:     sweep.export.load(".../model.compact.l1z") on the same full inputs: what a
                user's pipeline calls (its first Linear reads every pixel, the gather folded in
                at load time where that is faster: sweep.models.deployable.FoldedLinear)
- gather:       the same file's layers after a Gather of the kept pixels (the loader before
                the fold), on the full inputs
- pre-gathered: the artifact fed only its kept pixels (kept_inputs.csv), gathered outside the
                timed call: the figure docs/deploy.md quoted before
and in onnxruntime model.onnx (dense), model.compact.onnx as written (the fold) and the
gather variant exported the same way. Each is timed by sweep.deploy.latency.measure (the
median call, in alternation, batch 1 and 256, one thread and every core); the speed-ups are
against the dense model in torch eager. The artifact's logits must equal the pre-gathered
and the gather variants' (within 1e-5 times the largest |logit|, at least 1: float32 sums in
another order). Test accuracies are of the files read back, on full inputs.
The last line is machine-readable: key=value pairs (medians over the seeds).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from anywhere: import sweep from this checkout
sys.path.insert(0, str(REPO / "benchmarks"))

from structured import SMOKE, load, train  # noqa: E402

from sweep.deploy import archive, latency  # noqa: E402
from sweep.export import load as load_file  # noqa: E402
from sweep.models import deployable  # noqa: E402


def export(run: Path) -> Path:
    """`python -m sweep.export RUN` (no latency columns), as a user runs it; RUN/export."""
    out = run / "export"
    if not (out / "export.csv").exists():
        env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "ignore"}
        cmd = [sys.executable, "-m", "sweep.export", str(run), "--latency-rounds", "0"]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode:
            sys.exit(f"{' '.join(cmd[1:])} failed:\n{proc.stderr[-2000:]}")
    return out


def gathered(artifact: torch.nn.Module, arch: dict) -> torch.nn.Module:
    """The artifact's layers after a Gather of its kept inputs (not folded), same weights;
    arch: the architecture the file stores."""
    net = deployable.build(arch["layers"], arch["inputs"], int(np.prod(arch["input_shape"])),
                           fold=False)  # fmt: skip
    net.load_state_dict(artifact.state_dict())
    return net.eval()


def pre_gathered(module: torch.nn.Module, index: list[int]) -> latency.Runner:
    """Time module(x's kept inputs), the gather done before the timed call."""

    def make(threads: int, x: np.ndarray) -> object:
        xs = torch.from_numpy(np.ascontiguousarray(x.reshape(len(x), -1)[:, index]))

        def call() -> object:
            with torch.no_grad():
                return module(xs)

        return call

    return make


def onnx_gather(net: torch.nn.Module, example: torch.Tensor, path: Path) -> Path:
    """`net` as ONNX, exported as sweep.export exports (dynamo, a dynamic batch axis)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (example,), str(path), dynamo=True, external_data=False,
                          input_names=["x"], output_names=["logits"], verbose=False,
                          dynamic_shapes=({0: torch.export.Dim("batch")},))  # fmt: skip
    return path


def accuracy(module: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((module(x).argmax(1) == y).float().mean())


def one_seed(work: Path, seed: int, common: list[str], a: argparse.Namespace) -> dict:
    """Train, export and time one seed; its row."""
    dense_run = train(work, "simple_net_dense", seed, [*common, "group_lambda=0", "prune=none"])
    sparse_run = train(work, "simple_net_structured", seed, common)
    out = export(sparse_run)
    dense, data = load(dense_run)
    artifact = load_file(out / "model.compact.l1z")  # the public loader, as a user calls it
    arch = archive.unpack((out / "model.compact.l1z").read_bytes()).arch
    gather = gathered(artifact, arch)
    index = arch["inputs"]
    x = data.x_test
    with torch.no_grad():
        full = artifact(x)
        pre = gather[1:](x.flatten(1)[:, index])  # the layers without their gather
        gap = max(float((full - pre).abs().max()), float((full - gather(x)).abs().max()))
    scale = max(1.0, float(pre.abs().max()))  # float32 sums in another order: relative
    assert gap <= 1e-5 * scale, f"the artifact's logits differ from the pre-gathered by {gap}"
    runners = {
        "dense": latency.torch_runner(dense),
        "artifact": latency.torch_runner(artifact),
        "gather": latency.torch_runner(gather),
        "pre": pre_gathered(gather[1:], index),
    }
    if not a.no_onnx and (out / "model.compact.onnx").exists():
        tmp = Path(tempfile.mkdtemp())
        runners["onnx_dense"] = latency.ort_runner(out / "model.onnx")
        runners["onnx_fold"] = latency.ort_runner(out / "model.compact.onnx")
        runners["onnx_gather"] = latency.ort_runner(onnx_gather(gather, x[:2], tmp / "g.onnx"))
    t = latency.measure(runners, x[:256].numpy(), "dense", a.repeats, a.seconds)
    row = {"seed": seed, "gap": gap, "dense_acc": accuracy(dense, x, data.y_test),
           "compact_acc": accuracy(artifact, x, data.y_test),
           "shape": "-".join([str(len(index))] + [str(m.weight.shape[0]) for m in artifact
                                                   if isinstance(m, torch.nn.Linear)]),
           "folded": deployable.n_read(artifact) is not None
                     and not any(isinstance(m, deployable.Gather) for m in artifact)}  # fmt: skip
    row["drop"] = 100 * (row["dense_acc"] - row["compact_acc"])
    for k, v in t.items():
        for b in latency.BATCHES:
            row[f"{k}_{b}"] = v[f"speedup_batch{b}_1thread"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="digits, 1 seed, few epochs")
    parser.add_argument("--seeds", type=int, nargs="+", default=[5, 6])
    parser.add_argument("--work", type=Path, default=None, help="scratch dir (runs, data)")
    parser.add_argument("--repeats", type=int, default=5, help="alternating timing rounds")
    parser.add_argument("--seconds", type=float, default=0.2, help="per timing run")
    parser.add_argument("--no-onnx", action="store_true", help="torch eager only")
    parser.add_argument("overrides", nargs="*", help="more sweep.run overrides, both models")
    a = parser.parse_args()
    work = (a.work or Path.cwd() / "artifact-bench").resolve()
    work.mkdir(parents=True, exist_ok=True)
    common = ["experiment=fashion_structured", "model=simple_net", f"data.root={work}/data"]
    if a.smoke:
        common = common[:2] + SMOKE
        a.seeds, a.repeats, a.seconds = a.seeds[:1], 2, 0.05
    common += a.overrides
    print(f"fashion_structured artifact, seeds {a.seeds}; overrides: {' '.join(common)}; "
          f"speed-ups against model.pt in torch eager, 1 thread, torch {torch.__version__}, "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    rows = []
    for seed in a.seeds:
        r = one_seed(work, seed, common, a)
        rows.append(r)
        keys = [k for k in r if k[-2:] in ("_1", "56")]
        folded = " folded" if r["folded"] else ""
        print(f"seed {r['seed']}: dense test_acc {r['dense_acc']:.4f} | artifact {r['shape']}"
              f"{folded} test_acc {r['compact_acc']:.4f} (drop {r['drop']:.2f} points; logit "
              f"gap {r['gap']:.1e}) | speed-up, 1 thread: "
              + ", ".join(f"{k} {r[k]:.2f}x" for k in keys), flush=True)  # fmt: skip
    med = {k: statistics.median(r[k] for r in rows) for k in keys}
    print(f"seeds={len(rows)} max_drop_points={max(r['drop'] for r in rows):.2f} "
          f"min_artifact_256={min(r['artifact_256'] for r in rows):.2f} "
          + " ".join(f"{k}={v:.2f}" for k, v in med.items()))  # fmt: skip


if __name__ == "__main__":
    main()
