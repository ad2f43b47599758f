from __future__ import annotations

import contextlib
import gzip
import os
import shutil
import signal
import subprocess
import sys
import types
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
sys.path.insert(0, str(HARNESS))  # forked_cli, for run_module


# Environment keys whose change a forked child cannot honour: PYTHONPATH changes what imports
# (the server imported torch, l1sweep, ... already), OMP_*/MKL_* what the OpenMP runtime read
# when torch was imported. A call that sets one runs in a fresh interpreter.
IMPORT_TIME_KEYS = ("PYTHONPATH", "PYTHONHOME", "OMP_", "MKL_", "GOMP_", "KMP_")
_fresh_path: dict[str, list[str]] = {}


def _python_path(env: dict[str, str]) -> list[str]:
    """sys.path of a fresh `python -m` in this environment, its first entry (the working
    directory) left out: asked once of a real interpreter."""
    key = env.get("PYTHONPATH", "")
    if key not in _fresh_path:
        out = subprocess.run([sys.executable, "-c", "import sys; print(repr(sys.path[1:]))"],
                             capture_output=True, text=True, env=env, check=True)  # fmt: skip
        _fresh_path[key] = eval(out.stdout)
    return _fresh_path[key]


def run_module(module: str, cwd: Path, *args: str, env: dict | None = None,
               timeout: float = 600) -> subprocess.CompletedProcess:  # fmt: skip
    """`python -m MODULE ARGS` in cwd, as a user runs it: in a process forked from a server
    that preloaded the libraries (tests/harness/forked_cli.py), or a fresh interpreter where
    `env` sets a key that must be read at start-up (IMPORT_TIME_KEYS). Returns what
    subprocess.run returns; raises subprocess.TimeoutExpired after `timeout` seconds."""
    import multiprocessing
    import tempfile

    full_env = {**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}
    changed = [k for k in env or {} if os.environ.get(k) != env[k]]
    if any(k.startswith(IMPORT_TIME_KEYS) for k in changed) or os.getenv("L1SWEEP_TEST_FRESH"):
        command = [sys.executable, "-m", module, *args]
        return subprocess.run(
            command, cwd=cwd, capture_output=True, text=True, env=full_env, timeout=timeout
        )
    import forked_cli

    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["forked_cli", *forked_cli.PRELOAD])
    path = [str(Path(cwd).resolve()), *_python_path(full_env)]
    with tempfile.TemporaryDirectory() as tmp:
        out, err = f"{tmp}/stdout", f"{tmp}/stderr"
        call = (module, list(args), str(cwd), full_env, path, out, err)
        child = ctx.Process(target=forked_cli.main, args=call)
        main = sys.modules["__main__"]
        # multiprocessing would re-run the parent's __main__ (pytest's) in the child first
        sys.modules["__main__"] = types.ModuleType("__main__")
        try:
            child.start()
        finally:
            sys.modules["__main__"] = main
        child.join(timeout)
        if child.exitcode is None:  # the call and its trials, forkservers, workers
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)
            child.join()
            raise subprocess.TimeoutExpired([module, *args], timeout)
        return subprocess.CompletedProcess(
            [sys.executable, "-m", module, *args], child.exitcode,
            Path(out).read_text(errors="replace"), Path(err).read_text(errors="replace"),
        )  # fmt: skip


def run_cli(
    cwd: Path, *args: str, check: bool = True, env: dict | None = None, timeout: float = 600
):
    """Run `python -m sweep.run ARGS` in cwd, as a user would (`run_module`)."""
    proc = run_module("sweep.run", cwd, *args, env=env, timeout=timeout)
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
