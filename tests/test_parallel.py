"""Parallel trials: the auto rule, the slot loop (no batch barrier), and real parallel sweeps."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest

from conftest import run_cli
from sweep import parallel
from sweep.errors import UserError

GiB = 2**30
JOBLIB = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
LOCAL = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher"
SLURM = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
BASIC = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"
DIGITS, FASHION = 8 * 2**20, 230 * 2**20  # decoded sizes, about


def plan(option="auto", **kwargs) -> parallel.Plan:
    given = {"launcher": JOBLIB, "device": "cpu", "n_trials": 20, "cores": 2,
             "memory": 16 * GiB, "data_bytes": DIGITS, "threads": None, **kwargs}  # fmt: skip
    return parallel.plan(option, **given)


@pytest.mark.parametrize(
    "kwargs,jobs,threads",
    [
        ({}, 2, 1),  # this project's machine: one trial per core, one thread each
        ({"cores": 16}, 16, 1),
        ({"cores": 16, "n_trials": 4}, 4, 4),  # fewer trials than cores: threads to each
        ({"cores": 1}, 1, None),  # one core: one trial, the job's default threads
        ({"launcher": LOCAL, "cores": 8}, 8, 1),
        # memory: ~0.6 GiB a digits worker, ~1.1 GiB a Fashion-MNIST one, 80% of what is free
        ({"cores": 64, "memory": 4 * GiB}, 4, 16),
        ({"cores": 64, "memory": 4 * GiB, "data_bytes": FASHION}, 2, 32),
        ({"cores": 8, "memory": GiB // 4, "data_bytes": FASHION}, 1, None),
        # a GPU: up to 4 trials share it (CPU-bound steps), as its memory and the cores allow
        ({"device": "cuda", "cores": 16, "gpu_memory": 80 * GiB}, 4, 4),
        ({"device": "cuda", "cores": 2, "gpu_memory": 80 * GiB}, 2, 1),
        ({"device": "cuda", "cores": 16, "gpu_memory": GiB}, 1, None),
        ({"device": "mps"}, 1, None),
        ({"launcher": BASIC, "cores": 16}, 1, None),  # in-process: one at a time
        ({"threads": 2}, 2, 2),  # the user's train.threads is kept
        ({"option": 3}, 3, 1),
        ({"option": 1, "cores": 8}, 1, None),
        ({"option": 4, "launcher": BASIC}, 1, None),
        ({"option": 16, "launcher": SLURM}, 16, None),
    ],
    ids=lambda v: str(v) if not isinstance(v, dict) else " ".join(f"{k}={x}" for k, x in v.items()),
)
def test_the_auto_rule(kwargs, jobs, threads):
    chosen = plan(**kwargs)
    assert (chosen.jobs, chosen.threads) == (jobs, threads), chosen.why


def test_auto_on_a_cluster_asks_for_a_number():
    with pytest.raises(UserError, match="hydra.sweeper.n_jobs=16"):
        plan(launcher=SLURM)


def _asker(numbers, running: list[int]):
    def ask() -> int:
        n = next(numbers)
        running.append(n)  # as the sweeper's ask lists its trial
        return n

    return ask


def _loop(lengths: list[float], jobs: int, stop_after: int | None = None):
    """parallel.run over fake jobs that sleep; returns (told order, start and end times)."""
    times: dict[int, list[float]] = {}
    told: list[int] = []
    numbers = iter(range(len(lengths)))
    running: list[int] = []
    t0 = time.perf_counter()

    def launch(n: int) -> int:
        times[n] = [time.perf_counter() - t0]
        time.sleep(lengths[n])
        times[n].append(time.perf_counter() - t0)
        return n

    def tell(n: int, result: int) -> bool:
        assert result == n and threading.current_thread() is threading.main_thread()
        told.append(n)
        return stop_after is None or len(told) < stop_after

    parallel.run(len(lengths), jobs, _asker(numbers, running), launch, tell, running)
    assert running == []
    return told, times


def test_a_slow_trial_does_not_hold_the_others():
    told, times = _loop([1.5, 0.1, 0.1, 0.1, 0.1, 0.1], jobs=2)
    assert told[-1] == 0 and sorted(told) == list(range(6))
    # trials 1-5 ran one after another in the other slot, all while trial 0 ran
    assert all(times[n][1] < times[0][1] for n in range(1, 6))
    assert all(times[n + 1][0] >= times[n][1] - 0.05 for n in range(1, 5))


def test_one_at_a_time_runs_on_the_main_thread():
    threads = []

    def launch(n: int) -> int:
        threads.append(threading.current_thread())
        return n

    told: list[int] = []
    running: list[int] = []
    parallel.run(3, 1, _asker(iter(range(3)), running), launch,
                 lambda n, r: told.append(n) or True, running)  # fmt: skip
    assert told == [0, 1, 2] and set(threads) == {threading.main_thread()}


def test_stopping_asks_no_more_and_waits_for_the_running():
    told, times = _loop([0.3, 0.05, 0.05, 0.05, 0.05], jobs=2, stop_after=1)
    assert told == [1, 0] and sorted(times) == [0, 1]  # trial 0 was still told


def test_a_launcher_error_is_raised_and_its_job_left_for_the_caller():
    running: list[int] = []
    numbers = iter(range(3))

    def launch(n: int) -> int:
        if n == 0:
            raise OSError("submission failed")
        time.sleep(0.1)
        return n

    told: list[int] = []
    with pytest.raises(OSError, match="submission failed"):
        parallel.run(3, 2, _asker(numbers, running), launch,
                     lambda n, r: told.append(n) or True, running)  # fmt: skip
    assert running == [0] and told == [1]  # the caller fails trial 0 in the study


def _study(cwd: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{cwd}/outputs/optuna.db")


# Epochs of the slow trial (the others train 1), and how many others must finish while it
# runs: with a batch barrier not even the third trial could start before it ended. A submitit
# job is a fresh process (seconds of imports), so fewer of them fit.
SLOW = {"joblib": (4000, 4), "local": (8000, 2)}  # long enough with the fast MLP step too


@pytest.mark.parametrize("launcher", ["joblib", "local"])
def test_a_slow_trial_does_not_hold_a_real_sweep(tmp_path, launcher):
    slow, beside = SLOW[launcher]
    fast = ",".join(f"{{train.epochs:1,l1_lambda:{k}e-4}}" for k in range(2, 6))
    proc = run_cli(
        tmp_path, "-m", f"hydra/launcher={launcher}", "hydra.sweeper.n_jobs=2",
        "hydra.sweeper.n_trials=5", "hydra.sweeper.study_name=slow", f"train.log_every={slow}",
        f"train.epochs=choice(1,{slow})",
        f"hydra.sweeper.enqueue=[{{train.epochs:{slow},l1_lambda:1e-4}},{fast}]",
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert "2 trial(s) at a time, train.threads=" in out and "TPE with constant_liar" in out
    study = _study(tmp_path, "slow")
    trials = {t.number: t for t in study.trials}
    assert trials[0].params["train.epochs"] == slow
    assert all(t.state.name == "COMPLETE" for t in trials.values())
    # the next trials started and finished while trial 0 ran: no batch waits for it
    for n in range(1, beside + 1):
        assert trials[0].datetime_start < trials[n].datetime_start
        assert trials[n].datetime_complete < trials[0].datetime_complete
    df = pd.read_csv(tmp_path / "outputs" / "sweeps" / "slow" / "results.csv")
    assert list(df["trial"]) == [0, 1, 2, 3, 4] and (df["status"] == "complete").all()
    assert (df[df["trial"] > 0]["epochs"] == 1).all()


def test_a_parallel_study_resumes(tmp_path):
    args = ["-m", "hydra.sweeper.n_trials=3", "hydra.sweeper.study_name=pr",
            "train.epochs=1", "hydra.sweeper.n_jobs=2"]  # fmt: skip
    run_cli(tmp_path, *args)
    second = run_cli(tmp_path, *args)
    assert "(3 trials so far)" in second.stdout + second.stderr
    df = pd.read_csv(tmp_path / "outputs" / "sweeps" / "pr" / "results.csv")
    study = _study(tmp_path, "pr")
    assert list(df["trial"]) == list(range(6)) and len(study.trials) == 6
    assert df["run_dir"].is_unique and df["l1_lambda"].is_unique
    values = {t.number: t.value for t in study.trials}
    assert dict(zip(df["trial"], df["objective"])) == values


def test_auto_uses_every_core_with_one_thread_each(tmp_path):
    import os

    cores = len(os.sched_getaffinity(0))
    proc = run_cli(tmp_path, "-m", "hydra.sweeper.n_trials=2", "hydra.sweeper.study_name=a",
                   "train.epochs=1")  # fmt: skip
    out = proc.stdout + proc.stderr
    jobs = min(cores, 2)
    assert f"{jobs} trial(s) at a time" in out
    df = pd.read_csv(tmp_path / "outputs" / "sweeps" / "a" / "results.csv")
    if jobs > 1:  # what each ran with is in its overrides: the row reproduces exactly
        assert df["overrides"].str.contains(f"train.threads={cores // jobs}").all()
