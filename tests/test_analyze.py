import json
import shutil

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from conftest import copy_sweep, run_cli
from sweep.analysis.fronts import knee, methods, pareto_front
from sweep.analysis.load import load
from sweep.analysis.plots import input_mask
from sweep.analyze import main
from sweep.errors import UserError


def frame(points, status=None):
    df = pd.DataFrame(points, columns=["val_acc", "sparsity"])
    df["status"] = status or ["complete"] * len(df)
    return df


def test_pareto_front_maximizes_both():
    df = frame([(0.9, 0.1), (0.8, 0.5), (0.85, 0.05), (0.7, 0.6), (0.8, 0.4)])
    assert pareto_front(df).tolist() == [True, True, False, True, False]


def test_pareto_front_ties_duplicates_single_point_and_failed_rows():
    dup = frame([(0.9, 0.1), (0.9, 0.1), (0.9, 0.05), (0.8, 0.1)])
    assert pareto_front(dup).tolist() == [True, True, False, False]
    assert pareto_front(frame([(0.5, 0.5)])).tolist() == [True]
    failed = frame([(0.99, 0.99), (0.5, 0.5)], status=["diverged", "complete"])
    assert pareto_front(failed).tolist() == [False, True]
    # A complete row without a metric can neither be on the front nor dominate it.
    assert pareto_front(frame([(np.nan, 0.9), (0.5, 0.5)])).tolist() == [False, True]


def test_pareto_front_can_minimize_a_column():
    df = frame([(0.9, 0.1), (0.8, 0.5), (0.9, 0.3)])
    assert pareto_front(df, maximize=(True, False)).tolist() == [True, False, False]


def test_knee_is_the_front_point_nearest_the_scaled_ideal():
    df = frame([(0.95, 0.0), (0.94, 0.5), (0.80, 0.9), (0.70, 0.95), (0.6, 0.2)])
    assert knee(df) == 1  # (0.94, 0.5): near both best accuracy and good sparsity
    assert knee(frame([(0.9, 0.2)])) == 0
    assert knee(frame([(0.7, 0.9), (0.9, 0.1)])) == 1  # equally far: the more accurate one
    with pytest.raises(UserError, match="nothing to pick a knee from"):
        knee(frame([(0.9, 0.2)], status=["failed"]))


@pytest.fixture(scope="module")
def sweeps(small_sweep):
    """Three real digits sweeps: l1_prox (conftest's), penalty l1, and a two-objective one."""
    cwd, _, _ = small_sweep
    run_cli(cwd, "-m", "regularizer=l1", "hydra.sweeper.n_trials=3",
            "hydra.sweeper.study_name=penalty", "train.epochs=2")  # fmt: skip
    run_cli(cwd, "-m", "objective=pareto", "hydra.sweeper.n_trials=3",
            "hydra.sweeper.study_name=two", "train.epochs=2")  # fmt: skip
    return {name: cwd / "outputs" / "sweeps" / name for name in ("small", "penalty", "two")}


def table_rows(printed: str, heading: str) -> list[list[str]]:
    """The body cells of the first markdown table after `heading` in the printed summary."""
    after = printed.split(heading, 1)[1].split("\n\n")[1]
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in after.splitlines()[2:]]


def assert_png(path) -> None:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and 5_000 < len(data) < 60_000, path.name
    with Image.open(path) as image:
        assert 300 <= image.width <= 600 and 300 <= image.height <= 600, image.size
        assert len(image.convert("RGB").getcolors(1 << 20)) > 50, "a blank image"


@pytest.mark.slow
def test_command_writes_table_files_and_plots(sweeps, capsys, tmp_path):
    small = sweeps["small"]
    out = tmp_path / "analysis"
    assert main([str(small), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    csv = pd.read_csv(small / "results.csv")
    best = csv.loc[csv["objective"].idxmax()]
    assert "trials: 3, complete 3, pruned 0, diverged 0, failed 0" in printed
    [row] = table_rows(printed, "best trial, by max objective")
    assert int(row[0]) == best["trial"] and row[-1] == best["overrides"]
    front_rows = table_rows(printed, "Pareto front")
    assert {int(r[0]) for r in front_rows} == set(csv.loc[pareto_front(csv), "trial"])
    [knee_row] = table_rows(printed, "knee (the front's point nearest the ideal")
    assert int(knee_row[0]) == csv.loc[knee(csv), "trial"]
    for name in ("accuracy_vs_sparsity.png", "lambda.png", "input_mask_small.png",
                 "accuracy_vs_kilobytes.png", "accuracy_vs_flops.png"):  # fmt: skip
        assert_png(out / name)
    assert not (out / "accuracy_vs_latency.png").exists()  # no trial was exported
    assert "archive_bytes" in printed and "compression" in printed  # the tables carry them
    front = pd.read_csv(out / "pareto.csv")
    assert set(front["trial"]) == set(csv.loc[pareto_front(csv), "trial"])
    assert "csv" not in front and (front["sweep"] == "small").all()
    summary = (out / "summary.md").read_text()
    assert summary.startswith("## small (regularizer l1_prox, data digits)")
    assert summary.strip() in printed  # the file holds the printed tables
    assert not list(out.glob(".analyze-*"))  # the staging directory is gone


def test_input_mask_has_the_image_shape_and_counts_the_first_layer(sweeps):
    df = load([sweeps["small"], sweeps["penalty"]])
    for index, row in df.iterrows():
        kept = input_mask(df, index)
        assert kept.shape == (8, 8)
        assert (kept > 0).sum() == row["active_inputs"]
        layers = pd.read_csv(f"{row['run_dir']}/layers.csv").set_index("layer")
        assert kept.sum() == layers.loc["fc1.weight", "nnz"]


def test_several_sweeps_make_one_frame(sweeps, tmp_path):
    small, penalty = sweeps["small"], sweeps["penalty"]
    df = load([small, penalty / "results.csv"])
    assert df.groupby("sweep")["trial"].count().to_dict() == {"small": 3, "penalty": 3}
    assert df["trial"].dtype == "int64" and df["val_acc"].dtype == "float64"
    assert df["regularizer"].dtype == "string"
    assert set(df["regularizer"]) == {"l1_prox", "l1"} and set(df["data"]) == {"digits"}
    assert len(load([small, small / "results.csv"])) == 3  # one sweep named twice: read once
    out = tmp_path / "both"
    assert main([str(small), str(penalty), "--out", str(out)]) == 0
    front = pd.read_csv(out / "pareto.csv")
    assert set(front["sweep"]) == {"small", "penalty"}
    per_sweep = pareto_front(df, by="sweep")
    assert per_sweep.sum() == len(front)
    for _, g in df.groupby("sweep"):
        assert per_sweep[g.index].tolist() == pareto_front(g).tolist()
    summary = (out / "summary.md").read_text()
    assert "## small (regularizer l1_prox" in summary and "## penalty (regularizer l1," in summary
    for name in ("accuracy_vs_sparsity.png", "input_mask_small.png", "input_mask_penalty.png"):
        assert_png(out / name)


def test_a_two_objective_sweep_reports_its_knee_and_the_sweepers_front(sweeps, capsys, tmp_path):
    two = sweeps["two"]
    assert main([str(two), "--out", str(tmp_path / "o"), "--no-mask"]) == 0
    printed = capsys.readouterr().out
    df = load([two])
    assert "objective" not in df and df["pareto"].dtype == "boolean"
    heading = "best trial, by knee of the Pareto front of val_acc (max) and sparsity (max)"
    [row] = table_rows(printed, heading)
    assert int(row[0]) == df.loc[knee(df), "trial"]
    # Optuna's own front (the sweeper's `pareto` column) is the helper's front.
    assert pareto_front(df).tolist() == df["pareto"].tolist()


def test_a_copied_sweep_still_finds_its_weights(sweeps, tmp_path):
    small = sweeps["small"]
    copy = tmp_path / "moved" / "small"
    shutil.copytree(small, copy)
    shutil.move(str(small), str(small) + ".away")
    try:
        assert main([str(copy), "--out", str(tmp_path / "o")]) == 0
    finally:
        shutil.move(str(small) + ".away", str(small))
    assert_png(tmp_path / "o" / "input_mask_small.png")


def test_diverged_and_failed_trials_are_counted_and_left_off_the_front(sweeps, tmp_path, capsys):
    copy = tmp_path / "small"
    shutil.copytree(sweeps["small"], copy)
    rows = pd.read_csv(copy / "results.csv")
    measured = ["val_acc", "test_acc", "pruned_val_acc", "pruned_test_acc", "sparsity",
                "sparsity_tol", "nnz", "active_inputs", "train_loss", "objective"]  # fmt: skip
    rows.loc[[0, 1], "status"] = ["diverged", "failed"]
    rows.loc[[0, 1], measured] = np.nan
    rows.to_csv(copy / "results.csv", index=False)
    out = tmp_path / "o"
    assert main([str(copy), "--out", str(out)]) == 0
    assert "trials: 3, complete 1, pruned 0, diverged 1, failed 1" in capsys.readouterr().out
    assert pd.read_csv(out / "pareto.csv")["trial"].tolist() == [rows.loc[2, "trial"]]

    rows.loc[2, "status"] = "failed"
    rows.to_csv(copy / "results.csv", index=False)
    message = "small has no complete trial (1 diverged, 0 pruned, 2 failed); see"
    _fails(capsys, [str(copy)], message, out)


def _fails(capsys, args, message, out) -> None:
    files = sorted(out.rglob("*")) if out.exists() else None
    assert main([*args, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1, err
    assert "; " in err  # what was wrong; what to do
    # Nothing written half-way: not even the output directory, nor a staging one.
    assert (sorted(out.rglob("*")) if out.exists() else None) == files


def test_bad_inputs_are_one_line_and_write_nothing(sweeps, tmp_path, capsys):
    small = sweeps["small"]
    out = tmp_path / "out"
    _fails(capsys, [str(tmp_path / "nope")], "no such file or directory", out)
    _fails(capsys, [str(tmp_path)], "has no results.csv", out)
    (tmp_path / "empty.csv").write_text("")
    _fails(capsys, [str(tmp_path / "empty.csv")], "has no trials yet", out)
    (tmp_path / "header.csv").write_text(",".join(pd.read_csv(small / "results.csv").columns))
    _fails(capsys, [str(tmp_path / "header.csv")], "has no trials yet", out)
    pd.DataFrame({"trial": [0], "val_acc": [0.5]}).to_csv(tmp_path / "other.csv", index=False)
    _fails(capsys, [str(tmp_path / "other.csv")], "lacks columns status, l1_lambda", out)
    (tmp_path / "image.csv").write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe")
    _fails(capsys, [str(tmp_path / "image.csv")], "is not a readable CSV", out)
    (tmp_path / "quote.csv").write_text('trial,status\n0,"complete\n')
    _fails(capsys, [str(tmp_path / "quote.csv")], "is not a readable CSV", out)
    edited = pd.read_csv(small / "results.csv").astype({"trial": str})
    edited.loc[0, "trial"] = "first"
    edited.to_csv(tmp_path / "edited.csv", index=False)
    _fails(capsys, [str(tmp_path / "edited.csv")], "column trial holds values that are not", out)
    _fails(capsys, [str(small), "--trial", "99"], "no trial 99", out)
    # One bad path among good ones spoils the lot: no partial comparison.
    _fails(capsys, [str(small), str(tmp_path / "nope")], "no such file or directory", out)
    assert not out.exists()


def test_missing_weights_for_the_mask_are_reported(sweeps, tmp_path, capsys):
    copy = copy_sweep(sweeps["small"], tmp_path / "small")  # its weights are removed
    rows = pd.read_csv(copy / "results.csv")
    for t in rows["trial"]:
        (copy / f"trial_{t}" / "model.pt").unlink()
    out = tmp_path / "o"
    _fails(capsys, [str(copy)], "has no saved weights", out)
    assert not out.exists()
    out.mkdir()
    (out / "summary.md").write_text("an earlier analysis")
    _fails(capsys, [str(copy)], "or pass --no-mask", out)  # an existing output is left alone
    assert (out / "summary.md").read_text() == "an earlier analysis"
    assert main([str(copy), "--no-mask", "--out", str(out)]) == 0
    assert not list(out.glob("input_mask*"))
    assert (out / "summary.md").read_text().startswith("## small")
    assert json.loads((copy / "trial_0" / "metrics.json").read_text())["status"] == "complete"


@pytest.fixture(scope="module")
def methods_sweep(tmp_path_factory):
    """One real digits grid sweep over two regularizers x two prune methods x two lambdas."""
    cwd = tmp_path_factory.mktemp("methods")
    run_cli(cwd, "-m", "hydra/sweeper/sampler=grid", "regularizer=choice(none,l1_prox)",
            "prune=choice(none,magnitude)", "l1_lambda=choice(1e-4,1e-3)", "train.epochs=10",
            "prune.epochs=3", "prune.sparsity=0.8", "hydra.sweeper.study_name=methods")  # fmt: skip
    return cwd / "outputs" / "sweeps" / "methods"


@pytest.mark.slow
def test_methods_are_split_apart_each_with_its_own_front(methods_sweep, capsys, tmp_path):
    df = load([methods_sweep])
    assert len(df) == 8 and (df["status"] == "complete").all()
    labels = methods(df)
    assert set(labels) == {"none / none", "none / magnitude", "l1_prox / none",
                           "l1_prox / magnitude"}  # fmt: skip
    assert set(methods(df, ["prune"])) == {"none", "magnitude"}
    pruned = df[df["prune"] == "magnitude"]
    assert (pruned["sparsity"] >= 0.8).all() and pruned["trained_val_acc"].notna().all()
    out = tmp_path / "o"
    assert main([str(methods_sweep), "--out", str(out), "--no-mask"]) == 0
    printed = capsys.readouterr().out
    compared = table_rows(printed, "## methods compared")
    assert {r[0] for r in compared} == set(labels) and all(r[1] == "2" for r in compared)
    dense = df[(df["regularizer"] == "none") & (df["prune"] == "none")]["val_acc"].mean()
    assert f"- methods: dense trials: val_acc {dense:.4f}" in printed
    front = pd.read_csv(out / "pareto.csv")
    for label, rows in df.groupby(labels):  # each method's own front, not one shared
        assert set(front.loc[front["method"] == label, "trial"]) == set(
            rows.loc[pareto_front(rows), "trial"])  # fmt: skip
    assert_png(out / "accuracy_vs_sparsity.png")
    assert main([str(methods_sweep), "--out", str(tmp_path / "p"), "--by", "prune",
                 "--no-mask"]) == 0  # fmt: skip
    assert {r[0] for r in table_rows(capsys.readouterr().out, "## methods compared")} == {
        "none", "magnitude"}  # fmt: skip
    assert main([str(methods_sweep), "--out", str(tmp_path / "k"), "--kept-axis", "--no-mask"]) == 0
    assert_png(tmp_path / "k" / "accuracy_vs_sparsity.png")
    capsys.readouterr()
    _fails(capsys, [str(methods_sweep), "--by", "nope"], "--by nope: no such column; use", out)


@pytest.mark.slow
def test_the_analysis_follows_a_minimized_objective(tmp_path, capsys):
    """A real sweep that minimized val_acc: the best trial is the lowest, its wording says min,
    the front and knee minimize val_acc, with or without optimization_results.yaml."""
    # recipe=none: the seed's lr 0.01, at which l1_lambda up to 0.3 leaves three different
    # accuracies (digits' lr 0.75 takes two of the three to chance, 0.1007)
    run_cli(tmp_path, "-m", "objective.direction=[minimize]", "hydra.sweeper.n_trials=3",
            "hydra.sweeper.study_name=low", "train.epochs=2", "recipe=none",
            "l1_lambda=tag(log, interval(1e-4, 0.3))")  # fmt: skip
    sweep = tmp_path / "outputs" / "sweeps" / "low"
    written = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert written["directions"] == ["minimize"] and written["metrics"] == ["val_acc"]
    csv = pd.read_csv(sweep / "results.csv")
    assert csv["objective"].nunique() == 3  # three different values: the choice matters
    lowest = csv.loc[csv["objective"].idxmin()]
    for source in ("optimization_results.yaml", ".hydra/config.yaml"):
        out = tmp_path / source.replace("/", "_")
        assert main([str(sweep), "--out", str(out), "--no-mask"]) == 0
        printed = capsys.readouterr().out
        heading = "best trial, by min objective (val_acc, the value the sweep minimized)"
        [row] = table_rows(printed, heading)
        assert int(row[0]) == lowest["trial"]
        assert "Pareto front, val_acc (min) vs sparsity (max)" in printed
        assert "nearest the ideal (min val_acc, max sparsity)" in printed
        df = load([sweep])
        front = pareto_front(df, maximize=(False, True))
        assert set(pd.read_csv(out / "pareto.csv")["trial"]) == set(df.loc[front, "trial"])
        [knee_row] = table_rows(printed, "knee (")
        assert int(knee_row[0]) == df.loc[knee(df, maximize=(False, True)), "trial"]
        (sweep / "optimization_results.yaml").unlink(missing_ok=True)  # killed: trial configs
    # Neither source: the analysis says it assumed the direction.
    for trial in csv["trial"]:
        (sweep / f"trial_{trial}" / ".hydra" / "config.yaml").unlink()
    assert main([str(sweep), "--out", str(tmp_path / "none"), "--no-mask"]) == 0
    assert "the direction was not recorded" in capsys.readouterr().out


@pytest.mark.slow
def test_a_pareto_sweep_front_and_knee_follow_its_directions(tmp_path, capsys):
    """Two objectives, val_acc minimized and sparsity maximized: the front is Optuna's."""
    run_cli(tmp_path, "-m", "objective=pareto", "objective.direction=[minimize,maximize]",
            "hydra.sweeper.n_trials=4", "hydra.sweeper.study_name=mixed", "train.epochs=2",
            "l1_lambda=tag(log, interval(1e-4, 0.3))")  # fmt: skip
    sweep = tmp_path / "outputs" / "sweeps" / "mixed"
    assert main([str(sweep), "--out", str(tmp_path / "o"), "--no-mask"]) == 0
    printed = capsys.readouterr().out
    df = load([sweep])
    front = pareto_front(df, maximize=(False, True))
    assert front.tolist() == df["pareto"].tolist()  # Optuna's own front, as the study ran
    heading = "best trial, by knee of the Pareto front of val_acc (min) and sparsity (max)"
    [row] = table_rows(printed, heading)
    assert int(row[0]) == df.loc[knee(df, maximize=(False, True)), "trial"]
    assert set(pd.read_csv(tmp_path / "o" / "pareto.csv")["trial"]) == set(df.loc[front, "trial"])


def test_an_exported_trial_is_drawn_against_its_measured_time(sweeps, tmp_path):
    from sweep.analysis import speed as speed_plots
    from sweep.export import export_run

    copy = copy_sweep(sweeps["small"], tmp_path / "small")  # it gains an export/
    df = load([copy])
    df["method"] = methods(df)
    trial = df.index[df["status"] == "complete"][0]
    run = copy / f"trial_{df.loc[trial, 'trial']}"
    export_run(run, onnx=False, timing=(1, 0.002), log=lambda *_: None)
    times = speed_plots.exported_times(df)
    exported = pd.read_csv(run / "export" / "export.csv").set_index("artifact")
    assert times["index"].tolist() == [trial]
    assert times["ms"][0] == exported.loc["model.compact.l1z", "ms_batch256_1thread"] > 0
    assert times["dense_ms"][0] == exported.loc["model.pt", "ms_batch256_1thread"] > 0
    assert times["test_acc"][0] == exported.loc["model.compact.l1z", "test_acc"]
    written = speed_plots.plot_speed(df, tmp_path)  # as sweep.analyze calls it
    assert written == ["accuracy_vs_flops.png", "accuracy_vs_latency.png"]
    assert_png(tmp_path / "accuracy_vs_latency.png")


def test_max_drop_names_a_real_sweeps_smallest_trial_and_its_command(small_sweep, capsys, tmp_path):
    """--max-drop on the real sweep: the smallest archive within the drop of the trial named,
    printed as the command that reruns it, and choice.csv's row is that trial's."""
    cwd, csv, _ = small_sweep
    sweep = cwd / "outputs" / "sweeps" / "small"
    top = csv.loc[csv["val_acc"].idxmax()]
    out = tmp_path / "o"
    args = ["--max-drop", "100", "--reference-trial", str(top["trial"]), "--no-mask", "--out"]
    assert main([str(sweep), *args, str(out)]) == 0  # 100 points: every trial is within
    printed = capsys.readouterr().out
    smallest = csv.loc[csv["archive_bytes"].idxmin()]
    command = f"python -m sweep.run {smallest['overrides']}"
    assert f"\nuse: {command}\n" in printed
    assert f"reference: val_acc {top['val_acc']:.4f}, trial {top['trial']}, given" in printed
    [row] = pd.read_csv(out / "choice.csv").to_dict("records")
    assert row["chosen"] and row["trial"] == smallest["trial"] and row["reproduce"] == command
    assert row["archive_bytes"] == smallest["archive_bytes"]
    assert row["test_acc"] == smallest["test_acc"] and row["val_acc"] == smallest["val_acc"]
    assert "## the configuration to use" in (out / "summary.md").read_text()
