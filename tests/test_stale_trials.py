"""No stale trials: a trial a killed sweep left RUNNING is failed and its parameters run again
first when a sweep is started again; a live trial of another process is never touched."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
from optuna.distributions import FloatDistribution

from conftest import run_cli
from sweep.search.study import ResultFiles, recover_stale

# killed processes and their stale trials
pytestmark = pytest.mark.slow

LONG = ["train.epochs=60", "train.log_every=60"]


def _study(cwd: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{cwd}/outputs/optuna.db")


def _start(cwd: Path, name: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "sweep.run", "-m", "hydra.sweeper.n_trials=100",
         f"hydra.sweeper.study_name={name}", *LONG],
        cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONWARNINGS": "ignore"}, start_new_session=True,
    )  # fmt: skip


def _running(cwd: Path, name: str, finished: int, timeout: float = 180) -> optuna.trial.FrozenTrial:
    """Wait until the study has `finished` finished trials and one RUNNING; return that one."""
    end = time.time() + timeout
    while time.time() < end:
        # results.csv is written once the sweep has made its study (and the storage's tables)
        if (cwd / "outputs" / "sweeps" / name / "results.csv").exists():
            trials = _study(cwd, name).trials
            running = [t for t in trials if t.state.name == "RUNNING"]
            if running and len(trials) - len(running) >= finished:
                return running[0]
        time.sleep(0.2)
    raise AssertionError("no RUNNING trial in time")


def _trained(sweep_dir: Path, number: int) -> bool:
    """Whether trial `number`'s job wrote its whole result (the next start records it)."""
    try:
        return "status" in json.loads((sweep_dir / f"trial_{number}" / "metrics.json").read_text())
    except (OSError, ValueError):
        return False


def _owned_by_a_dead_process(trial: optuna.Trial) -> int:
    """Mark `trial` as claimed on this host by a process that has ended; returns its pid."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    trial.set_user_attr("l1sweep_owner", {"host": socket.gethostname(), "pid": dead.pid})
    return dead.pid


def test_a_killed_sweeps_trial_is_failed_and_run_again_first(tmp_path):
    proc = _start(tmp_path, "k")
    _running(tmp_path, "k", finished=1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    # n_jobs=auto runs a trial per core: the kill may leave more than one RUNNING
    lost = [t for t in _study(tmp_path, "k").trials if t.state.name == "RUNNING"]
    assert lost
    # one whose job had written its result by the kill is recorded from it, not run again
    trained = {t.number for t in lost if _trained(tmp_path / "outputs" / "sweeps" / "k", t.number)}
    before = len(_study(tmp_path, "k").trials)
    # a kill between a trial's ask and its claim (two commits) leaves it with no owner: the
    # start, holding the ask lock, takes it for lost (its sweep stopped before claiming it)
    # n_trials is the study's total: the trials with a result, the lost ones recorded from
    # their files, and len(lost) more
    counted = sum(t.state.is_finished() and t.user_attrs.get("row") is not None
                  for t in _study(tmp_path, "k").trials)  # fmt: skip
    total = counted + len(trained) + len(lost)
    again = run_cli(tmp_path, "-m", f"hydra.sweeper.n_trials={total}",
                    "hydra.sweeper.study_name=k", "hydra.sweeper.stale_after=1",
                    *LONG)  # fmt: skip
    out = again.stdout + again.stderr
    trials = _study(tmp_path, "k").trials
    for t in lost:
        why = (f"its process {proc.pid} is gone" if "l1sweep_owner" in t.user_attrs
               else "its sweep stopped before claiming it")  # fmt: skip
        [line] = [x for x in out.splitlines() if f"trial {t.number} was left RUNNING ({why}" in x]
        # a trial killed between its ask and its draw has no point to run again
        assert ("drawn no parameters" in line) == (not t.params), line
        assert trials[t.number].state.name == ("COMPLETE" if t.number in trained else "FAIL")
    assert not [t for t in trials if t.state.name == "RUNNING"]
    rerun = trials[before:]  # this invocation's trials: the lost points first, then new draws
    assert len(rerun) == len(lost) and all(t.state.name == "COMPLETE" for t in rerun)
    drawn = [t for t in lost if t.params and t.number not in trained]
    assert sorted(t.params["l1_lambda"] for t in rerun[: len(drawn)]) == sorted(
        t.params["l1_lambda"] for t in drawn
    )
    df = pd.read_csv(tmp_path / "outputs" / "sweeps" / "k" / "results.csv").set_index("trial")
    for t in rerun:
        assert df.loc[t.number, "l1_lambda"] == t.params["l1_lambda"]


def test_a_live_trial_of_another_process_is_never_touched(tmp_path):
    first = _start(tmp_path, "live")
    try:
        _running(tmp_path, "live", finished=0)
        second = run_cli(tmp_path, "-m", "hydra.sweeper.n_trials=1",
                         "hydra.sweeper.study_name=live", *LONG)  # fmt: skip
        assert "was left RUNNING" not in second.stdout + second.stderr
        states = [t.state.name for t in _study(tmp_path, "live").trials]
        assert "FAIL" not in states and "RUNNING" in states, states
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=60)


def test_another_hosts_trial_is_failed_only_past_the_grace(tmp_path):
    (tmp_path / "outputs").mkdir()
    study = optuna.create_study(study_name="h", storage=f"sqlite:///{tmp_path}/outputs/optuna.db",
                                direction="maximize")  # fmt: skip
    space = {"l1_lambda": FloatDistribution(1e-5, 1e-3, log=True)}
    silent, beating = study.ask(space), study.ask(space)
    for trial, age in ((silent, 1000), (beating, 0)):
        trial.set_user_attr("l1sweep_owner", {"host": "elsewhere", "pid": os.getpid()})
        trial.set_user_attr("l1sweep_heartbeat", time.time() - age)
    assert socket.gethostname() != "elsewhere"
    # n_trials is the study's total, and the live trial of the other host holds one place
    proc = run_cli(tmp_path, "-m", "hydra.sweeper.n_trials=2", "hydra.sweeper.study_name=h",
                   "hydra.sweeper.stale_after=60", "train.epochs=1")  # fmt: skip
    out = proc.stdout + proc.stderr
    left = rf"trial {silent.number} was left RUNNING \(no heartbeat for 10\d\ds, grace 60s\)"
    assert re.search(left, out), out
    trials = _study(tmp_path, "h").trials
    assert trials[silent.number].state.name == "FAIL"
    assert trials[beating.number].state.name == "RUNNING"  # within its grace: alive
    assert trials[-1].params == silent.params and trials[-1].state.name == "COMPLETE"


def test_a_trial_killed_between_its_row_and_its_state_leaves_no_row(tmp_path):
    # The sweep records a finished job's row, then tells its state; a SIGKILL between the two
    # leaves a RUNNING trial holding a row. Recovered, it is failed and its row dropped: the
    # CSV never shows a finished row for a trial the study failed (its parameters run again).
    storage = optuna.storages.get_storage(f"sqlite:///{tmp_path}/s.db")
    study = optuna.create_study(storage=storage, study_name="r")
    trial = study.ask({"l1_lambda": FloatDistribution(1e-5, 1e-3, log=True)})
    _owned_by_a_dead_process(trial)
    trial.set_user_attr("row", {"trial": trial.number, "status": "complete", "val_acc": 0.9})
    assert recover_stale(study, grace=300, storage=storage) == [trial.number]
    [failed, enqueued] = study.trials
    assert failed.state.name == "FAIL" and failed.user_attrs["row"] is None
    assert enqueued.params == {} and enqueued.state.name == "WAITING"
    csv = tmp_path / "results.csv"
    ResultFiles(csv).write(study)
    assert not csv.exists() or pd.read_csv(csv).empty


def test_a_trial_killed_before_its_draw_is_failed_and_not_enqueued(tmp_path, caplog):
    # Killed between study.ask and its first suggest, a trial holds no parameters: enqueuing
    # {} would add a trial that is a fresh draw under the name of a rerun.
    storage = optuna.storages.get_storage(f"sqlite:///{tmp_path}/s.db")
    study = optuna.create_study(storage=storage, study_name="e")
    trial = study.ask()
    pid = _owned_by_a_dead_process(trial)
    assert recover_stale(study, grace=300, storage=storage) == [trial.number]
    [failed] = study.trials
    assert failed.state.name == "FAIL"
    assert (
        f"trial {trial.number} was left RUNNING (its process {pid} is gone): failed; "
        "it had drawn no parameters" in caplog.text
    )


def test_a_lost_trial_whose_job_finished_is_recorded_from_its_files(tmp_path):
    # The job of trial 0 ran (a real run into its trial directory) but its sweep lost the
    # storage before telling it: the next start tells it its result and row from the files.
    # Trial 1 never finished: it is failed and its parameters run again, as before.
    sweep_dir = tmp_path / "sweep"
    run_cli(tmp_path, "train.epochs=1", "l1_lambda=2e-4", f"hydra.run.dir={sweep_dir}/trial_0")
    metrics = json.loads((sweep_dir / "trial_0" / "metrics.json").read_text())
    storage = optuna.storages.get_storage(f"sqlite:///{tmp_path}/s.db")
    study = optuna.create_study(storage=storage, study_name="f", direction="maximize")
    space = {"l1_lambda": FloatDistribution(1e-5, 1e-3, log=True)}
    done, unfinished = study.ask(space), study.ask(space)
    for trial in (done, unfinished):
        _owned_by_a_dead_process(trial)
    assert recover_stale(study, grace=300, sweep_dir=sweep_dir, storage=storage) == [0, 1]
    [told, failed, rerun] = study.trials
    assert told.state.name == "COMPLETE" and told.value == metrics["val_acc"]
    assert told.intermediate_values == {1: metrics["val_acc_curve"][0][1]}
    assert failed.state.name == "FAIL" and rerun.state.name == "WAITING"
    assert rerun.system_attrs["fixed_params"] == unfinished.params  # runs again first
    csv = tmp_path / "results.csv"
    ResultFiles(csv).write(study)
    [row] = pd.read_csv(csv).to_dict("records")
    assert row["trial"] == 0 and row["status"] == "complete" and row["objective"] == told.value
    assert row["val_acc"] == metrics["val_acc"] and row["run_dir"] == str(sweep_dir / "trial_0")
    assert row["overrides"] == "train.epochs=1 l1_lambda=2e-4"  # as a trial row: no hydra.*


def test_a_trial_asked_but_never_claimed_is_failed_at_the_next_start(tmp_path):
    # A sweep killed between study.ask and the claim left trial 1 RUNNING with no owner. Left
    # alone, it held one of n_trials' places for `stale_after` seconds (test_killed_sweep_loses
    # _at_most_the_running_trials[kill-2] then got one row too few); under the ask lock, which
    # every asking process holds until its trial is claimed, it can only be such a trial.
    run_cli(tmp_path, "-m", "hydra.sweeper.n_trials=1", "hydra.sweeper.study_name=u",
            "train.epochs=1")  # fmt: skip
    orphan = _study(tmp_path, "u").ask()
    proc = run_cli(tmp_path, "-m", "hydra.sweeper.n_trials=2", "hydra.sweeper.study_name=u",
                   "train.epochs=1")  # fmt: skip
    out = proc.stdout + proc.stderr
    assert (f"trial {orphan.number} was left RUNNING (its sweep stopped before claiming it): "
            "failed; it had drawn no parameters") in out, out  # fmt: skip
    states = [t.state.name for t in _study(tmp_path, "u").trials]
    assert states == ["COMPLETE", "FAIL", "COMPLETE"]
    assert len(pd.read_csv(tmp_path / "outputs" / "sweeps" / "u" / "results.csv")) == 2


def test_an_unclaimed_trial_is_left_alone_without_the_ask_lock(tmp_path):
    # Outside the lock (another process may be between its ask and its claim) only the
    # grace settles it, as a trial of another host
    storage = optuna.storages.get_storage(f"sqlite:///{tmp_path}/s.db")
    study = optuna.create_study(storage=storage, study_name="n")
    study.ask()
    assert recover_stale(study, grace=300, storage=storage) == []
    assert recover_stale(study, grace=300, storage=storage, unclaimed_are_lost=True) == [0]
    assert [t.state.name for t in study.trials] == ["FAIL"]
