"""What channel pruning buys a real conv net on a CPU: a dense ResNet against its compact twin.

    python benchmarks/conv_speed.py --work /tmp/conv-bench          # Fashion-MNIST, 3 seeds
    python benchmarks/conv_speed.py --smoke                         # digits, 1 seed, quick
    python benchmarks/conv_speed.py --torchvision resnet18 --shape 3 32 32   # no training
    python benchmarks/conv_speed.py --blocks 16 17 24 32 33 48 64 65         # a conv's cost

For each seed, two ResNets (`model=resnet`, He et al. 2016's CIFAR family; `--depth`,
`--width`) are trained as a user trains them, with `python -m sweep.run`: the dense baseline
(`regularizer=none prune=none`) and the slimmed one (`regularizer=bn_l1`: network slimming's
proximal L1 on every BatchNorm scale, then `prune=neurons prune.criterion=bn_scale`: the
coupled channel groups with the smallest scales cut, each group's kept channels rounded to a
multiple of `--round-to` (`prune.round_to`: oneDNN's channel block, see `--blocks`), masked
fine-tuning). Both are read back
from model.pt; the slimmed one is compacted (`sweep.models.graph`: its zero channels cut out
through Torch-Pruning's dependency graph, BatchNorm folded into the convs), the script checks
that the compact model's logits equal the masked model's on the test split (1e-5), then
measures in one process, on one thread, torch eager, the dense model (its BatchNorms folded
too, so that the ratio is the channels' alone) and the compact one in alternation: the
throughput at batch 256 and the time per call at batch 1 (median call), and ONNX Runtime's
batch-1 time of each exported (opset 18, one intra-op thread).

`--torchvision NAME` trains nothing: the untrained torchvision model (`model=torchvision`,
its first conv for `--shape`'s channels) has `--sparsity` of its channels masked by
prune=neurons (criterion norm, scope global, through the dependency graph), is compacted,
checked (compact logits equal the masked model's, 1e-5, on random images) and timed against
the dense model (BatchNorms folded in both) as above: FLOPs and latency, no accuracy.

The dense model trains as many epochs as the slimmed one trains and fine-tunes together
(the same budget). The training set is the first `--train` images of Fashion-MNIST's 60k
(two shared CPU cores train a ResNet on all of them in hours, not minutes); validation
accuracies (`dense_val`, `compact_val`: what a recipe is chosen on) are on the last `--val`
training images, which no run trains on, test accuracies on the whole 10k test split, which
no run sees and no choice uses. Run directories are reused where their model.pt exists
(`--train-only --seed-list N` trains seeds side by side; a later run measures them all in
one process). The last line is machine-readable (medians over seeds).
"""

from __future__ import annotations

import argparse
import copy
import gzip
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from anywhere: import sweep from this checkout
sys.path.insert(0, str(REPO / "benchmarks"))

from structured import load, timings, train  # noqa: E402

from sweep.models import compact, graph  # noqa: E402
from sweep.training.train import accuracy  # noqa: E402

FASHION = Path("/usr/share/datasets/fashion-mnist")


def subset(root: Path, n_train: int) -> None:
    """Fashion-MNIST's IDX files under root/FashionMNIST/raw: the first n_train training
    images and labels, the whole test split."""
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name in sorted(FASHION.glob("*-ubyte.gz")):
        data = gzip.decompress(name.read_bytes())
        if name.name.startswith("train"):
            dims = data[3]
            shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
            shape[0] = min(n_train, shape[0])
            body = data[4 + 4 * dims :][: int(np.prod(shape))]
            data = data[:4] + b"".join(d.to_bytes(4, "big") for d in shape) + body
        out = raw / name.name.removesuffix(".gz")
        if not out.exists() or out.read_bytes() != data:  # another benchmark may be reading it
            out.write_bytes(data)


def held_out(n_val: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The validation images: the last `n_val` of Fashion-MNIST's 60k training images, which
    no run trains on (`subset` keeps the first `--train`), scaled to [0, 1] as the data
    module scales them (torchvision's ToTensor); (N, 1, 28, 28) float and (N,) int64. The
    recipe is chosen on these, never on the test split."""
    with gzip.open(FASHION / "train-images-idx3-ubyte.gz") as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 1, 28, 28)[-n_val:]
    with gzip.open(FASHION / "train-labels-idx1-ubyte.gz") as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8)[-n_val:]
    return torch.from_numpy(x.astype(np.float32) / 255.0), torch.from_numpy(y.astype(np.int64))


def run(work: Path, name: str, seed: int, args: list[str]) -> Path:
    """`structured.train`, reusing a run directory whose model.pt is already written (the
    dense baseline is shared by every recipe with the same epochs budget)."""
    import fcntl

    out = work / f"{name}_{seed}"
    with open(work / f"{name}_{seed}.lock", "w") as lock:  # benchmarks run side by side
        fcntl.flock(lock, fcntl.LOCK_EX)
        return out if (out / "model.pt").exists() else train(work, name, seed, args)


def folded(model: torch.nn.Module, shape: tuple[int, ...]) -> torch.nn.Module:
    """The dense model with its BatchNorms folded (no channel cut): the fair baseline."""
    return graph.compact_model(model, shape, {})


def onnx_ms(model: torch.nn.Module, x: torch.Tensor, path: Path, seconds: float) -> float:
    """ONNX Runtime's median batch-1 call, ms, one intra-op thread, of `model` exported."""
    import onnxruntime as ort

    torch.onnx.export(model, (x,), str(path), opset_version=18, dynamo=False)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = 1, 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    feed = {sess.get_inputs()[0].name: x.numpy()}
    sess.run(None, feed)
    times, end = [], time.perf_counter() + seconds
    while (t0 := time.perf_counter()) < end:
        sess.run(None, feed)
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def measure(dense_run: Path, slim_run: Path, work: Path, a: argparse.Namespace) -> dict:
    """One seed's figures: accuracies, the compact check, FLOPs, throughput and latency."""
    dense, data = load(dense_run)
    masked, _ = load(slim_run)
    shape = data.image_shape
    small = graph.compact_model(masked, shape, graph.dead_plan(graph.Graph(masked, shape)))
    base = folded(dense, shape)
    with torch.inference_mode():
        want, got = masked(data.x_test), small(data.x_test)
    gap = float((got - want).abs().max())
    assert torch.allclose(got, want, atol=1e-5, rtol=1e-5), f"compact != masked logits: {gap}"
    x256, x1 = data.x_test[:256], data.x_test[:1]
    t = timings({"dense256": (base, x256), "compact256": (small, x256),
                 "dense1": (base, x1), "compact1": (small, x1)}, a.repeats, a.seconds)  # fmt: skip
    figures = graph.measures(masked, shape)
    val = {}
    if a.val and not a.smoke:
        x_val, y_val = held_out(a.val)
        val = {"dense_val": accuracy(dense, x_val, y_val),
               "compact_val": accuracy(small, x_val, y_val)}  # fmt: skip
    ort_s = a.seconds * 5
    return {
        **val,
        "dense_acc": accuracy(dense, data.x_test, data.y_test),
        "compact_acc": accuracy(small, data.x_test, data.y_test),
        "gap": gap,
        "shape": figures["compact_shape"],
        "flops_ratio": compact.flops(dense, shape) / compact.flops(small, shape),
        "speedup256": t["dense256"][0] / t["compact256"][0],
        "dense_img_s": 256 / t["dense256"][0],
        "compact_img_s": 256 / t["compact256"][0],
        "dense_ms1": 1e3 * t["dense1"][0],
        "compact_ms1": 1e3 * t["compact1"][0],
        # one file per run: benchmarks of other recipes may be measuring beside this one
        "ort_dense_ms1": onnx_ms(copy.deepcopy(base), x1, work / f"{dense_run.name}.onnx", ort_s),
        "ort_compact_ms1": onnx_ms(small, x1, work / f"{slim_run.name}.compact.onnx", ort_s),
    }


def torchvision_speed(a: argparse.Namespace) -> None:
    """`--torchvision NAME`: FLOPs and one-thread latency of an untrained torchvision model,
    dense (BatchNorms folded) against compact (`--sparsity` of its channels cut)."""
    import math

    from sweep.models.resnet import torchvision_model
    from sweep.sparsity.pruning import NeuronPruner, apply_
    from sweep.sparsity.regularizers import Regularizer

    shape = tuple(a.shape)
    torch.set_num_threads(1)
    load = os.getloadavg()[0]
    print(f"{a.torchvision} {shape}, sparsity {a.sparsity}, timing on 1 thread, torch "
          f"{torch.__version__} eager, load average {load:.1f}", flush=True)  # fmt: skip
    torch.manual_seed(0)
    model = torchvision_model(math.prod(shape), 10, shape, a.torchvision).eval()
    with torch.no_grad():  # BatchNorm statistics and affine terms as after training, not 0 / 1
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5), m.bias.uniform_(-0.5, 0.5)
    base = folded(model, shape)
    pruner = NeuronPruner("neurons", sparsity=a.sparsity, scope="global", criterion="norm")
    pruner.check(model, shape)
    counted = Regularizer(0, 0, True, "weights").select(model)
    apply_(pruner.held(model, counted), pruner.mask(model, counted, a.sparsity))
    small = graph.compact_model(model, shape, graph.dead_plan(graph.check(model, shape)))
    x = torch.rand(256, *shape, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        want, got = model(x), small(x)
    gap, scale = float((got - want).abs().max()), float(want.abs().max())
    assert torch.allclose(got, want, atol=1e-5, rtol=1e-5), f"compact != masked logits: {gap}"
    x1 = x[:1]
    t = timings({"dense256": (base, x), "compact256": (small, x),
                 "dense1": (base, x1), "compact1": (small, x1)}, a.repeats, a.seconds)  # fmt: skip
    figures = graph.measures(model, shape)
    row = {"model": a.torchvision, "shape": "x".join(map(str, shape)), "gap": gap,
           "max_abs_logit": scale,
           "channels_removed": figures["channels_removed"],
           "dense_mflops": compact.flops(base, shape) / 1e6,
           "compact_mflops": figures["flops"] / 1e6,
           "flops_ratio": figures["flops_ratio"],
           "dense_ms256": 1e3 * t["dense256"][0], "compact_ms256": 1e3 * t["compact256"][0],
           "speedup256": t["dense256"][0] / t["compact256"][0],
           "dense_ms1": 1e3 * t["dense1"][0], "compact_ms1": 1e3 * t["compact1"][0],
           "speedup1": t["dense1"][0] / t["compact1"][0]}  # fmt: skip
    print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                   for k, v in row.items()), flush=True)  # fmt: skip


def blocks(a: argparse.Namespace) -> None:
    """`--blocks C ...`: what a channel count costs. One 3x3 convolution (stride 1, padding
    1) of C channels in and out on a (256, C, 14, 14) batch, one thread, torch eager: the
    median call in ms (the counts in alternation, `--repeats` rounds of `--seconds`), the
    rate in GFLOP/s (2 * 9 * C^2 * 14^2 * 256 FLOPs a call) and the time against the
    smallest count's. oneDNN packs channels in blocks (16 floats: an AVX-512 register), so
    the time steps with ceil(C / 16) where the FLOPs grow with C^2: why `prune.round_to`."""
    torch.set_num_threads(1)
    print(f"3x3 conv, 14x14 maps, batch 256, 1 thread, torch {torch.__version__} eager, "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip
    gen = torch.Generator().manual_seed(0)
    convs = {}
    for c in a.blocks:
        conv = torch.nn.Conv2d(c, c, 3, padding=1).eval()
        convs[c] = (conv, torch.rand(256, c, 14, 14, generator=gen))
    t = timings(convs, a.repeats, a.seconds)
    base = t[a.blocks[0]][0]
    for c in a.blocks:
        ms, rate = 1e3 * t[c][0], 2 * 9 * c * c * 196 * 256 / t[c][0] / 1e9
        print(f"channels={c} ms={ms:.2f} gflops={rate:.1f} time_vs_{a.blocks[0]}="
              f"{t[c][0] / base:.2f}", flush=True)  # fmt: skip


def arguments() -> argparse.Namespace:
    """The command line (see the module's docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="digits, 1 seed, few epochs")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--depth", type=int, default=8)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--train", type=int, default=6000, help="training images used")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--bn-lambda", type=float, default=1e-2, help="regularizer=bn_l1's")
    parser.add_argument("--criterion", default="bn_scale", help="prune.criterion: bn_scale "
                        "(network slimming) or norm")  # fmt: skip
    parser.add_argument("--sparsity", type=float, default=0.4, help="channels cut (fraction)")
    parser.add_argument("--finetune", type=int, default=8, help="prune.epochs")
    parser.add_argument("--seed-list", type=int, nargs="+", default=None,
                        help="these seeds instead of 0 .. --seeds - 1")  # fmt: skip
    parser.add_argument("--train-only", action="store_true",
                        help="train (or find) the runs, measure nothing")  # fmt: skip
    parser.add_argument("--name", default="slim", help="the slimmed runs' directory prefix")
    parser.add_argument("--rounds", type=int, default=1, help="prune.rounds")
    parser.add_argument("--round-to", type=int, default=16, help="prune.round_to: each group's "
                        "kept channels a multiple of it (oneDNN's block)")  # fmt: skip
    parser.add_argument(
        "--val",
        type=int,
        default=10000,
        help="held-out training images "
        "(the last of the 60k, never trained on) to choose the recipe on",
    )
    parser.add_argument("--lr-scale", type=float, default=1.0, help="prune.lr_scale")
    parser.add_argument("--work", type=Path, default=None, help="scratch dir (runs, data)")
    parser.add_argument("--repeats", type=int, default=5, help="alternating timing rounds")
    parser.add_argument("--seconds", type=float, default=0.3, help="per timing run")
    parser.add_argument("--torchvision", default=None, help="a torchvision model's name: "
                        "no training, FLOPs and latency only")  # fmt: skip
    parser.add_argument("--shape", type=int, nargs="+", default=[3, 32, 32],
                        help="--torchvision's example shape (C H W)")  # fmt: skip
    parser.add_argument("--blocks", type=int, nargs="+", default=None,
                        help="time a 3x3 conv at these channel counts, train nothing")  # fmt: skip
    parser.add_argument("overrides", nargs="*", help="more sweep.run overrides, both models")
    return parser.parse_args()


def recipe(a: argparse.Namespace, work: Path) -> tuple[list[str], list[str], int]:
    """The sweep.run overrides of both models, the slimmed model's own, and the dense
    model's epochs (the slimmed one's training and fine-tuning together: the same budget)."""
    if a.smoke:
        a.seeds, a.epochs, a.repeats, a.seconds = 1, 3, 2, 0.05
        data = ["data=digits"]
    else:
        subset(work / "data", a.train)
        data = ["data=fashion_mnist", f"data.root={work}/data", "data.fallback_dir=null"]
    common = [*data, "model=resnet", f"model.depth={a.depth}", f"model.width={a.width}",
              f"train.epochs={a.epochs}", "train.batch_size=128", "train.threads=2",
              "optimizer=sgd", "optimizer.lr=0.05", "optimizer.momentum=0.9",
              "schedule=cosine", "callbacks=none",  # model.pt only: what this script reads
              "+callbacks.model_checkpoint._target_=sweep.task.callbacks.ModelCheckpoint",
              *a.overrides]  # fmt: skip
    slim = ["regularizer=bn_l1", f"bn_lambda={a.bn_lambda}", "prune=neurons",
            f"prune.criterion={a.criterion}", f"prune.sparsity={a.sparsity}",
            f"prune.epochs={a.finetune}", f"prune.lr_scale={a.lr_scale}",
            f"prune.rounds={a.rounds}", f"prune.round_to={a.round_to}"]  # fmt: skip
    return common, slim, a.epochs + a.rounds * a.finetune


def main() -> None:
    a = arguments()
    if a.torchvision:
        return torchvision_speed(a)
    if a.blocks:
        return blocks(a)
    work = (a.work or Path.cwd() / "conv-bench").resolve()
    work.mkdir(parents=True, exist_ok=True)
    common, slim, budget = recipe(a, work)
    torch.set_num_threads(1)
    which = "digits (smoke)" if a.smoke else f"fashion_mnist ({a.train} training images)"
    print(f"resnet depth {a.depth} width {a.width}, {which}, {a.seeds} seeds; "
          f"{' '.join(common + slim)}; timing on "
          f"1 thread, torch {torch.__version__} eager, {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip
    rows = []
    for seed in a.seed_list if a.seed_list is not None else range(a.seeds):
        start = time.perf_counter()
        slim_run = run(work, a.name, seed, [*common, *slim])
        dense_run = run(
            work,
            f"dense{budget}",
            seed,
            [*common, "regularizer=none", "prune=none", f"train.epochs={budget}"],
        )
        if a.train_only:  # training several seeds side by side: measure in one later run
            continue
        row = {"seed": seed, "train_s": time.perf_counter() - start,
               **measure(dense_run, slim_run, work, a)}  # fmt: skip
        rows.append(row)
        print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                       for k, v in row.items()), flush=True)  # fmt: skip
    if not rows:  # --train-only
        return
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]
           if isinstance(rows[0][k], float)}  # fmt: skip
    if "dense_val" in rows[0]:
        med["val_drop_pts"] = 100 * statistics.median(
            r["dense_val"] - r["compact_val"] for r in rows
        )
    med["acc_drop_pts"] = 100 * statistics.median(r["dense_acc"] - r["compact_acc"] for r in rows)
    print("median " + " ".join(f"{k}={v:.4g}" for k, v in med.items()))


if __name__ == "__main__":
    main()
