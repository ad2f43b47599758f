"""The benchmark script must keep running: a smoke run on tiny synthetic data."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

# benchmarks' smoke runs
pytestmark = pytest.mark.slow

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


def test_structured_benchmark_smoke_compacts_and_times_dense_against_compact(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "structured.py"), "--smoke"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    seed = next(ln for ln in lines if ln.startswith("seed 0:"))
    assert "dense 64-128-10" in seed and "logit gap" in seed, proc.stdout
    shape = seed.split("| compact ")[1].split()[0]
    widths = list(map(int, shape.split("-")))
    assert widths[1] == 32 and widths[-1] == 10 and widths[0] <= 64  # 128 * (1 - 0.75) left
    figures = dict(pair.split("=") for pair in lines[-1].split())
    assert set(figures) == {
        "seeds", "dense_test_acc", "compact_test_acc", "mean_drop_points", "speedup_batch256",
        "speedup_batch1", "flops_ratio", "min_speedup_batch256", "min_speedup_batch1",
        "run_speedup_batch256", "run_speedup_batch1",
    }  # fmt: skip
    assert figures["seeds"] == "1" and float(figures["compact_test_acc"]) > 0.8
    assert float(figures["flops_ratio"]) == pytest.approx(
        (64 * 128 + 1280) / (widths[0] * 32 + 320), rel=1e-3
    )
    assert float(figures["speedup_batch256"]) > 0 and float(figures["speedup_batch1"]) > 0
    assert (tmp_path / "structured-bench" / "simple_net_structured_0" / "model.pt").exists()


def test_compact_artifact_benchmark_smoke_times_the_loaded_file_on_full_inputs(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "compact_artifact.py"), "--smoke",
         "--seeds", "0", "--no-onnx"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    seed = next(ln for ln in lines if ln.startswith("seed 0:"))
    assert "folded" in seed and "logit gap" in seed, proc.stdout  # digits: 64 pixels, most kept
    figures = dict(pair.split("=") for pair in lines[-1].split())
    assert {"artifact_256", "gather_256", "pre_256", "artifact_1", "max_drop_points"} <= set(
        figures
    )
    assert figures["seeds"] == "1" and float(figures["artifact_256"]) > 0
    export = tmp_path / "artifact-bench" / "simple_net_structured_0" / "export"
    assert (export / "model.compact.l1z").exists() and (export / "export.csv").exists()
