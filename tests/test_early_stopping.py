"""hydra/sweeper/pruner: hopeless trials stop early, are PRUNED in the study and `pruned` rows,
in the sweep's process and in joblib's workers."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pandas as pd
import pytest

from conftest import run_cli

EPOCHS = 10
# Strong lambdas: some trials are near chance after an epoch or two, some learn
# (the seed's recipe, lr 0.01: digits' own lr 0.75 learns past any of these lambdas)
MEDIAN = ["hydra/sweeper/pruner=median", "hydra.sweeper.pruner.n_startup_trials=2",
          f"train.epochs={EPOCHS}", "l1_lambda=tag(log, interval(1e-3, 3e-1))",
          "recipe=none"]  # fmt: skip


def _sweep(cwd: Path, name: str, *args: str) -> tuple[pd.DataFrame, optuna.Study]:
    run_cli(cwd, "-m", f"hydra.sweeper.study_name={name}", *MEDIAN, *args)
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{cwd}/outputs/optuna.db")
    return pd.read_csv(cwd / "outputs" / "sweeps" / name / "results.csv"), study


# in the sweep's process, and in joblib's worker processes, fresh interpreters that report each
# epoch through the storage by the study's name, as submitit's jobs do (a slow submitit trial
# is tested in test_parallel.py)
@pytest.mark.parametrize(
    "launcher",
    [["hydra/launcher=basic"],
     pytest.param(["hydra/launcher=joblib", "hydra.sweeper.n_jobs=2"], marks=pytest.mark.slow)],
    ids=["basic", "joblib"],
)  # fmt: skip
def test_hopeless_trials_stop_and_are_pruned(tmp_path, launcher):
    df, study = _sweep(tmp_path, "p", "hydra.sweeper.n_trials=6", *launcher)
    states = {t.number: t.state.name for t in study.trials}
    assert sorted(df["trial"]) == list(range(6))
    assert {r.trial: r.status for r in df.itertuples()} == {
        n: {"COMPLETE": "complete", "PRUNED": "pruned"}[s] for n, s in states.items()
    }
    pruned, complete = df[df["status"] == "pruned"], df[df["status"] == "complete"]
    assert len(pruned) >= 1 and len(complete) >= 2, df[["trial", "status", "epochs"]]
    assert (complete["epochs"] == EPOCHS).all() and (pruned["epochs"] < EPOCHS).all()
    for row in pruned.itertuples():
        trial = study.trials[row.trial]
        # the job reported each epoch it ran, and its row measures the model where it stopped
        assert sorted(trial.intermediate_values) == list(range(1, row.epochs + 1))
        assert trial.intermediate_values[row.epochs] == row.val_acc
        metrics = json.loads((Path(row.run_dir) / "metrics.json").read_text())
        assert metrics["status"] == "pruned" and metrics["epochs"] == row.epochs
    for row in complete.itertuples():
        assert len(study.trials[row.trial].intermediate_values) == EPOCHS


def test_repeated_seeds_report_back_to_back(tmp_path):
    df, study = _sweep(tmp_path, "rp", "hydra.sweeper.n_trials=3", "repeats=2")
    row = df[df["status"] == "complete"].iloc[0]
    curve = study.trials[row["trial"]].intermediate_values
    assert sorted(curve) == list(range(1, 2 * EPOCHS + 1))  # seed 1's epoch e is step 10 + e
    seeds = json.loads((Path(row["run_dir"]) / "metrics.json").read_text())["seeds"]
    assert curve[EPOCHS] == seeds[0]["val_acc"] and curve[2 * EPOCHS] == seeds[1]["val_acc"]
