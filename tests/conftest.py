from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]

# The suite runs a worker per core (pyproject's -n auto), and most tests start a sweep process
# beside another worker's. OpenMP's threads spin while they wait for work (its default ACTIVE
# policy), taking the core the other process needs: 30 digits epochs on 2 threads took 1.3 s
# beside a busy core, 0.4 s with PASSIVE threads, which sleep instead. The arithmetic, and so
# every number a test checks, is the same. Set before torch is imported here or in a child.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# Every Python process a test starts skips the final garbage collections at its exit
# (tests/harness/sitecustomize.py): ~1.5 s each, and the suite starts hundreds.
HARNESS = Path(__file__).resolve().parent / "harness"
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HARNESS), os.getenv("PYTHONPATH")]))


def run_cli(
    cwd: Path, *args: str, check: bool = True, env: dict | None = None, timeout: float = 600
):
    """Run `python -m sweep.run ARGS` in cwd, as a user would."""
    proc = subprocess.run(
        [sys.executable, "-m", "sweep.run", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})},
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def copy_sweep(sweep_dir: Path, dest: Path) -> Path:
    """A copy of a sweep directory whose results.csv names the copy's own trial dirs: for a
    test that writes into a sweep other tests share (a session fixture must stay as made)."""
    shutil.copytree(sweep_dir, dest)
    results = pd.read_csv(dest / "results.csv")
    results["run_dir"] = results["run_dir"].str.replace(str(sweep_dir), str(dest), regex=False)
    results.to_csv(dest / "results.csv", index=False)
    return dest


def write_idx(path: Path, array: np.ndarray, gz: bool = False) -> None:
    """Write an IDX file (the MNIST format): magic, big-endian dims, raw uint8 data."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    data = header + array.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)


def write_mnist_like(folder: Path, n_train: int = 600, n_test: int = 200, gz: bool = False):
    """Small IDX files whose images carry their label (learnable), from digits pixels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(0)

    def make(n):
        idx = rng.integers(0, len(digits.target), n)
        images = np.zeros((n, 28, 28), dtype=np.uint8)
        small = (digits.images[idx] * 15).astype(np.uint8)  # 0..240
        images[:, 10:18, 10:18] = small
        return images, digits.target[idx].astype(np.uint8)

    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images, labels = make(n)
        write_idx(folder / f"{prefix}-images-idx3-ubyte", images, gz)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels, gz)


@pytest.fixture(scope="session")
def small_sweep(tmp_path_factory) -> tuple[Path, pd.DataFrame, subprocess.CompletedProcess]:
    """One real 3-trial sweep on digits, shared by the tests that read its outputs."""
    cwd = tmp_path_factory.mktemp("sweep")
    proc = run_cli(
        cwd, "-m", "hydra.sweeper.n_trials=3", "hydra.sweeper.study_name=small",
        "train.epochs=1",
    )  # fmt: skip
    csv = cwd / "outputs" / "sweeps" / "small" / "results.csv"
    return cwd, pd.read_csv(csv), proc
