"""repeats: each trial trains seed, seed+1, ... (Monte-Carlo cross-validation); rows hold the
mean, *_std the spread, metrics.json each seed's figures."""

from __future__ import annotations

import json
import shlex
import statistics

import optuna
import pandas as pd
import pytest

from conftest import REPO, run_cli

ARGS = ["train.epochs=2", "repeats=3"]


@pytest.fixture(scope="module")
def repeated_sweep(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("repeats")
    run_cli(cwd, "-m", "hydra.sweeper.n_trials=2", "hydra.sweeper.study_name=rep", *ARGS)
    return cwd, pd.read_csv(cwd / "outputs" / "sweeps" / "rep" / "results.csv")


def test_a_row_is_the_mean_of_its_seeds_and_their_spread(repeated_sweep):
    cwd, df = repeated_sweep
    study = optuna.load_study(study_name="rep", storage=f"sqlite:///{cwd}/outputs/optuna.db")
    values = {t.number: t.value for t in study.trials}
    assert (df["repeats"] == 3).all() and (df["seed"] == 0).all()
    for row in df.itertuples():
        metrics = json.loads((cwd / row.run_dir / "metrics.json").read_text())
        seeds = metrics["seeds"]
        assert [s["seed"] for s in seeds] == [0, 1, 2]
        for key in ("val_acc", "test_acc", "sparsity", "pruned_test_acc"):
            per_seed = [s[key] for s in seeds]
            assert getattr(row, key) == pytest.approx(statistics.fmean(per_seed), abs=1e-12)
            assert getattr(row, f"{key}_std") == pytest.approx(statistics.stdev(per_seed))
        assert len({s["val_acc"] for s in seeds}) > 1  # three splits, three models
        assert values[row.trial] == row.val_acc  # the objective is the mean
        for s in (0, 1, 2):
            assert (cwd / row.run_dir / f"seed_{s}" / "model.pt").exists()


def test_each_seed_is_the_plain_run_of_that_seed(repeated_sweep):
    cwd, df = repeated_sweep
    row = df.iloc[0]
    seeds = json.loads((cwd / row["run_dir"] / "metrics.json").read_text())["seeds"]
    # with the trial's one torch thread: two threads sum some matmuls in another order
    run_cli(cwd, f"l1_lambda={float(row['l1_lambda'])!r}", "train.epochs=2", "seed=1",
            "train.threads=1", "hydra.run.dir=outputs/seed1")  # fmt: skip
    alone = json.loads((cwd / "outputs" / "seed1" / "metrics.json").read_text())
    for key in ("val_acc", "test_acc", "nnz", "train_loss"):
        assert alone[key] == seeds[1][key], key


def test_a_repeated_row_is_reproduced_exactly_by_its_overrides(repeated_sweep):
    cwd, df = repeated_sweep
    row = df.iloc[1]
    assert "repeats=3" in row["overrides"]
    run_cli(cwd, *shlex.split(row["overrides"]), "hydra.run.dir=outputs/repro")
    metrics = json.loads((cwd / "outputs" / "repro" / "metrics.json").read_text())
    for key in ("val_acc", "val_acc_std", "test_acc", "sparsity", "sparsity_std", "nnz"):
        assert metrics[key] == row[key], key


def test_the_data_is_split_once_per_seed_for_all_trials(tmp_path):
    from hydra import compose, initialize_config_dir

    from sweep.data import datasets as data
    from sweep.task import job

    with initialize_config_dir(str(REPO / "conf"), version_base=None):
        cfg = compose("config", overrides=["train.epochs=1", "repeats=3", "train.log_every=1"])
    # what earlier tests in this process left in either cache must not count as a split
    data.load_digits.cache_clear()
    job._datasets.clear()
    before = data.load_digits.cache_info().misses
    for i, lam in enumerate(("1e-5", "1e-4")):  # two trials of a sweep, one process
        cfg.l1_lambda = float(lam)
        job.run(cfg, tmp_path / f"trial_{i}", {})
    assert data.load_digits.cache_info().misses - before == 3
