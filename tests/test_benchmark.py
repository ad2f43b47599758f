"""The benchmark script must keep running: a smoke run on tiny synthetic data."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_benchmark_smoke_prints_its_figures_and_a_parsable_last_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "train_speed.py"), "--smoke"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert "data: synthetic" in proc.stdout and "seed's loop" in proc.stdout
    assert "with autograd (train.fast=false)" in proc.stdout
    figures = dict(pair.split("=") for pair in lines[-1].split())
    assert set(figures) == {
        "speedup_vs_seed", "speedup_epoch_with_eval", "trainer_over_flop_bound",
        "fast_over_autograd", "autograd_over_flop_bound",
        "overhead_per_trial_s", "overhead_pct", "startup_s", "peak_rss_mib",
    }  # fmt: skip
    assert all(float(v) > 0 for v in figures.values()), proc.stdout
