import json

import pandas as pd
import pytest

from conftest import run_cli
from sweep.analyze import knee, load, main, pareto_front


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


def test_pareto_front_can_minimize_a_column():
    df = frame([(0.9, 0.1), (0.8, 0.5), (0.9, 0.3)])
    assert pareto_front(df, maximize=(True, False)).tolist() == [True, False, False]


def test_knee_is_the_front_point_nearest_the_scaled_ideal():
    df = frame([(0.95, 0.0), (0.94, 0.5), (0.80, 0.9), (0.70, 0.95), (0.6, 0.2)])
    assert knee(df) == 1  # (0.94, 0.5): near both best accuracy and good sparsity
    assert knee(frame([(0.9, 0.2)])) == 0


@pytest.fixture(scope="module")
def two_sweeps(tmp_path_factory, small_sweep):
    cwd, _, _ = small_sweep
    run_cli(cwd, "-m", "regularizer=l1", "hydra.sweeper.n_trials=3",
            "hydra.sweeper.study_name=penalty", "train.epochs=2")  # fmt: skip
    return cwd / "outputs" / "sweeps" / "small", cwd / "outputs" / "sweeps" / "penalty"


def test_command_writes_table_files_and_plots(two_sweeps, capsys, tmp_path):
    small, _ = two_sweeps
    out = tmp_path / "analysis"
    assert main([str(small), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    csv = pd.read_csv(small / "results.csv")
    best = csv.loc[csv["objective"].idxmax()]
    assert "best trial, by max objective" in printed
    best_table = printed.split("best trial")[1].split("Pareto front")[0]
    [row] = [
        ln for ln in best_table.splitlines() if ln.startswith("|") and ln[1:].strip()[0].isdigit()
    ]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert int(cells[0]) == best["trial"] and cells[-1] == best["overrides"]
    for name in ("accuracy_vs_sparsity.png", "lambda.png", "input_mask_small.png"):
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, name
    front = pd.read_csv(out / "pareto.csv")
    assert set(front["trial"]) == set(csv.loc[pareto_front(csv), "trial"])
    assert (out / "summary.md").read_text().startswith("## small")


def test_several_sweeps_make_one_frame(two_sweeps, tmp_path):
    small, penalty = two_sweeps
    df = load([small, penalty / "results.csv"])
    assert df.groupby("sweep")["trial"].count().to_dict() == {"small": 3, "penalty": 3}
    assert df["trial"].dtype == "int64" and df["val_acc"].dtype == "float64"
    assert set(df["regularizer"]) == {"l1_prox", "l1"}
    out = tmp_path / "both"
    assert main([str(small), str(penalty), "--out", str(out)]) == 0
    front = pd.read_csv(out / "pareto.csv")
    assert set(front["sweep"]) == {"small", "penalty"}
    per_sweep = pareto_front(df, by="sweep")
    assert per_sweep.sum() == len(front)
    for _, g in df.groupby("sweep"):
        assert per_sweep[g.index].tolist() == pareto_front(g).tolist()
    assert {"input_mask_small.png", "input_mask_penalty.png"} <= {p.name for p in out.iterdir()}


def test_a_copied_sweep_still_finds_its_weights(two_sweeps, tmp_path):
    small, _ = two_sweeps
    import shutil

    copy = tmp_path / "moved" / "small"
    shutil.copytree(small, copy)
    shutil.move(str(small), str(small) + ".away")
    try:
        assert main([str(copy), "--out", str(tmp_path / "o")]) == 0
    finally:
        shutil.move(str(small) + ".away", str(small))


def _fails(capsys, args, message, out) -> None:
    assert main([*args, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1
    assert not out.exists() or not any(out.iterdir())  # nothing written half-way


def test_bad_inputs_are_one_line_and_write_nothing(two_sweeps, tmp_path, capsys):
    small, _ = two_sweeps
    out = tmp_path / "out"
    _fails(capsys, [str(tmp_path / "nope")], "no such file or directory", out)
    (tmp_path / "empty.csv").write_text("")
    _fails(capsys, [str(tmp_path / "empty.csv")], "has no trials yet", out)
    (tmp_path / "header.csv").write_text(",".join(pd.read_csv(small / "results.csv").columns))
    _fails(capsys, [str(tmp_path / "header.csv")], "has no trials yet", out)
    pd.DataFrame({"trial": [0], "val_acc": [0.5]}).to_csv(tmp_path / "other.csv", index=False)
    _fails(capsys, [str(tmp_path / "other.csv")], "lacks columns status, l1_lambda", out)
    _fails(capsys, [str(small), "--trial", "99"], "no trial 99", out)


def test_missing_weights_for_the_mask_are_reported(two_sweeps, tmp_path, capsys):
    small, _ = two_sweeps
    copy = tmp_path / "small"
    import shutil

    shutil.copytree(small, copy)
    rows = pd.read_csv(copy / "results.csv")
    rows["run_dir"] = [str(copy / f"trial_{t}") for t in rows["trial"]]
    rows.to_csv(copy / "results.csv", index=False)
    for t in rows["trial"]:
        (copy / f"trial_{t}" / "model.pt").unlink()
    out = tmp_path / "o"
    _fails(capsys, [str(copy)], "has no saved weights", out)
    assert main([str(copy), "--no-mask", "--out", str(out)]) == 0
    assert not list(out.glob("input_mask*"))
    assert json.loads((copy / "trial_0" / "metrics.json").read_text())["status"] == "complete"
