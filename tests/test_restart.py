"""hydra.sweeper.n_trials is the study's total (optuna#2638, Optuna's MaxTrialsCallback): the
same command started again finishes the same sweep, a finished one runs nothing, a larger
n_trials extends it, and processes sharing a study stop together at the total.

Real sweep processes on a real SQLite study, stopped with a real SIGINT: nothing mocked.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest

from conftest import run_cli
from sweep.search import interrupts, parallel
from sweep.search.trials import ROW_ATTR, tally


def _study(cwd: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{cwd}/outputs/optuna.db")


def _csv(cwd: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(cwd / "outputs" / "sweeps" / name / "results.csv")


def _printed(out: str) -> dict[int, tuple[int, int]]:
    """Each trial line's trial number -> its [k/n]."""
    return {
        int(m[1]): (int(m[2]), int(m[3]))
        for m in re.finditer(r"trial (\d+) \[(\d+)/(\d+)\] (?:complete|pruned|failed)", out)
    }


def _popen(cwd: Path, log: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "sweep.run", "-m", *args],
        cwd=cwd, stdout=(cwd / log).open("w"), stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONWARNINGS": "ignore"}, start_new_session=True,
        # Ctrl-C as a terminal delivers it (a background job inherits SIGINT ignored)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip


def test_only_trials_with_a_result_count_toward_n_trials(tmp_path):
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/s.db")
    for state, row in [("COMPLETE", True), ("PRUNED", True), ("FAIL", True),  # results
                       ("FAIL", False)]:  # cut off by Ctrl-C or a kill: run again  # fmt: skip
        trial = study.ask()
        if row:
            trial.set_user_attr(ROW_ATTR, {"trial": trial.number})
        study.tell(trial, 1.0 if state == "COMPLETE" else None,
                   state=optuna.trial.TrialState[state])  # fmt: skip
    study.ask()  # running in some process
    study.enqueue_trial({"x": 1.0})  # waiting: counts once it ran
    assert tally(study) == (3, 1)


@pytest.mark.slow
def test_a_stopped_sweep_started_again_finishes_at_its_total_and_prints_each_trial(tmp_path):
    args = ["hydra.sweeper.n_trials=4", "hydra.sweeper.study_name=again", "hydra.sweeper.n_jobs=1",
            "train.epochs=30", "train.log_every=30"]  # fmt: skip
    csv = tmp_path / "outputs" / "sweeps" / "again" / "results.csv"
    first = _popen(tmp_path, "first.log", *args)
    try:
        end = time.time() + 180
        while not (csv.exists() and len(pd.read_csv(csv)) >= 2) and time.time() < end:
            time.sleep(0.05)
        os.killpg(first.pid, signal.SIGINT)  # Ctrl-C after 2 trials, a third one running
        assert first.wait(timeout=60) == 130
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    before = len(_csv(tmp_path, "again"))
    assert 2 <= before < 4
    printed = _printed((tmp_path / "first.log").read_text())
    # the same command again: the rest of the 4, its count going on from the study's
    second = run_cli(tmp_path, "-m", *args)
    out = second.stdout + second.stderr
    assert "resume or extend with:" in out and "a larger n_trials extends it" in out
    more = _printed(out)
    assert sorted(k for k, _ in more.values()) == list(range(before + 1, 5))
    assert all(n == 4 for _, n in more.values())
    df, study = _csv(tmp_path, "again"), _study(tmp_path, "again")
    assert len(df) == 4 and df["trial"].is_unique and tally(study) == (4, 0)
    assert set(df["trial"]) == set(printed) | set(more)  # every finished trial printed once
    assert not set(printed) & set(more)
    # a finished sweep: run again, it runs none and says so in one line
    third = run_cli(tmp_path, "-m", *args)
    out = third.stdout + third.stderr
    [line] = [ln for ln in out.splitlines() if "nothing to run" in ln]
    assert "study again has 4 finished trials, hydra.sweeper.n_trials=4" in line
    assert "raise hydra.sweeper.n_trials" in line and not _printed(out)
    assert len(_study(tmp_path, "again").trials) == len(study.trials)
    # extended: n_trials=6 runs 2 more
    fourth = run_cli(tmp_path, "-m", *args, "hydra.sweeper.n_trials=6")
    assert sorted(k for k, _ in _printed(fourth.stdout + fourth.stderr).values()) == [5, 6]
    assert len(_csv(tmp_path, "again")) == 6 and tally(_study(tmp_path, "again")) == (6, 0)


@pytest.mark.slow
def test_two_processes_sharing_a_study_stop_together_at_the_total(tmp_path):
    args = ["hydra.sweeper.n_trials=5", "hydra.sweeper.study_name=both", "hydra.sweeper.n_jobs=1",
            "train.epochs=5", "train.log_every=5"]  # fmt: skip
    procs = [_popen(tmp_path, f"p{i}.log", *args) for i in range(2)]
    try:
        codes = [p.wait(timeout=300) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
    logs = [(tmp_path / f"p{i}.log").read_text() for i in range(2)]
    assert codes == [0, 0], logs
    study = _study(tmp_path, "both")
    # exactly the total: neither process asked past it, none is left running
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 5
    df = _csv(tmp_path, "both")
    assert sorted(df["trial"]) == list(range(5))
    printed = [_printed(log) for log in logs]
    assert sorted([*printed[0], *printed[1]]) == list(range(5))  # each trial printed once


@pytest.mark.parametrize("jobs", [1, 2])
def test_the_loop_stops_asking_when_the_study_holds_its_trials(jobs):
    running: list[int] = []
    told: list[int] = []
    left = iter(range(3))  # the study holds its total after 3 asks

    def ask() -> int | None:
        number = next(left, None)
        if number is not None:
            running.append(number)
        return number

    with interrupts.handled():
        parallel.run(10, jobs, ask, lambda n: lambda: n, lambda n, r: told.append(n) or True,
                     running)  # fmt: skip
    assert sorted(told) == [0, 1, 2] and running == []


# A user's callback that, once the trial's metrics.json is written, sends Ctrl-C to the sweep
# process: the trial finished as the sweep shut down.
SHUTDOWN = """
import multiprocessing, os, signal
from sweep.task.callbacks import Callback


class CtrlC(Callback):
    order = 1000  # after metrics_json: the trial's result is on disk

    def on_run_end(self, run, metrics):
        if multiprocessing.parent_process() is not None:  # a forked trial
            os.kill(os.getppid(), signal.SIGINT)
"""


@pytest.mark.slow
def test_a_trial_that_finished_during_the_shutdown_is_recorded_and_printed(tmp_path):
    (tmp_path / "ctrlc").mkdir()
    (tmp_path / "ctrlc" / "__init__.py").write_text(SHUTDOWN)
    proc = run_cli(tmp_path, "-m", "+callbacks.ctrlc._target_=ctrlc.CtrlC",
                   "allow_targets=[ctrlc.*]", "hydra.sweeper.n_trials=3", "hydra.sweeper.n_jobs=1",
                   "hydra.sweeper.study_name=shut", "train.epochs=2", check=False)  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 130 and "interrupted: " in out and "Traceback" not in out, out
    assert _printed(out) == {0: (1, 3)}  # its line, as every finished trial gets
    assert list(_csv(tmp_path, "shut")["status"]) == ["complete"]
    assert [t.state.name for t in _study(tmp_path, "shut").trials] == ["COMPLETE"]
