"""How fast is a trial? The project's trainer against the seed's loop, and a sweep's overhead.

    python benchmarks/train_speed.py                 # full run (Fashion-MNIST if installed)
    python benchmarks/train_speed.py --smoke         # seconds; what the test suite runs

Both sides train the same 784-128-10 model with SGD lr 0.01, batch 64 and the seed's L1
penalty (1e-4, all parameters) on the same 60k images for an epoch, then evaluate the 10k test
images (the seed's `train(epoch); test()`), alternating, `--repeats` times each. The trainer
runs twice: with its hand-written MLP and SGD steps (sweep/training/fastmlp.py and
fastsgd.py, the default) and with autograd and torch.optim's step (`train.fast=false`).
The last line is machine-readable: key=value pairs.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
from torch.utils.data import DataLoader
from torchvision import datasets, transforms
from torchvision.datasets import VisionDataset

from sweep.data.datasets import Dataset, _unpack_fallback
from sweep.models.builtin import mlp
from sweep.sparsity.regularizers import Regularizer
from sweep.training.train import accuracy, fit, set_threads

DEBIAN = Path("/usr/share/datasets/fashion-mnist")
L1, LR, BATCH = 1e-4, 0.01, 64


def prepare_data(root: Path, smoke: bool) -> tuple[type, str]:
    """IDX files in torchvision's layout under root; returns (dataset class, what it is)."""
    if not smoke and DEBIAN.is_dir():
        _unpack_fallback(root / "FashionMNIST" / "raw", DEBIAN)
        return datasets.FashionMNIST, f"Fashion-MNIST (Debian files in {DEBIAN})"
    mnist = Path("data") / "MNIST" / "raw"
    if not smoke and (mnist / "train-images-idx3-ubyte").exists():
        shutil.copytree(mnist, root / "MNIST" / "raw")
        return datasets.MNIST, "MNIST (data/MNIST/raw)"
    n_train, n_test = (2_000, 500) if smoke else (60_000, 10_000)
    rng = np.random.default_rng(0)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        for kind, shape in (("images-idx3", (n, 28, 28)), ("labels-idx1", (n,))):
            high = 256 if kind.startswith("images") else 10
            array = rng.integers(0, high, shape, dtype=np.uint8)
            header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in shape)
            (raw / f"{prefix}-{kind}-ubyte").write_bytes(header + array.tobytes())
    return datasets.MNIST, f"synthetic uniform noise, {n_train} x 28 x 28 (no real data found)"


def seed_epoch(train_set: VisionDataset, test_set: VisionDataset) -> tuple[float, float]:
    """One epoch of the seed's script, as the tutorial writes it: `train(epoch)` then `test()`.
    Written for this benchmark and labelled as the seed's method; returns (train s, test s)."""
    model = mlp(784, 10, [128])
    train_loader = DataLoader(train_set, batch_size=BATCH, shuffle=True)
    test_loader = DataLoader(test_set, batch_size=BATCH)
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    start = time.perf_counter()
    model.train()
    total_loss = 0.0
    for data, target in train_loader:
        optimizer.zero_grad()
        loss = criterion(model(data), target)
        l1_norm = sum(torch.abs(p).sum() for p in model.parameters())
        loss = loss + L1 * l1_norm
        loss.backward()
        optimizer.step()
        total_loss += loss.item()
    trained = time.perf_counter()
    model.eval()
    correct = 0
    with torch.no_grad():
        for data, target in test_loader:
            correct += (model(data).argmax(1) == target).sum().item()
    return trained - start, time.perf_counter() - trained


def trainer_epoch(data: Dataset, seed: int, fast: bool = True) -> tuple[float, float]:
    """One epoch of train.fit with the same model, optimizer, batch and penalty; its log
    line evaluates the 10k test images (data.x_val here), as the seed's test() does. Returns
    (epoch s, s of such an evaluation: the epoch's share of it). fast=False: autograd."""
    torch.manual_seed(seed)
    model = mlp(784, 10, [128])
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    start = time.perf_counter()
    fit(
        model,
        data,
        Regularizer(L1, 0.0, False, "all"),
        optimizer,
        epochs=1,
        batch_size=BATCH,
        seed=seed,
        log_every=1,
        fast=fast,
    )
    epoch = time.perf_counter() - start
    # the fastest of three: noise only adds, and subtracted it could make the training alone
    # come out negative on tiny data
    evals = timeit.repeat(lambda: accuracy(model, data.x_val, data.y_val), repeat=3, number=1)
    return epoch, min(evals)


def flop_bound(n_train: int, repeats: int = 200) -> tuple[float, float]:
    """(GFLOP/s this CPU reaches on the layer shapes at batch 64, seconds a training epoch must
    take).

    Per sample: fc1 forward and weight gradient (the input needs no gradient) and fc2 forward,
    weight and input gradients: 2 * (2*784*128 + 3*128*10) FLOPs, about 0.41 MFLOP.
    """
    x, w1 = torch.rand(BATCH, 784), torch.rand(128, 784)
    h, w2 = torch.rand(BATCH, 128), torch.rand(10, 128)
    g1, g2 = torch.rand(BATCH, 128), torch.rand(BATCH, 10)
    per_batch = 4 * BATCH * 784 * 128 + 6 * BATCH * 128 * 10
    for _ in range(20):  # warm up
        x @ w1.T
    start = time.perf_counter()
    for _ in range(repeats):
        x @ w1.T, g1.T @ x, h @ w2.T, g2.T @ h, g2 @ w2
    rate = per_batch * repeats / (time.perf_counter() - start)
    epoch_flops = per_batch / BATCH * n_train
    return rate / 1e9, epoch_flops / rate


def sweep_run(cwd: Path, args: list[str]) -> tuple[float, float, pd.DataFrame, float]:
    """Run `python -m sweep.run -m ARGS`; (wall s, loop s, results, peak RSS MiB of children)."""
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "sweep.run", "-m", "hydra.sweeper.study_name=bench", *args],
        cwd=cwd, check=True, capture_output=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )  # fmt: skip
    wall = time.perf_counter() - start
    import optuna

    study = optuna.load_study(study_name="bench", storage=f"sqlite:///{cwd}/outputs/optuna.db")
    loop = (
        max(t.datetime_complete for t in study.trials) - min(t.datetime_start for t in study.trials)
    ).total_seconds()
    results = pd.read_csv(cwd / "outputs" / "sweeps" / "bench" / "results.csv")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # KiB on Linux
    return wall, loop, results, peak


def report_sweep(root: Path, cls: type, n_trials: int, smoke: bool) -> tuple[float, ...]:
    """Run the timed sweep in `root`/sweep and print where its time goes; returns (framework
    seconds per trial, mean training seconds per trial, start-up seconds, peak RSS in MiB)."""
    # one trial at a time, in-process: the loop's time less the trials' is then the
    # framework's own (parallel trials overlap, which benchmarks/sweep_speed.py measures)
    serial = ["hydra/launcher=basic", "hydra.sweeper.n_jobs=1"]
    if smoke:
        sweep_args = [f"hydra.sweeper.n_trials={n_trials}", "train.epochs=1", *serial]
    else:
        sweep_args = [f"hydra.sweeper.n_trials={n_trials}", "train.log_every=5",
                      f"data={'fashion_mnist' if cls is datasets.FashionMNIST else 'mnist'}",
                      f"data.root={root / 'data'}", "data.fallback_dir=null",
                      *serial]  # fmt: skip
    cwd = root / "sweep"
    cwd.mkdir()
    wall, loop, results, peak = sweep_run(cwd, sweep_args)
    train_sum = results["train_seconds"].sum()
    per_trial = (loop - train_sum) / n_trials
    mean_trial = train_sum / n_trials
    print(f"sweep: {n_trials} trials, {' '.join(sweep_args[1:])}")
    print(f"  wall {wall:.1f} s = start-up and data load {wall - loop:.1f} s"
          f" + trial loop {loop:.1f} s")  # fmt: skip
    print(f"  trial loop = training {train_sum:.1f} s + framework {loop - train_sum:.1f} s"
          f" (Hydra job setup, Optuna ask/tell, evaluation, files, CSV)")  # fmt: skip
    print(f"  framework overhead per trial: {per_trial:.3f} s"
          f" = {100 * per_trial / mean_trial:.1f}% of a {mean_trial:.2f} s trial")  # fmt: skip
    print(f"  peak RSS of the sweep process: {peak:.0f} MiB")
    return per_trial, mean_trial, wall - loop, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="epochs timed for each side")
    parser.add_argument("--sweep-trials", type=int, default=20)
    parser.add_argument("--smoke", action="store_true", help="tiny data, 1 repeat, 2 trials")
    args = parser.parse_args()
    repeats, n_trials = (1, 2) if args.smoke else (args.repeats, args.sweep_trials)
    set_threads(None)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device cpu")

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cls, what = prepare_data(root / "data", args.smoke)
        print(f"data: {what}")
        train_set = cls(root / "data", train=True, transform=transforms.ToTensor())
        test_set = cls(root / "data", train=False, transform=transforms.ToTensor())
        to_unit = lambda t: t.float().div(255.0)  # noqa: E731 - what ToTensor computes
        data = Dataset(
            to_unit(train_set.data), train_set.targets, to_unit(test_set.data), test_set.targets,
            to_unit(test_set.data), test_set.targets, (28, 28), 10,
        )  # fmt: skip
        n = len(data.y_train)

        seed_s, seed_train_s, ours_s, ours_train_s, auto_s, auto_train_s = [], [], [], [], [], []
        for r in range(repeats):  # alternate, so drifts in machine load hit every side
            train_s, test_s = seed_epoch(train_set, test_set)
            seed_s.append(train_s + test_s)
            seed_train_s.append(train_s)
            for fast, epochs, trains in ((True, ours_s, ours_train_s),
                                         (False, auto_s, auto_train_s)):  # fmt: skip
                epoch_s, eval_s = trainer_epoch(data, seed=r, fast=fast)
                epochs.append(epoch_s)
                trains.append(epoch_s - eval_s)
        seed_med, ours_med = statistics.median(seed_s), statistics.median(ours_s)
        seed_train, ours_train = statistics.median(seed_train_s), statistics.median(ours_train_s)
        auto_med, auto_train = statistics.median(auto_s), statistics.median(auto_train_s)
        train_only, fast_gain = seed_train / ours_train, auto_train / ours_train
        gflops, bound = flop_bound(n)
        print(f"epoch = training on {n} images at batch {BATCH} + evaluating {len(data.y_val)},"
              f" median of {repeats}:")  # fmt: skip
        print(f"  seed's loop (Dataset+ToTensor+DataLoader): {seed_med:.3f} s"
              f" (training alone {seed_train:.3f} s)")  # fmt: skip
        print(f"  l1sweep trainer (sweep.training.train.fit):         {ours_med:.3f} s"
              f" (training alone {ours_train:.3f} s)")  # fmt: skip
        print(f"  the same with autograd (train.fast=false): {auto_med:.3f} s"
              f" (training alone {auto_train:.3f} s)")  # fmt: skip
        print(f"  speedup: {train_only:.1f}x training alone, {seed_med / ours_med:.1f}x the epoch;"
              f" the fast steps {fast_gain:.2f}x autograd's training")  # fmt: skip
        print(f"  FLOP bound: {gflops:.0f} GFLOP/s on the layer shapes -> {bound:.3f} s of"
              f" training; the trainer takes {ours_train / bound:.1f}x that"
              f" (autograd {auto_train / bound:.1f}x)")  # fmt: skip

        per_trial, mean_trial, startup, peak = report_sweep(root, cls, n_trials, args.smoke)
    print(
        f"speedup_vs_seed={train_only:.2f} speedup_epoch_with_eval={seed_med / ours_med:.2f}"
        f" trainer_over_flop_bound={ours_train / bound:.2f} fast_over_autograd={fast_gain:.2f}"
        f" autograd_over_flop_bound={auto_train / bound:.2f}"
        f" overhead_per_trial_s={per_trial:.3f} overhead_pct={100 * per_trial / mean_trial:.2f}"
        f" startup_s={startup:.2f} peak_rss_mib={peak:.0f}"
    )


if __name__ == "__main__":
    main()
