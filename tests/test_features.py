"""L1 feature selection: features.csv, the analysis of the path, and scikit-learn's reference."""

import importlib.util

import pandas as pd
import pytest
import torch

from conftest import REPO
from sweep import analyze
from sweep.models.builtin import mlp
from sweep.sparsity import features


def load_benchmark():
    spec = importlib.util.spec_from_file_location("feature_path", REPO / "benchmarks" /
                                                  "feature_path.py")  # fmt: skip
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_feature_table_reads_the_first_layer():
    model = mlp(3, 2, [4])
    with torch.no_grad():
        model.fc1.weight.copy_(torch.tensor([[0.0, 3.0, 0.0]] * 2 + [[0.0, 0.0, 0.0]] * 2))
    table = features.table(model, ("a", "b", "c"))
    assert table["feature"].tolist() == ["a", "b", "c"]
    assert table["selected"].tolist() == [False, True, False]
    assert table["nnz"].tolist() == [0, 2, 0]
    assert table["weight_norm"].tolist() == pytest.approx([0.0, 18**0.5, 0.0])
    conv = torch.nn.Sequential(torch.nn.Conv1d(1, 2, 3), torch.nn.Flatten(), torch.nn.Linear(2, 2))
    assert features.table(conv, ("a", "b", "c")) is None  # a convolution selects no features


@pytest.fixture(scope="module")
def breast_cancer_path(tmp_path_factory):
    """l1sweep's path on the bundled breast-cancer table, by the benchmark's own commands
    with l1sweep's defaults (`data=csv ... model=linear`, which bring the full-batch recipe),
    beside scikit-learn's on the same splits."""
    bench = load_benchmark()
    work = tmp_path_factory.mktemp("features")
    csv, target, _ = bench.write_tables(work)["breast_cancer"]
    lambdas = [0.02, 0.1]
    ours = bench.l1sweep_path(work, "bc", csv, target, lambdas, bench.SETTINGS["defaults"])
    reference = bench.sklearn_path(bench.dataset(csv, target), lambdas)
    return work, ours, reference


@pytest.mark.slow
def test_l1sweep_path_matches_scikit_learn_on_breast_cancer(breast_cancer_path):
    _, ours, reference = breast_cancer_path
    assert ours["features"].tolist() == reference["features"].tolist() == [7, 2]
    for a, b in zip(ours["selected"], reference["selected"]):
        assert set(a) == set(b)
    assert ((ours["test_acc"] - reference["test_acc"]).abs() <= 0.01).all()


def test_features_csv_and_the_analysis_of_the_path(breast_cancer_path, tmp_path):
    work, ours, _ = breast_cancer_path
    sweep = work / "outputs" / "sweeps" / "bc"
    rows = pd.read_csv(sweep / "results.csv")
    for row in rows.itertuples():
        table = pd.read_csv(work / row.run_dir / "features.csv")
        assert table["feature"].iloc[0] == "mean radius" and len(table) == 30
        assert int(table["selected"].sum()) == row.active_inputs  # the row agrees
    text = analyze.analyze([str(sweep)], tmp_path, trial=None, mask=False)
    assert "## bc: feature selection (30 input features)" in text
    # the knee of (val_acc, fewest features): here the more accurate of two front points
    knee = rows.loc[rows["val_acc"].idxmax()]
    assert knee.active_inputs == 7
    named = text.split("by first-layer weight norm:\n")[1].splitlines()[1]
    chosen = ours.loc[ours["features"] == 7, "selected"].iloc[0]
    assert named.startswith("worst radius (") and named.count("(") == 7
    assert all(f"{f} (" in named for f in chosen)
    assert (tmp_path / "features.png").stat().st_size > 10_000
    assert "feature selection" in (tmp_path / "summary.md").read_text()
    # --trial picks the trial whose features are named
    other = int(rows.loc[rows["l1_lambda"] == 0.1, "trial"].iloc[0])
    text = analyze.analyze([str(sweep)], tmp_path, trial=other, mask=False)
    assert f"chosen trial {other} (--trial): l1_lambda 0.1," in text
    assert "2 of 30 features" in text


def test_repeated_trials_name_their_first_seeds_features(tmp_path):
    """With repeats, each seed writes its own features.csv (seed_<s>/); the analysis names the
    first seed's features rather than skipping the sweep."""
    from sklearn.datasets import load_iris

    from conftest import run_cli

    frame = load_iris(as_frame=True).frame
    frame.to_csv(tmp_path / "iris.csv", index=False)
    run_cli(tmp_path, "-m", "data=csv", "data.path=iris.csv", "data.target=target",
            "model=linear", "regularizer.params=weights", "train.epochs=20", "repeats=2",
            "hydra.sweeper.n_trials=2", "hydra.sweeper.study_name=iris")  # fmt: skip
    sweep = tmp_path / "outputs" / "sweeps" / "iris"
    rows = pd.read_csv(sweep / "results.csv")
    first = tmp_path / rows["run_dir"].iloc[0]
    assert not (first / "features.csv").exists()
    assert len(pd.read_csv(first / "seed_1" / "features.csv")) == 4
    text = analyze.analyze([str(sweep)], tmp_path / "analysis", trial=None, mask=False)
    assert "## iris: feature selection (4 input features)" in text
    assert "petal width (cm) (" in text
