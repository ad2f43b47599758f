"""A trial draws a path (prune.path): each level a measured point, points.csv per sweep, any
point reproduced by its overrides plus prune.stop_at, and the front's hypervolume."""

from __future__ import annotations

import json
import math
import os
import shlex
import subprocess
import sys

import pandas as pd
import pytest

from conftest import REPO, run_cli
from sweep import analyze
from sweep.config import schema
from sweep.errors import UserError
from sweep.results import points
from sweep.results.hypervolume import front, hypervolume, kept_axis, path_hypervolume
from sweep.sparsity.pruning import Pruner

PATH_RULE = (
    "prune.path must be a non-empty list of sparsities in (0, 1), each once, in increasing "
    "order (e.g. [0.5,0.8,0.9,0.95])"
)


@pytest.mark.parametrize("path", [[0.5, 1.0], [0.0, 0.5], [-0.1], [0.8, 0.5], [0.5, 0.5], []])
def test_a_path_that_cannot_be_walked_is_refused_in_one_line(path):
    with pytest.raises(UserError) as e:
        schema.check_value("prune.path", schema.PATH, path)
    assert str(e.value) == f"{PATH_RULE}, got {path!r}"
    with pytest.raises(UserError, match="prune.path"):  # the pruner's own, where built alone
        Pruner("magnitude", path=path)


def test_path_levels_and_stop_at():
    p = Pruner("magnitude", path=[0.5, 0.8, 0.9], epochs=1)
    assert p.targets() == [0.5, 0.8, 0.9] and p.rounds == 3 and p.target == 0.9
    assert p.columns()["prune_path"] == "0.5,0.8,0.9" and p.columns()["prune_sparsity"] == 0.9
    stop = Pruner("magnitude", path=[0.5, 0.8, 0.9], stop_at=0.8)
    assert stop.targets() == [0.5, 0.8] and stop.rounds == 2
    # a level of the rounds' rule, as Python prints it, names that level
    rule = Pruner("magnitude", sparsity=0.9, rounds=3)
    assert (
        Pruner("magnitude", sparsity=0.9, rounds=3, stop_at=rule.targets()[1]).targets()
        == (rule.targets()[:2])
    )
    with pytest.raises(UserError, match=r"prune.stop_at must be one of the levels walked \(0.5"):
        Pruner("magnitude", path=[0.5, 0.9], stop_at=0.7)
    with pytest.raises(UserError, match="prune.path applies to prune=magnitude and neurons"):
        Pruner("threshold", path=[0.5])


def test_a_bad_path_exits_2_before_training(tmp_path):
    proc = run_cli(tmp_path, "prune=magnitude", "prune.path=[0.9,0.5]", "hydra.run.dir=out",
                   check=False)  # fmt: skip
    assert proc.returncode == 2
    errors = [ln for ln in (proc.stdout + proc.stderr).splitlines() if "error:" in ln]
    assert len(errors) == 1 and errors[0].endswith(f"error: {PATH_RULE}, got [0.9, 0.5]")
    assert "Traceback" not in proc.stderr and not (tmp_path / "out" / "metrics.json").exists()
    proc = run_cli(tmp_path, "objective=path_hypervolume", "hydra.run.dir=out2", check=False)
    assert proc.returncode == 2 and "path_hypervolume needs a path" in proc.stdout + proc.stderr


def test_hypervolume_against_a_hand_computed_area():
    pts = [(2.0, 0.5), (1.0, 0.8), (0.5, 0.6), (3.0, 0.05), (1.0, 0.8), (math.nan, 0.9)]
    # boxes above (0, 0.1): [0,2]x[0.1,0.5] = 0.8, plus [0,1]x[0.5,0.8] = 0.3; (0.5, 0.6) is
    # dominated, (3, 0.05) below chance, the repeat adds nothing
    assert hypervolume(pts, (0.0, 0.1)) == pytest.approx(1.1)
    assert front(pts) == [1, 0, 3]  # by x ascending; (3, 0.05) is on the front, area 0
    assert kept_axis(0.99) == pytest.approx(2.0) and kept_axis(0.0) == 0.0
    assert kept_axis(1.0) == 6.0  # every weight zero: a finite x
    levels = [{"sparsity": 0.9, "val_acc": 0.6}, {"sparsity": 0.99, "val_acc": 0.3}]
    assert path_hypervolume(levels, 10) == pytest.approx(2 * 0.2 + 1 * 0.3)
    frame = pd.DataFrame({"sparsity": [0.9, 0.99, 0.5], "val_acc": [0.6, 0.3, 0.5],
                          "test_acc": [0.5, 0.4, 0.9]})  # fmt: skip
    figures = points.front_figures(frame)  # chosen on validation: the 0.5 point is off it
    assert figures["front"] == [0, 1] and figures["hypervolume"] == pytest.approx(0.7)
    assert figures["test_hypervolume"] == pytest.approx(2 * 0.3 + 1 * 0.1)


def test_a_path_sweep_writes_its_points_and_a_point_reproduces_as_one_run(tmp_path):
    # l1_lambda high enough that training alone passes the first level (proximal zeros)
    run_cli(tmp_path, "-m", "prune=magnitude", "prune.path=[0.01,0.5,0.9]", "prune.epochs=1",
            "prune.keep_models=true", "train.epochs=3", "optimizer.lr=0.1",
            "objective=path_hypervolume", "l1_lambda=tag(log, interval(1e-3, 2e-3))",
            "hydra.sweeper.n_trials=2", "hydra.sweeper.study_name=p")  # fmt: skip
    sweep = tmp_path / "outputs" / "sweeps" / "p"
    results = pd.read_csv(sweep / "results.csv")
    pts = pd.read_csv(sweep / "points.csv")
    assert len(results) == 2 and len(pts) == 6 and (pts["kind"] == "path").all()
    for t, trial in pts.groupby("trial"):
        assert trial["level"].tolist() == [0.01, 0.5, 0.9]
        assert trial["reached_by"].tolist() == ["training", "pruning", "pruning"]
        assert trial["sparsity"].is_monotonic_increasing and trial["sparsity"].iloc[0] > 0.01
        assert (trial["sparsity"] >= trial["level"] - 1e-4).all()
        row = results.set_index("trial").loc[t]
        assert (
            row["objective"]
            == row["path_hypervolume"]
            == pytest.approx(path_hypervolume(trial.to_dict("records"), 10))
        )
        assert trial["l1_lambda"].eq(row["l1_lambda"]).all()
        assert (trial["archive_bytes"] > 0).all() and trial["flops"].notna().all()
        for r in trial["round"]:
            assert (sweep / f"trial_{t}" / f"level_{r}.pt").is_file()
    point = pts.iloc[1]  # the second level of trial 0: one run stopped there
    assert point["overrides"].endswith("prune.stop_at=0.5")
    run_cli(tmp_path, *shlex.split(point["overrides"]), "hydra.run.dir=repro")
    again = json.loads((tmp_path / "repro" / "metrics.json").read_text())
    for key in ("val_acc", "test_acc", "sparsity", "nnz", "archive_bytes", "flops"):
        assert again[key] == point[key], key
    assert again["prune_path"] == "0.01,0.5"
    # sweep.analyze: the front over every point, and a sweep read from its results.csv alone
    # (no points.csv: its trials' final models are its points) on the same plot and table
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "results.csv").write_text((sweep / "results.csv").read_text())
    assert analyze.main([str(sweep), str(plain), "--out", str(tmp_path / "an"), "--no-mask"]) == 0
    summary = (tmp_path / "an" / "summary.md").read_text()
    assert "reference point (0, 0.1)" in summary
    hv = points.front_figures(pts)
    table = summary.split("## front over every point")[1].split("\n\n")[2].splitlines()
    cells = [c.strip() for c in table[2].strip("|").split("|")]
    assert [c.strip() for c in table[0].strip("|").split("|")] == [
        "sweep", "trials", "path points", "trial points", "front", "val hypervolume",
        "test hypervolume",
    ]  # fmt: skip
    assert cells[0] == "p" and cells[1:5] == ["2", "6", "0", str(len(hv["front"]))]
    assert float(cells[5]) == pytest.approx(hv["hypervolume"], abs=1e-4)
    assert float(cells[6]) == pytest.approx(hv["test_hypervolume"], abs=1e-4)
    assert [c.strip() for c in table[3].strip("|").split("|")][:4] == ["plain", "2", "0", "2"]
    for png in ("front_points.png", "hypervolume_vs_time.png"):
        assert (tmp_path / "an" / png).stat().st_size > 1000


@pytest.mark.slow
def test_the_frontier_speed_benchmark_smoke_prints_both_curves(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "frontier_speed.py"), "--smoke", "--out",
         str(tmp_path / "b")],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert (
        "path: 1 trials, 2 points" in proc.stdout and "frontier: 2 trials, 2 points" in proc.stdout
    )
    figures = {k: float(v) for k, v in (pair.split("=") for pair in lines[-1].split())}
    path = pd.read_csv(tmp_path / "b" / "path" / "sweep" / "points.csv")
    frontier = pd.read_csv(tmp_path / "b" / "frontier" / "sweep" / "points.csv")
    assert figures["path_hv"] == pytest.approx(points.front_figures(path)["hypervolume"], abs=1e-4)
    assert figures["frontier_hv"] == pytest.approx(
        points.front_figures(frontier)["hypervolume"], abs=1e-4
    )
    assert 0 < figures["frontier_s"] and 0 < figures["path_s"]


def test_a_level_is_reached_when_the_zeros_are_already_there():
    import torch
    import torch.nn as nn

    from sweep.sparsity.pruning import NeuronPruner

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    with torch.no_grad():
        model[0].weight[:, :2] = 0.0
        model[0].weight[0] = 0.0  # hidden unit 0 dead, with its bias: 10 of 24 weights zero
        model[0].bias[0] = 0.0
    counted = [model[0].weight, model[2].weight]
    magnitude = Pruner("magnitude", path=[0.3, 0.5])
    assert magnitude.reached(model, counted, 0.3) and not magnitude.reached(model, counted, 0.5)
    neurons = NeuronPruner("neurons", path=[0.25, 0.5])  # 1 of 4 hidden units dead
    assert neurons.reached(model, counted, 0.25) and not neurons.reached(model, counted, 0.5)


def test_the_result_files_build_a_finished_trials_points_once(tmp_path):
    """ResultFiles rewrites points.csv after every trial without reading a finished trial's
    rounds.csv again (issue 33: a rewrite used to grow with the sweep), and moves every
    point's `seconds` when a trial that started earlier finishes later."""
    from datetime import datetime, timedelta

    import optuna
    from optuna.trial import FrozenTrial, TrialState

    from sweep.search.study import ResultFiles

    def finished(number: int, start: datetime, **row: object) -> FrozenTrial:
        attrs = {"row": {"trial": number, "status": "complete", "val_acc": 0.9, **row}}
        return FrozenTrial(number, TrialState.COMPLETE, 0.9, start, start + timedelta(1 / 24),
                           {}, {}, attrs, {}, {}, number)  # fmt: skip

    t0 = datetime(2026, 1, 1, 12)
    run = tmp_path / "trial_0"
    run.mkdir()
    pd.DataFrame({"round": [1, 2], "target": [0.5, 0.9], "val_acc": [0.95, 0.9],
                  "sparsity": [0.5, 0.9]}).to_csv(run / "rounds.csv", index=False)  # fmt: skip
    study = optuna.create_study(direction="maximize")
    study.add_trial(finished(0, t0, prune_path="[0.5, 0.9]", run_dir=str(run)))
    files = ResultFiles(tmp_path / "results.csv")
    files.write(study)
    (run / "rounds.csv").unlink()  # read once: the next rewrites do not need it
    study.add_trial(finished(1, t0 + timedelta(minutes=5), sparsity=0.7))
    files.write(study)
    pts = pd.read_csv(tmp_path / "points.csv")
    assert pts["kind"].tolist() == ["path", "path", "trial"] and pts["trial"].tolist() == [0, 0, 1]
    assert pts["level"].tolist()[:2] == [0.5, 0.9] and pts["val_acc"].tolist() == [0.95, 0.9, 0.9]
    assert pts["seconds"].tolist() == [3600.0, 3600.0, 3900.0]
    study.add_trial(finished(2, t0 - timedelta(minutes=10)))  # started first, finished last
    files.write(study)
    pts = pd.read_csv(tmp_path / "points.csv")
    assert pts["seconds"].tolist() == [4200.0, 4200.0, 4500.0, 3600.0]
    assert pd.read_csv(tmp_path / "results.csv")["trial"].tolist() == [0, 1, 2]
