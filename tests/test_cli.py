"""The user's path end to end: real processes, real Hydra, real Optuna, digits data."""

import json
import re
import shlex
import subprocess
import sys

import pandas as pd
import pytest
import torch

from conftest import run_cli

REQUIRED = [
    "trial", "l1_lambda", "l2_lambda", "regularizer", "model", "data", "optimizer", "seed",
    "epochs", "val_acc", "test_acc", "sparsity", "nnz", "n_params", "train_loss",
    "train_seconds", "overrides", "command", "run_dir",
]  # fmt: skip


def test_sweep_writes_one_row_per_trial_with_honest_values(small_sweep):
    cwd, df, proc = small_sweep
    assert list(df["trial"]) == [0, 1, 2]
    assert set(REQUIRED) <= set(df.columns)
    assert (df["status"] == "complete").all()
    assert df["l1_lambda"].between(1e-5, 1e-3).all()
    assert df["val_acc"].between(0, 1).all() and df["test_acc"].between(0, 1).all()
    assert df["sparsity"].between(0, 1).all()
    assert (df["sparsity"] == (df["n_params"] - df["nnz"]) / df["n_params"]).all()
    assert (df["n_params"] == 64 * 128 + 128 + 128 * 10 + 10).all()
    assert (df[["data", "model", "regularizer", "optimizer"]].iloc[0].tolist()
            == ["digits", "simple_net", "l1_prox", "sgd"])  # fmt: skip
    assert (df["epochs"] == 1).all() and (df["seed"] == 0).all()
    for row in df.itertuples():
        metrics = json.loads((cwd / row.run_dir / "metrics.json").read_text())
        assert metrics["val_acc"] == row.val_acc and metrics["sparsity"] == row.sparsity
        assert (cwd / row.run_dir / ".hydra" / "config.yaml").exists()
        assert row.run_dir.endswith(f"trial_{row.trial}")
        assert f"l1_lambda={row.l1_lambda!r}" in row.overrides
    out = proc.stdout + proc.stderr
    # parallel trials (n_jobs=auto) finish in any order: the third to finish says 3/3
    assert re.search(r"trial [012] \[3/3\] complete", out) and "best: trial" in out
    assert proc.stdout.strip().endswith("outputs/sweeps/small/results.csv")


def test_a_sweep_prints_a_line_per_trial_and_keeps_the_epochs_in_each_trials_run_log(
    small_sweep,
):
    cwd, df, proc = small_sweep
    lines = (proc.stdout + proc.stderr).splitlines()
    trial_lines = [ln for ln in lines if re.search(r"trial \d+ \[\d/3\] complete", ln)]
    assert len(trial_lines) == 3
    # no epoch lines, no launch lines, no bar (not a terminal: no carriage return, no escape)
    assert not [ln for ln in lines if "epoch " in ln or " : l1_lambda=" in ln]
    assert "\r" not in proc.stdout + proc.stderr and "\x1b[" not in proc.stdout + proc.stderr
    # what is not a trial's line is the sweep's start and end, whatever the number of trials:
    # the README's 20-trial sweep prints at most 20 + 20 = 40 lines
    assert len(lines) - len(trial_lines) <= 20, lines
    for row in df.itertuples():  # each trial's epochs are in its own run.log
        log = (cwd / row.run_dir / "run.log").read_text()
        assert log.count("epoch 1/1 ") == 1 and "complete: val_acc" in log


def test_a_row_is_reproduced_exactly_by_its_overrides(small_sweep):
    cwd, df, _ = small_sweep
    row = df.iloc[1]
    run_cli(cwd, *shlex.split(row["overrides"]), "hydra.run.dir=outputs/repro")
    metrics = json.loads((cwd / "outputs" / "repro" / "metrics.json").read_text())
    for key in ("val_acc", "test_acc", "sparsity", "nnz", "train_loss"):
        assert metrics[key] == row[key], key


def test_single_run_writes_metrics_layers_and_weights(tmp_path):
    proc = run_cli(tmp_path, "train.epochs=30", "l1_lambda=1e-3", "hydra.run.dir=outputs/one")
    out = tmp_path / "outputs" / "one"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "complete" and metrics["epochs"] == 30
    assert metrics["val_acc"] > 0.5 and metrics["test_acc"] > 0.5  # chance is 0.1
    layers = pd.read_csv(out / "layers.csv")
    assert layers["n"].sum() == metrics["n_params"] and layers["nnz"].sum() == metrics["nnz"]
    state = torch.load(out / "model.pt", weights_only=True)
    assert state["fc1.weight"].shape == (128, 64)
    # each tensor its own, not a view of the trainer's flat buffer
    assert state["fc1.weight"].untyped_storage().nbytes() == 128 * 64 * 4
    assert (
        int((state["fc1.weight"] != 0).sum()) == layers.set_index("layer").loc["fc1.weight", "nnz"]
    )
    epoch_lines = [
        ln for ln in proc.stderr.splitlines() + proc.stdout.splitlines() if "epoch " in ln
    ]
    assert len(epoch_lines) == 30 and "val_acc" in epoch_lines[-1] and "sparsity" in epoch_lines[-1]


def test_an_unwritable_data_root_is_one_line(tmp_path):
    (tmp_path / "afile").write_text("")  # data.root below a file: its raw/ cannot be made
    fallback = tmp_path / "debian"
    fallback.mkdir()
    proc = run_cli(tmp_path, "data=fashion_mnist", "data.root=afile/data",
                   f"data.fallback_dir={fallback}", check=False)  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "Traceback" not in out, out
    # named absolute: read from where the command started (sweep/config/paths.py)
    assert f"cannot write its files under {tmp_path}/afile/data/FashionMNIST/raw (Not a dir" in out
    assert "set data.root to a writable directory" in out


def test_bad_input_stops_a_sweep_before_any_trial(tmp_path):
    proc = run_cli(tmp_path, "-m", "train.epochs=0", "hydra.sweeper.study_name=bad", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "train.epochs must be an integer >= 1" in out
    assert "Traceback" not in out and "trial 0" not in out


@pytest.mark.parametrize(
    "args,pinned",
    [
        (["recipe=none", "train.epochs=20"],
         {"val_acc": 0.8229166666666666, "test_acc": 0.7888888888888889, "nnz": 9599,
          "sparsity": 0.0011446409989594173, "train_loss": 1.9841197801378039}),
        (["recipe=none", "train.epochs=20", "regularizer=l1", "l1_lambda=3e-4", "seed=1"],
         {"val_acc": 0.7673611111111112, "test_acc": 0.7833333333333333, "nnz": 9610,
          "sparsity": 0.0, "train_loss": 2.1399938795301647}),
    ],
    ids=["l1_prox", "l1-penalty"],
)  # fmt: skip
def test_the_seed_recipe_gives_the_numbers_it_gave_before_schedules_and_pruning(
    tmp_path, args, pinned
):
    # Recorded with the code before the schedule/prune groups existed (torch 2.14, CPU): the
    # defaults (constant lr, prune=none, plain SGD) must still train the same model; recipe=none
    # is the seed's recipe (lr 0.01) that digits' own default (lr 0.75) replaced.
    run_cli(tmp_path, *args, "hydra.run.dir=out")
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert m["schedule"] == "constant" and m["prune"] == "none"
    assert not any(k.startswith(("trained_", "oneshot_", "prune_")) for k in m)
    for key, value in pinned.items():
        assert m[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key


@pytest.mark.slow
def test_single_runs_never_overwrite_another_runs_files(tmp_path):
    from sweep.run import free_dir

    # the default directory, outputs/runs/<date>_<time>: a second run in the same second
    # gets <time>_1 (the name is taken by creating it)
    taken = tmp_path / "runs" / "2026-01-01_00-00-00"
    taken.mkdir(parents=True)
    assert free_dir(str(taken)) == f"{taken}_1" and (tmp_path / "runs" / f"{taken.name}_1").is_dir()
    assert free_dir(str(taken)) == f"{taken}_1"  # the same for the rest of the process
    procs = [subprocess.Popen([sys.executable, "-m", "sweep.run", "train.epochs=1"], cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for _ in range(2)]  # fmt: skip
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    runs = sorted((tmp_path / "outputs" / "runs").iterdir())
    assert len(runs) == 2 and all((r / "metrics.json").exists() for r in runs)
    # a directory given on the command line that holds a run is refused before Hydra writes
    held = runs[0].relative_to(tmp_path)
    before = {p: p.read_bytes() for p in runs[0].rglob("*") if p.is_file()}
    proc = run_cli(tmp_path, "train.epochs=2", f"hydra.run.dir={held}", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "Traceback" not in out, out
    assert (
        f"error: hydra.run.dir={held} already holds a run ({held}/metrics.json); l1sweep does "
        "not overwrite one: choose another directory, or remove that one first" in out
    )
    assert {p: p.read_bytes() for p in runs[0].rglob("*") if p.is_file()} == before
