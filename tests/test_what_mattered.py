"""sweep.analyze's parameter importances and multi-objective histories (what_mattered): a tiny
real 2-parameter sweep, and PED-ANOVA on rows whose answer is known."""

import numpy as np
import pandas as pd
import pytest

from conftest import run_cli
from sweep import analyze


@pytest.mark.slow
def test_a_two_parameter_pareto_sweep_gets_importances_and_histories(tmp_path):
    run_cli(tmp_path, "-m", "objective=pareto", "optimizer.lr=interval(0.1,0.5)",
            "hydra.sweeper.n_trials=4", "train.epochs=2",
            "hydra.sweeper.study_name=two")  # fmt: skip
    sweep = tmp_path / "outputs" / "sweeps" / "two"
    assert analyze.main([str(sweep), "--no-mask"]) == 0
    for name in ("importance_val_acc.png", "importance_sparsity.png", "history_val_acc.png",
                 "history_sparsity.png", "hypervolume.png"):  # fmt: skip
        assert (sweep / name).stat().st_size > 1000, name
    summary = (sweep / "summary.md").read_text()
    assert "## What mattered (two: 2 parameters searched)" in summary
    assert "evaluator: fANOVA (4 trials, seed 0)" in summary  # too few trials for PED-ANOVA
    text, table, study, objective = analyze.what_mattered(analyze.load([sweep]))
    assert objective.metrics == ("val_acc", "sparsity") and len(study.trials) == 4
    rows = pd.read_csv(sweep / "results.csv")
    assert [t.values for t in study.trials] == rows[["val_acc", "sparsity"]].values.tolist()
    for metric, scores in table.items():
        assert set(scores) == {"l1_lambda", "optimizer.lr"}
        assert sum(scores.values()) == pytest.approx(1.0)
        top = max(scores, key=scores.get)
        assert f"- most important for {metric}: {top} ({scores[top]:.3f})" in summary


def rows(n: int, searched_lr: bool = True) -> pd.DataFrame:
    """n complete trials whose val_acc depends on l1_lambda alone and sparsity on the lr alone
    (lr fixed at 0.1 where searched_lr is False)."""
    rng = np.random.default_rng(0)
    lam, lr = 10 ** rng.uniform(-5, -3, n), rng.uniform(0.1, 0.5, n) if searched_lr else [0.1] * n
    return pd.DataFrame({
        "sweep": "known", "trial": range(n), "status": "complete",
        "val_acc": 0.9 - 50 * lam + rng.normal(0, 1e-4, n),
        "sparsity": np.asarray(lr) + rng.normal(0, 1e-3, n),
        "overrides": [f"l1_lambda={float(a)!r} optimizer.lr={float(b)!r} train.threads=1"
                      for a, b in zip(lam, lr)],
        analyze.METRICS_COLUMN: "val_acc,sparsity", analyze.DIRECTIONS_COLUMN: "maximize,maximize",
    })  # fmt: skip


def test_ped_anova_names_the_parameter_each_objective_depends_on():
    text, table, _, _ = analyze.what_mattered(rows(30))
    assert "evaluator: PED-ANOVA (top 17% of 30 trials vs all)" in text
    assert table["val_acc"]["l1_lambda"] > 0.9 and table["sparsity"]["optimizer.lr"] > 0.9
    assert "- most important for val_acc: l1_lambda" in text
    assert "- most important for sparsity: optimizer.lr" in text
    assert analyze.what_mattered(rows(30, searched_lr=False))[0] == ""  # one parameter: none


def test_an_objective_no_trial_changed_names_no_parameter(tmp_path):
    """Every trial the same val_acc: PED-ANOVA split the importance 0.5/0.5 and fANOVA gave
    all of it to one parameter, and the summary named a "most important" one either way."""
    from sweep.analysis.importance import plot_what_mattered, top_line

    for n in (4, 30):  # fANOVA, PED-ANOVA
        text, table, study, objective = analyze.what_mattered(rows(n).assign(val_acc=0.9))
        assert (f"- val_acc: every one of the {n} trials scored 0.9: nothing varied, so no "
                "parameter mattered") in text  # fmt: skip
        assert "most important for val_acc" not in text and set(table) == {"sparsity"}
        assert "- most important for sparsity: optimizer.lr" in text  # the one that varied
        assert plot_what_mattered(study, table, objective, tmp_path) == [
            "importance_sparsity.png", "history_val_acc.png", "history_sparsity.png",
            "hypervolume.png",
        ]  # fmt: skip
    # a tie names no parameter above another
    assert top_line("val_acc", {"a": 0.5, "b": 0.5}) == (
        "- most important for val_acc: none above the others: a, b tie (0.500 each)"
    )
    assert top_line("val_acc", {"a": 0.7, "b": 0.3}) == "- most important for val_acc: a (0.700)"
    # the command, on a results.csv whose objective (val_acc: none recorded) never changed
    sweep = tmp_path / "flat"
    sweep.mkdir()
    frame = rows(12).assign(val_acc=0.9, test_acc=0.88)
    frame["l1_lambda"] = frame["overrides"].str.extract(r"l1_lambda=(\S+)")[0].astype(float)
    frame.drop(columns=["sweep", analyze.METRICS_COLUMN, analyze.DIRECTIONS_COLUMN]).to_csv(
        sweep / "results.csv", index=False
    )
    assert analyze.main([str(sweep), "--no-mask"]) == 0
    summary = (sweep / "summary.md").read_text()
    assert "## What mattered (flat: 2 parameters searched)" in summary
    assert "- val_acc: every one of the 12 trials scored 0.9: nothing varied" in summary
    assert "most important" not in summary and not list(sweep.glob("importance_*.png"))
