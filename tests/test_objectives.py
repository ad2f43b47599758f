import json
import math

import optuna
import pandas as pd
import yaml
from omegaconf import OmegaConf

from conftest import run_cli
from sweep.task.objectives import values

ACC = OmegaConf.create({"metrics": ["val_acc"], "direction": ["maximize"]})
PARETO = OmegaConf.create({"metrics": ["val_acc", "sparsity"], "direction": ["maximize"] * 2})
DROP = OmegaConf.create(
    {"metrics": ["sparsity"], "direction": ["maximize"], "max_drop": 0.02, "baseline_val_acc": 0.9}
)


def test_objective_values():
    m = {"status": "complete", "val_acc": 0.95, "sparsity": 0.3}
    assert values(m, ACC) == [0.95]
    assert values(m, PARETO) == [0.95, 0.3]
    assert values(m, DROP) == [0.3]  # 0.95 >= 0.9 - 0.02: feasible, scores its sparsity
    low = {**m, "val_acc": 0.85}
    assert values(low, DROP) == [0.85 - 0.88]  # infeasible: negative, by how far it fell short
    assert all(math.isnan(v) for v in values({**m, "status": "diverged"}, PARETO))


def test_pareto_sweep_marks_the_front(tmp_path):
    run_cli(
        tmp_path, "-m", "objective=pareto", "hydra.sweeper.n_trials=4",
        "hydra.sweeper.study_name=p", "train.epochs=3",
    )  # fmt: skip
    sweep_dir = tmp_path / "outputs" / "sweeps" / "p"
    df = pd.read_csv(sweep_dir / "results.csv")
    assert len(df) == 4 and df["pareto"].dtype == bool and df["pareto"].any()
    assert "objective" not in df.columns
    for row in df.itertuples():
        dominated = (
            (df["val_acc"] >= row.val_acc)
            & (df["sparsity"] >= row.sparsity)
            & ((df["val_acc"] > row.val_acc) | (df["sparsity"] > row.sparsity))
        ).any()
        assert row.pareto == (not dominated)
    front = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())["solutions"]
    assert sorted(s["values"][1] for s in front) == sorted(df[df["pareto"]]["sparsity"])


def test_within_drop_trains_a_baseline_once_and_scores_against_it(tmp_path):
    args = ["-m", "objective=within_drop", "objective.max_drop=0.05", "train.epochs=20",
            "hydra.sweeper.n_trials=3", "hydra.sweeper.study_name=d"]  # fmt: skip
    run_cli(tmp_path, *args)
    sweep_dir = tmp_path / "outputs" / "sweeps" / "d"
    baseline = json.loads((sweep_dir / "baseline" / "metrics.json").read_text())
    assert baseline["regularizer"] == "none" and baseline["l1_lambda"] == 0.0
    df = pd.read_csv(sweep_dir / "results.csv")
    floor = baseline["val_acc"] - 0.05
    for row in df.itertuples():
        expected = row.sparsity if row.val_acc >= floor else row.val_acc - floor
        assert math.isclose(row.objective, expected, abs_tol=1e-12)
        assert f"objective.baseline_val_acc={baseline['val_acc']!r}" in row.overrides
    study = optuna.load_study(study_name="d", storage=f"sqlite:///{tmp_path}/outputs/optuna.db")
    assert study.user_attrs["baseline_val_acc"] == baseline["val_acc"]
    # resuming reuses the stored baseline instead of training it again
    (sweep_dir / "baseline" / "metrics.json").unlink()
    # n_trials is the study's total: one more trial
    run_cli(tmp_path, *args[:-2], "hydra.sweeper.n_trials=4", "hydra.sweeper.study_name=d")
    assert not (sweep_dir / "baseline" / "metrics.json").exists()
    assert len(pd.read_csv(sweep_dir / "results.csv")) == 4


def test_within_drop_baseline_takes_the_fixed_overrides_and_leaves_the_searched_keys(tmp_path):
    # Searched keys cannot be handed to the one baseline run (Hydra would ask for --multirun).
    run_cli(tmp_path, "-m", "objective=within_drop", "train.epochs=3", "hydra.sweeper.n_trials=2",
            "l1_lambda=tag(log, interval(1e-5, 1e-3))", "optimizer.lr=choice(0.01,0.05)",
            "hydra.sweeper.study_name=ds")  # fmt: skip
    sweep_dir = tmp_path / "outputs" / "sweeps" / "ds"
    baseline = json.loads((sweep_dir / "baseline" / "metrics.json").read_text())
    assert baseline["regularizer"] == "none" and baseline["epochs"] == 3
    overrides = (sweep_dir / "baseline" / ".hydra" / "overrides.yaml").read_text()
    assert "train.epochs=3" in overrides and "l1_lambda" not in overrides
    df = pd.read_csv(sweep_dir / "results.csv")
    assert len(df) == 2 and (df["status"] == "complete").all()
    assert df["overrides"].str.contains("optimizer.lr=0.0[15]").all()


def test_within_drop_baseline_is_dense_under_the_same_recipe(tmp_path):
    run_cli(tmp_path, "-m", "objective=within_drop", "prune=magnitude", "prune.sparsity=0.5",
            "prune.epochs=1", "optimizer.momentum=0.5", "train.epochs=3",
            "hydra.sweeper.n_trials=1", "hydra.sweeper.study_name=dp")  # fmt: skip
    sweep_dir = tmp_path / "outputs" / "sweeps" / "dp"
    baseline = json.loads((sweep_dir / "baseline" / "metrics.json").read_text())
    assert (baseline["regularizer"], baseline["prune"]) == ("none", "none")
    assert baseline["sparsity"] == 0.0 and "trained_val_acc" not in baseline
    overrides = (sweep_dir / "baseline" / ".hydra" / "overrides.yaml").read_text()
    assert "optimizer.momentum=0.5" in overrides and "prune.sparsity" not in overrides
    [row] = pd.read_csv(sweep_dir / "results.csv").to_dict("records")
    assert row["prune"] == "magnitude" and row["sparsity"] >= 0.5
