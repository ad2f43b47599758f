"""`python -m sweep.analyze DIR --max-drop POINTS`: the one configuration to use (the smallest,
sparsest or fastest model within the drop of the dense one on validation), from results.csv
files written the way a sweep writes them (sweep.results.table.write_atomic)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from sweep.analysis.choice import Want, choice_frame, choice_text, choose
from sweep.analysis.fronts import near_dense
from sweep.analysis.load import load
from sweep.analysis.summary import reproduce
from sweep.analyze import main
from sweep.errors import UserError
from sweep.results import table as results

# (val_acc, test_acc, sparsity, archive_bytes, flops): a dense trial at 0.97 and, within one
# point of it (val_acc >= 0.96), trials whose smallest archive, highest sparsity and fewest
# flops are three different ones; outside it, a smaller and sparser one with the best test_acc.
TRIALS = [
    ("none", 0.0, 0.970, 0.960, 0.000, 9000, 8000),  # 0: dense
    ("l1_prox", 1e-4, 0.965, 0.955, 0.500, 3000, 2000),  # 1: fewest flops within
    ("l1_prox", 2e-4, 0.960, 0.950, 0.700, 1500, 4000),  # 2: smallest within, at the edge
    ("l1_prox", 3e-4, 0.962, 0.952, 0.800, 2500, 6000),  # 3: sparsest within
    ("l1_prox", 1e-3, 0.955, 0.990, 0.950, 500, 300),  # 4: outside: better on everything else
]


def write_sweep(tmp_path: Path, trials=TRIALS, name: str = "s", **extra) -> Path:
    """A sweep directory whose results.csv holds `trials` (TRIALS' fields), each complete on
    digits, plus a failed trial with the smallest model of all; `extra`: columns for all."""
    sweep = tmp_path / name
    sweep.mkdir()
    rows = [{"trial": i, "status": "complete", "regularizer": reg, "l1_lambda": lam,
             "prune": "none", "data": "digits", "val_acc": val, "test_acc": test,
             "sparsity": sparsity, "archive_bytes": size, "archive_test_acc": test,
             "flops": flops, "compact_shape": f"{int(flops // 100)}-10-10",
             "overrides": f"l1_lambda={lam} regularizer={reg}",
             "run_dir": str(sweep / f"trial_{i}"), **extra}
            for i, (reg, lam, val, test, sparsity, size, flops) in enumerate(trials)]  # fmt: skip
    failed = {**rows[-1], "trial": len(rows), "status": "failed", "val_acc": 0.99,
              "archive_bytes": 10, "overrides": "l1_lambda=0.5"}  # fmt: skip
    results.write_atomic([*rows, failed], sweep / "results.csv")
    return sweep


def chosen_trial(frame: pd.DataFrame, want: Want) -> int | None:
    choice = choose(frame, want)
    return None if choice.index is None else int(frame.loc[choice.index, "trial"])


def test_the_smallest_model_within_the_drop_and_none_outside_it(tmp_path):
    frame = load([write_sweep(tmp_path)])
    choice = choose(frame, Want(1.0))
    assert choice.pick == "bytes"  # the default, the trials having archive_bytes
    assert choice.reference.val_acc == 0.970 and frame.loc[choice.reference.index, "trial"] == 0
    # trial 2 sits exactly on the edge (0.970 - 0.01); trial 4 (500 bytes, test 0.99) is
    # outside, and the failed trial (10 bytes, val 0.99) is no candidate
    assert frame.loc[choice.index, "trial"] == 2 and (choice.within, choice.candidates) == (4, 5)
    assert chosen_trial(frame, Want(0.9)) == 3  # the edge moved: 2 is out
    assert chosen_trial(frame, Want(1.5)) == 4
    assert chosen_trial(frame, Want(0.0)) == 0  # no drop at all: the dense model itself
    text = choice_text(frame, choice)
    assert "reference: val_acc 0.9700, trial 0, the best dense trial (complete, sparsity < " in text
    assert "within 1 point of it on validation (val_acc >= 0.9600): 4 of 5 complete" in text
    assert "the smallest archive (min archive_bytes) is trial 2:" in text
    assert "\nuse: python -m sweep.run l1_lambda=0.0002 regularizer=l1_prox\n" in text
    assert "trial 2: val_acc 0.9600 (1.00 points below the reference), test_acc 0.9500" in text
    assert "archive 1,500 bytes, sparsity 70.0%, 4,000 multiply-adds, compact shape 40-10" in text


def test_pick_sparsity_and_flops_choose_by_their_columns(tmp_path):
    frame = load([write_sweep(tmp_path)])
    assert chosen_trial(frame, Want(1.0, "sparsity")) == 3
    assert chosen_trial(frame, Want(1.0, "flops")) == 1
    assert "the fewest multiply-adds (min flops) is trial 1" in choice_text(
        frame, choose(frame, Want(1.0, "flops"))
    )
    # ties on the picked column go to the higher val_acc
    tied = load([write_sweep(tmp_path, [*TRIALS[:3], (*TRIALS[3][:4], 0.7, 1500, 4000)], "t")])
    assert chosen_trial(tied, Want(1.0, "sparsity")) == 3 and chosen_trial(tied, Want(1.0)) == 3


def test_without_archive_bytes_the_default_pick_is_sparsity_and_bytes_is_refused(tmp_path):
    frame = load([write_sweep(tmp_path)]).assign(archive_bytes=float("nan"))
    assert choose(frame, Want(1.0)).pick == "sparsity"
    with pytest.raises(UserError, match="--pick bytes: no complete trial has archive_bytes; use"):
        choose(frame, Want(1.0, "bytes"))


def test_dense_is_near_zero_sparsity_unpruned_and_a_within_drop_baseline_counts(tmp_path):
    trials = [("l1", 1e-6, 0.980, 0.97, 0.009, 9000, 8000),  # a weak L1 that zeroed ~nothing
              ("l1", 1e-5, 0.990, 0.97, 0.011, 9000, 8000),  # 1.1% zeros: not dense
              *TRIALS[1:4]]  # fmt: skip
    sweep = write_sweep(tmp_path, trials)
    frame = load([sweep])
    assert near_dense(frame).tolist() == [True, False, False, False, False, False]
    ref = choose(frame, Want(1.0)).reference
    assert ref.val_acc == 0.980 and "trial 0, the best dense trial" in ref.label
    assert not near_dense(frame.assign(prune="magnitude")).any()  # pruned: not dense
    (sweep / "baseline").mkdir()  # an objective=within_drop sweep's own dense run
    (sweep / "baseline" / "metrics.json").write_text(json.dumps({"val_acc": 0.985}))
    ref = choose(frame, Want(1.0)).reference
    assert ref.val_acc == 0.985 and ref.index is None
    assert ref.label == "the dense baseline run of s (objective=within_drop)"


def test_a_reference_given_or_a_reference_trial_measures_the_drop(tmp_path):
    frame = load([write_sweep(tmp_path)])
    assert chosen_trial(frame, Want(1.0, reference=0.965)) == 4  # 0.955 is within 0.965 - 0.01
    choice = choose(frame, Want(1.0, reference_trial=3))  # 0.962: the floor is 0.952
    assert choice.reference.label == "trial 3, given (--reference-trial 3)"
    assert frame.loc[choice.index, "trial"] == 4
    with pytest.raises(UserError, match="--reference-trial 5: trial 5 of s is failed"):
        choose(frame, Want(1.0, reference_trial=5))
    with pytest.raises(UserError, match="--reference-trial 9: no trial 9 in s"):
        choose(frame, Want(1.0, reference_trial=9))
    with pytest.raises(UserError, match="--reference 97: give a validation accuracy in"):
        choose(frame, Want(1.0, reference=97))
    with pytest.raises(UserError, match="--max-drop -1: give points of val_acc, 0 or more"):
        choose(frame, Want(-1.0))


def test_trials_on_several_data_sets_are_refused(tmp_path):
    frame = load([write_sweep(tmp_path), write_sweep(tmp_path, name="f", data="fashion_mnist")])
    with pytest.raises(UserError, match="trained on digits, fashion_mnist; analyze each"):
        choose(frame, Want(1.0))


def test_no_dense_trial_and_no_reference_is_one_line_exit_2(tmp_path, capsys):
    sweep = write_sweep(tmp_path, TRIALS[1:])
    out = tmp_path / "out"
    assert main([str(sweep), "--max-drop", "1", "--no-mask", "--out", str(out)]) == 2
    captured = capsys.readouterr()
    [line] = captured.err.splitlines()
    assert line.startswith("error: --max-drop: no dense trial to measure the drop from (none ")
    assert "give one: --reference VAL_ACC" in line and "--reference-trial N" in line
    assert captured.out == "" and not out.exists()  # refused before anything is written
    assert main([str(sweep), "--pick", "flops", "--no-mask"]) == 2  # a choice's option alone
    err = capsys.readouterr().err
    assert err == "error: --pick needs --max-drop; e.g. --max-drop 1.0 --pick ...\n"


def test_the_command_prints_the_choice_and_writes_it_to_choice_csv(tmp_path, capsys):
    sweep = write_sweep(tmp_path)
    out = tmp_path / "out"
    assert main([str(sweep), "--max-drop", "1.0", "--no-mask", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    section = printed.split("## the configuration to use (--max-drop 1, --pick bytes)\n", 1)[1]
    assert "use: python -m sweep.run l1_lambda=0.0002 regularizer=l1_prox" in section
    assert printed.rstrip().endswith(f"wrote pareto.csv, choice.csv, summary.md and plots to {out}")
    section = section.split("\nwrote ")[0]
    assert section in (out / "summary.md").read_text()  # the summary holds the same section
    [row] = pd.read_csv(out / "choice.csv").to_dict("records")
    assert row["chosen"] and row["trial"] == 2 and row["sweep"] == "s"
    assert (row["pick"], row["pick_column"], row["max_drop"]) == ("bytes", "archive_bytes", 1.0)
    assert row["reference_val_acc"] == 0.97 and row["reference_trial"] == 0
    assert row["drop"] == pytest.approx(1.0) and row["val_acc"] == 0.96 and row["test_acc"] == 0.95
    assert row["archive_bytes"] == 1500 and row["compact_shape"] == "40-10-10"
    assert row["reproduce"] == "python -m sweep.run l1_lambda=0.0002 regularizer=l1_prox"
    assert row["overrides"] == "l1_lambda=0.0002 regularizer=l1_prox"
    assert "csv" not in row and "objective_metrics" not in row


def test_nothing_within_the_drop_says_so_in_one_line_and_names_the_closest(tmp_path, capsys):
    sweep = write_sweep(tmp_path)
    out = tmp_path / "out"
    args = [str(sweep), "--max-drop", "1", "--reference", "0.99", "--no-mask", "--out", str(out)]
    assert main(args) == 0
    section = capsys.readouterr().out.split("## the configuration to use", 1)[1]
    assert section.splitlines()[2:4] == [
        "reference: val_acc 0.9900, given (--reference 0.99)",
        "nothing within 1 point of it on validation (val_acc >= 0.9800): the closest is trial 0, "
        "val_acc 0.9700 (2.00 points below); nothing chosen (--max-drop 2 would admit it)",
    ]
    assert "use:" not in section
    [row] = pd.read_csv(out / "choice.csv").to_dict("records")
    assert not row["chosen"] and row["trial"] == 0 and pd.isna(row["reference_trial"])
    assert row["reference"] == "given (--reference 0.99)"


def test_choice_frame_of_a_frame_in_memory(tmp_path):
    frame = load([write_sweep(tmp_path)])
    choice = choose(frame, Want(1.0, "sparsity"))
    row = choice_frame(frame, choice).iloc[0]
    assert row["trial"] == 3 and row["reproduce"] == reproduce(frame.loc[choice.index])


def test_no_trial_with_a_validation_accuracy_is_one_line_exit_2(tmp_path, capsys):
    """A reference given, but no complete trial holds val_acc (and the picked column): one
    line, not a traceback."""
    sweep = write_sweep(tmp_path, val_acc=float("nan"))
    code = main([str(sweep), "--max-drop", "1", "--reference", "0.97"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("error: --max-drop: no complete trial has both val_acc and")
