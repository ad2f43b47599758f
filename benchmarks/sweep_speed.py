"""A whole sweep, timed as a user sees it: wall time of the whole process, start-up included.

1. The same 10-trial, 5-epoch Fashion-MNIST TPE sweep over l1_lambda run
   (a) as the seed's loop in a Hydra task under the stock hydra-optuna-sweeper
       (benchmarks/seed_task/: what a user builds from the seed without l1sweep), and
   (b) with l1sweep's defaults (`python -m sweep.run -m data=fashion_mnist
       hydra.sweeper.n_trials=10`), and for reference (b1) the same with one trial at a time
       in-process (`hydra/launcher=basic hydra.sweeper.n_jobs=1`, the defaults before auto).
2. The default sweep (`python -m sweep.run -m`: 20 trials on digits) with
   `hydra/launcher=basic hydra.sweeper.n_jobs=1` against the defaults (`n_jobs=auto`).
3. With --gpu: both sweeps on the GPU (device=cuda), one trial at a time against 2 and 4
   sharing the GPU (auto's at most 4, in joblib's workers: a GPU trial cannot be forked);
   --gpu-data picks digits, fashion or both.

    python benchmarks/sweep_speed.py            # 1 and 2, on the CPU
    python benchmarks/sweep_speed.py --only 2   # the default-sweep comparison alone
    python benchmarks/sweep_speed.py --gpu      # 3 only

Each run gets a fresh directory and storage; the pairs run back to back, so they share the
machine's load. The data comes unpacked from the Debian package's IDX files (as
benchmarks/train_speed.py). The last line is machine-readable: key=value pairs.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import pandas as pd
import processes

REPO = Path(__file__).resolve().parents[1]
DEBIAN = Path("/usr/share/datasets/fashion-mnist")
SERIAL = ["hydra/launcher=basic", "hydra.sweeper.n_jobs=1"]


def timed(args: list[str], cwd: Path) -> float:
    """Seconds the whole process took; its output is kept in cwd/log.txt."""
    return processes.timed(args, cwd)[1]


def l1sweep(tmp: Path, name: str, *args: str) -> tuple[float, pd.DataFrame, str]:
    cwd = tmp / name
    cwd.mkdir()
    seconds = timed([sys.executable, "-m", "sweep.run", "-m", "hydra.sweeper.study_name=b",
                     *args], cwd)  # fmt: skip
    log = (cwd / "log.txt").read_text()
    plan = next((ln.split("[HYDRA] ")[1] for ln in log.splitlines() if "at a time" in ln), "")
    return seconds, pd.read_csv(cwd / "outputs" / "sweeps" / "b" / "results.csv"), plan


def seed_task(tmp: Path, data_root: Path, trials: int, epochs: int) -> tuple[float, float]:
    cwd = tmp / "seed"
    cwd.mkdir()
    seconds = timed([sys.executable, str(REPO / "benchmarks" / "seed_task" / "app.py"), "-m",
                     f"data_root={data_root}", f"hydra.sweeper.n_trials={trials}",
                     f"epochs={epochs}", f"hydra.sweep.dir={cwd}/multirun"], cwd)  # fmt: skip
    best = (cwd / "multirun" / "optimization_results.yaml").read_text()
    value = float(best.split("best_value:")[1].split()[0])
    return seconds, value


def fashion(tmp: Path, trials: int, epochs: int, source: Path) -> dict[str, float]:
    from sweep.data.datasets import _unpack_fallback

    if not source.is_dir():
        sys.exit(f"no Fashion-MNIST at {source} (Debian's dataset-fashion-mnist); use --only 2")
    root = tmp / "data"
    _unpack_fallback(root / "FashionMNIST" / "raw", source)
    print(
        f"1. Fashion-MNIST, {trials} TPE trials of {epochs} epochs over l1_lambda, whole process:"
    )
    seed_s, seed_best = seed_task(tmp, root, trials, epochs)
    print(f"  (a) seed's loop, stock hydra-optuna-sweeper: {seed_s:6.1f} s"
          f"  (best test acc {seed_best / 100:.4f})")  # fmt: skip
    data = ["data=fashion_mnist", f"hydra.sweeper.n_trials={trials}", f"train.epochs={epochs}",
            f"data.root={root}", "data.fallback_dir=null"]  # fmt: skip
    ours, df, plan = l1sweep(tmp, "fashion_auto", *data)
    print(f"  (b) l1sweep defaults:                         {ours:6.1f} s"
          f"  (best val acc {df['val_acc'].max():.4f}; {plan})")  # fmt: skip
    serial, df1, _ = l1sweep(tmp, "fashion_serial", *data, *SERIAL)
    print(f"  (b1) l1sweep, one trial at a time:             {serial:6.1f} s"
          f"  (best val acc {df1['val_acc'].max():.4f})")  # fmt: skip
    print(f"  (a)/(b) = {seed_s / ours:.1f}x   (a)/(b1) = {seed_s / serial:.1f}x"
          f"   (b1)/(b) = {serial / ours:.2f}x")  # fmt: skip
    return {"seed_s": seed_s, "l1sweep_s": ours, "serial_s": serial,
            "ratio": seed_s / ours, "parallel_gain": serial / ours}  # fmt: skip


def default_sweep(tmp: Path) -> dict[str, float]:
    print("2. The default sweep (python -m sweep.run -m: digits, 20 trials), whole process:")
    serial, df1, _ = l1sweep(tmp, "digits_serial", *SERIAL)
    print(f"  n_jobs=1 (hydra/launcher=basic): {serial:6.1f} s  ({len(df1)} rows)")
    auto, df, plan = l1sweep(tmp, "digits_auto")
    print(f"  n_jobs=auto (the defaults):      {auto:6.1f} s  ({len(df)} rows; {plan})")
    print(f"  n_jobs=1 / auto = {serial / auto:.2f}x")
    return {"default_serial_s": serial, "default_auto_s": auto, "default_gain": serial / auto}


def gpu(tmp: Path, trials: int, epochs: int, source: Path, sets: str) -> dict[str, float]:
    from sweep.data.datasets import _unpack_fallback

    root = tmp / "data"
    _unpack_fallback(root / "FashionMNIST" / "raw", source)
    fashion = ["data=fashion_mnist", f"hydra.sweeper.n_trials={trials}", f"train.epochs={epochs}",
               f"data.root={root}", "data.fallback_dir=null"]  # fmt: skip
    figures = {}
    runs = {
        "digits": ("digits, 20 trials", []),
        "fashion": (f"Fashion-MNIST, {trials} trials", fashion),
    }
    for what, args in (runs[k] for k in runs if sets in (k, "both")):
        print(f"3. {what} on the GPU (device=cuda), whole process:")
        key = "gpu_digits" if not args else "gpu_fashion"
        for jobs in (1, 2, 4):
            seconds, df, plan = l1sweep(tmp, f"{key}_{jobs}", "device=cuda", *args,
                                        f"hydra.sweeper.n_jobs={jobs}")  # fmt: skip
            print(f"  n_jobs={jobs}: {seconds:6.1f} s  (best val acc {df['val_acc'].max():.4f};"
                  f" {plan})")  # fmt: skip
            figures[f"{key}_{jobs}_s"] = seconds
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", type=int, choices=(1, 2))
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--gpu", action="store_true")
    parser.add_argument("--gpu-data", choices=("digits", "fashion", "both"), default="both")
    parser.add_argument("--fashion-dir", type=Path, default=DEBIAN, help="its IDX .gz files")
    a = parser.parse_args()
    import torch

    cores = len(os.sched_getaffinity(0))
    device = torch.cuda.get_device_name() if a.gpu else "cpu"
    print(f"torch {torch.__version__}, {cores} cores, device {device}")
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        if a.gpu:
            figures.update(gpu(Path(tmp), a.trials, a.epochs, a.fashion_dir, a.gpu_data))
        elif a.only in (None, 1):
            figures.update(fashion(Path(tmp), a.trials, a.epochs, a.fashion_dir))
        if a.only in (None, 2) and not a.gpu:
            figures.update(default_sweep(Path(tmp)))
    print(" ".join(f"{k}={v:.2f}" for k, v in figures.items()))


if __name__ == "__main__":
    main()
