"""Every trial compresses its model: model.l1z beside model.pt, its bytes and accuracies in the
row and in rounds.csv, and objective=pareto_size searches accuracy against those bytes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import optuna
import pandas as pd
import pytest

from conftest import run_cli


@pytest.fixture(scope="module")
def size_sweep(tmp_path_factory):
    """A real 3-trial accuracy-versus-bytes sweep with two prune rounds, on digits."""
    cwd = tmp_path_factory.mktemp("size")
    run_cli(
        cwd, "-m", "objective=pareto_size", "prune=magnitude", "prune.rounds=2",
        "prune.epochs=1", "train.epochs=3", "hydra.sweeper.n_trials=3",
        "hydra.sweeper.study_name=size", "export.bits=choice(3,5)",
        "prune.sparsity=interval(0.5,0.95)",
    )  # fmt: skip
    sweep = cwd / "outputs" / "sweeps" / "size"
    return cwd, sweep, pd.read_csv(sweep / "results.csv")


def test_each_trial_writes_its_archive_and_the_row_says_its_size(size_sweep):
    _, sweep, frame = size_sweep
    assert len(frame) == 3 and frame["status"].eq("complete").all()
    for _, row in frame.iterrows():
        trial = sweep / f"trial_{row['trial']}"
        size = (trial / "model.l1z").stat().st_size
        assert row["archive_bytes"] == size  # bytes on disk, everything included
        dense = (trial / "model.pt").stat().st_size
        assert row["compression"] == pytest.approx(dense / size, rel=0.01)
        assert row["compression"] > 2  # a pruned model's archive is far smaller
        metrics = json.loads((trial / "metrics.json").read_text())
        assert metrics["archive_bytes"] == size
        assert 0 <= row["archive_test_acc"] <= 1


@pytest.mark.slow
def test_the_rows_archive_accuracy_is_the_files_read_back(size_sweep):
    """sweep.export loads model.l1z from disk and measures it: the trial's own figure agrees."""
    cwd, sweep, frame = size_sweep
    row = frame.iloc[0]
    trial = sweep / f"trial_{row['trial']}"
    overrides = (trial / ".hydra" / "overrides.yaml").read_text()
    bits = 3 if "export.bits=3" in overrides else 5
    proc = subprocess.run(
        [sys.executable, "-m", "sweep.export", str(trial), "--bits", str(bits), "--no-onnx"],
        cwd=cwd, capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    exported = pd.read_csv(trial / "export" / "export.csv").set_index("artifact")
    l1z = exported.loc["model.l1z"]
    assert l1z["bytes"] == row["archive_bytes"]
    assert l1z["test_acc"] == pytest.approx(row["archive_test_acc"], abs=1e-9)
    assert l1z["val_acc"] == pytest.approx(row["archive_val_acc"], abs=1e-9)


def test_every_prune_round_is_measured_in_bytes(size_sweep):
    _, sweep, frame = size_sweep
    row = frame.iloc[-1]
    rounds = pd.read_csv(sweep / f"trial_{row['trial']}" / "rounds.csv")
    assert list(rounds["round"]) == [1, 2]
    # more zeros, fewer bytes; the last round is the final model
    assert rounds["sparsity"].is_monotonic_increasing
    assert rounds["archive_bytes"].iloc[0] > rounds["archive_bytes"].iloc[1]
    assert rounds["archive_bytes"].iloc[-1] == row["archive_bytes"]
    assert rounds["archive_test_acc"].iloc[-1] == pytest.approx(row["archive_test_acc"])


def test_pareto_size_optimizes_accuracy_against_bytes(size_sweep):
    cwd, _, frame = size_sweep
    study = optuna.load_study(study_name="size", storage=f"sqlite:///{cwd}/outputs/optuna.db")
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    assert study.metric_names == ["val_acc", "archive_bytes"]
    for t in study.trials:
        row = frame.set_index("trial").loc[t.number]
        assert t.values == [pytest.approx(row["val_acc"]), row["archive_bytes"]]
    assert set(frame["trial"][frame["pareto"]]) == {t.number for t in study.best_trials}
    assert {"export.bits"} <= set(study.trials[0].params)
