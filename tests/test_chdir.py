"""Hydra's `hydra.job.chdir=true`: each job runs inside its own directory, and every relative
path or URL l1sweep opens still reads from the directory the command was started in
(sweep/config/paths.py): the study's storage for an early-stopping pruner, MLflow's store, a
data file."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer

from conftest import run_cli
from sweep.config.paths import started_in, url_started_in

pytestmark = pytest.mark.slow


def test_relative_urls_and_paths_are_made_absolute_from_the_start_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # outside a Hydra run: the process's own directory
    assert (
        url_started_in("sqlite:///outputs/optuna.db") == f"sqlite:///{tmp_path}/outputs/optuna.db"
    )
    assert url_started_in("sqlite:////abs/x.db") == "sqlite:////abs/x.db"
    for kept in ("sqlite://", "sqlite:///:memory:", "http://127.0.0.1:5000",
                 "postgresql://u@h/db", "file:///abs/mlruns"):  # fmt: skip
        assert url_started_in(kept) == kept
    assert url_started_in("mlruns") == f"{tmp_path}/mlruns"
    assert url_started_in("file:mlruns") == f"file:{tmp_path}/mlruns"
    assert started_in("data/x.csv") == tmp_path / "data" / "x.csv"
    assert started_in("/abs/x.csv").as_posix() == "/abs/x.csv"


def test_a_sweep_and_a_run_under_chdir_read_and_write_where_the_command_started(tmp_path):
    mlflow = pytest.importorskip("mlflow")
    load_breast_cancer(as_frame=True).frame.to_csv(tmp_path / "bc.csv", index=False)
    table = ("data=csv", "data.path=bc.csv", "data.target=target", "model=linear")
    run_cli(
        tmp_path, "-m", "hydra.job.chdir=true", *table, "hydra/sweeper/pruner=median",
        "hydra.sweeper.pruner.n_startup_trials=1", "hydra.sweeper.pruner.n_warmup_steps=1",
        "logger=mlflow", "train.epochs=4", "hydra.sweeper.n_trials=3",
        "hydra.sweeper.n_jobs=1", "hydra.sweeper.study_name=cd",
    )  # fmt: skip
    sweep_dir = tmp_path / "outputs" / "sweeps" / "cd"
    rows = pd.read_csv(sweep_dir / "results.csv")
    assert len(rows) == 3 and set(rows["status"]) <= {"complete", "pruned"}, rows["status"]
    # the pruner's reports reached the study: every trial has its epochs' values
    import optuna

    study = optuna.load_study(study_name="cd", storage=f"sqlite:///{tmp_path}/outputs/optuna.db")
    assert all(t.intermediate_values for t in study.trials)
    # one MLflow store, the documented one, holding every trial; none beside the trials
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/outputs/mlflow.db")
    runs = mlflow.search_runs(experiment_names=["l1sweep"])
    assert sorted(runs[runs["tags.l1sweep.role"] == "trial"]["tags.l1sweep.trial"]) == [
        "0", "1", "2"]  # fmt: skip
    strays = [p for p in sweep_dir.rglob("*") if p.suffix == ".db" or p.name == "outputs"]
    assert strays == []

    # a single run: its data file read from here, its files in its own directory
    run_cli(tmp_path, "hydra.job.chdir=true", *table, "train.epochs=2", "hydra.run.dir=one")
    metrics = json.loads((tmp_path / "one" / "metrics.json").read_text())
    assert metrics["status"] == "complete" and metrics["val_acc"] > 0.5
