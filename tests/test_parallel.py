"""Parallel trials: the auto rule, the slot loop (no batch barrier), and real parallel sweeps."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest

from conftest import run_cli
from sweep.errors import UserError
from sweep.search import parallel
from sweep.search.launcher import unsafe

GiB = 2**30
JOBLIB = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
LOCAL = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher"
SLURM = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
BASIC = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"
FORK = "sweep.search.launcher.ForkLauncher"
DIGITS, FASHION = 8 * 2**20, 230 * 2**20  # decoded sizes, about
FORK64 = {"launcher": FORK, "cores": 64, "memory": 4 * 2**30}


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
        # forked trials share the sweep process's data: only their own memory counts
        ({**FORK64, "data_bytes": FASHION}, 5, 12),
        ({"launcher": FORK}, 2, 1),
        # forked from a forkserver: each trial decodes its own copy, as a joblib worker does
        ({**FORK64, "data_bytes": FASHION, "shares_data": False}, 2, 32),
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
    starts: list[threading.Thread] = []
    t0 = time.perf_counter()

    def launch(n: int):
        starts.append(threading.current_thread())

        def wait() -> int:
            times[n] = [time.perf_counter() - t0]
            time.sleep(lengths[n])
            times[n].append(time.perf_counter() - t0)
            return n

        return wait

    def tell(n: int, result: int) -> bool:
        assert result == n and threading.current_thread() is threading.main_thread()
        told.append(n)
        return stop_after is None or len(told) < stop_after

    parallel.run(len(lengths), jobs, _asker(numbers, running), launch, tell, running)
    assert running == []
    assert set(starts) == {threading.main_thread()}  # every start (a fork) on the main thread
    return told, times


def test_a_slow_trial_does_not_hold_the_others():
    told, times = _loop([1.5, 0.1, 0.1, 0.1, 0.1, 0.1], jobs=2)
    assert told[-1] == 0 and sorted(told) == list(range(6))
    # trials 1-5 ran one after another in the other slot, all while trial 0 ran
    assert all(times[n][1] < times[0][1] for n in range(1, 6))
    assert all(times[n + 1][0] >= times[n][1] - 0.05 for n in range(1, 5))


def test_one_at_a_time_runs_on_the_main_thread():
    threads = []

    def launch(n: int):
        def wait() -> int:
            threads.append(threading.current_thread())
            return n

        return wait

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

    def launch(n: int):
        if n == 0:
            raise OSError("submission failed")
        return lambda: time.sleep(0.1) or n

    told: list[int] = []
    with pytest.raises(OSError, match="submission failed"):
        parallel.run(3, 2, _asker(numbers, running), launch,
                     lambda n, r: told.append(n) or True, running)  # fmt: skip
    assert running == [0] and told == [1]  # the caller fails trial 0 in the study


def _sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def test_stop_workers_ends_joblibs_loky_workers_and_the_call_waiting_on_them():
    from joblib import Parallel, delayed

    errors: list[BaseException] = []

    def call() -> None:
        try:
            Parallel(n_jobs=2)(delayed(_sleep)(60) for _ in range(2))
        except BaseException as e:  # loky's TerminatedWorkerError once its workers are gone
            errors.append(e)

    thread = threading.Thread(target=call)
    thread.start()
    end = time.monotonic() + 60
    while time.monotonic() < end and len(parallel.multiprocessing.active_children()) < 2:
        time.sleep(0.05)
    workers = parallel.multiprocessing.active_children()
    assert len(workers) >= 2, workers
    t0 = time.monotonic()
    parallel.stop_workers()
    thread.join(timeout=30)
    assert not thread.is_alive() and time.monotonic() - t0 < 30
    assert "TerminatedWorkerError" in type(errors[0]).__name__, errors
    assert not any(w.is_alive() for w in workers)


def test_an_interrupt_ends_a_launcher_call_that_started_its_work_after_it():
    """Ctrl-C can land before a launched trial's worker process exists (joblib starts its pool
    inside the call): end() is called until every call has returned, so no worker started
    late holds the exit while its trial trains to the end."""
    begun, started, ended = threading.Event(), threading.Event(), threading.Event()

    def launch(n: int):
        def wait() -> int:
            if n == 1:  # its 'worker' starts only after the interrupt
                begun.set()
                interrupted.wait(10)
                started.set()
                ended.wait(30)  # trains on until ended
            return n

        return wait

    interrupted = threading.Event()

    def tell(n: int, r: int) -> bool:
        begun.wait(10)  # trial 1's call is under way, not waiting in the pool's queue
        interrupted.set()
        raise KeyboardInterrupt

    calls: list[bool] = []

    def end() -> None:
        calls.append(started.is_set())
        if started.is_set():
            ended.set()

    running: list[int] = []
    t0 = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        parallel.run(2, 2, _asker(iter(range(2)), running), launch, tell, running, end)
    assert ended.is_set() and calls[-1] is True and time.perf_counter() - t0 < 10


def _study(cwd: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{cwd}/outputs/optuna.db")


# The slow trial trains 2 epochs and then waits in a user callback until `beside` other trials
# have their rows in results.csv (written as each is told), so it holds its slot as long as the
# test needs and no longer, without taking a core from the rest of the suite; the others train
# 1 epoch. With a batch barrier not even the third trial could start before it ended, and the
# wait would run out (WAIT_CAP). A submitit job is a fresh process (seconds of imports), so
# fewer are asked of it.
WAIT_CAP = 240
BESIDE = {"fork": 4, "local": 2}
SLEEPER = """
import time

import pandas as pd

from sweep.task.callbacks import Callback


class Slow(Callback):
    def on_run_end(self, run, metrics):
        if run.cfg.train.epochs == 1:
            return
        csv, end = run.out_dir.parent / "results.csv", time.monotonic() + %d
        while time.monotonic() < end:
            if csv.exists() and len(pd.read_csv(csv)) >= %d:
                break
            time.sleep(0.2)
        time.sleep(1)  # the last one's tell is behind its row by a moment
"""


# fork (trials in forked children, results through pipes) and submitit's local processes (fresh
# interpreters, results through files); joblib's launcher runs one job a call as submitit's
# does, and its parallel trials are tested in test_long_sweeps.py and test_early_stopping.py.
@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["fork", "local"])
def test_a_slow_trial_does_not_hold_a_real_sweep(tmp_path, launcher):
    beside = BESIDE[launcher]
    (tmp_path / "sleeper.py").write_text(SLEEPER % (WAIT_CAP, beside))
    fast = ",".join(f"{{train.epochs:1,l1_lambda:{k}e-4}}" for k in range(2, 2 + beside))
    proc = run_cli(
        tmp_path, "-m", f"hydra/launcher={launcher}", "hydra.sweeper.n_jobs=2",
        f"hydra.sweeper.n_trials={beside + 1}", "hydra.sweeper.study_name=slow",
        "+callbacks.slow._target_=sleeper.Slow", "allow_targets=[sleeper.*]",
        "train.epochs=choice(1,2)",
        f"hydra.sweeper.enqueue=[{{train.epochs:2,l1_lambda:1e-4}},{fast}]",
        # every launcher's worker imports the callback, whatever its working directory
        env={"PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.getenv("PYTHONPATH")]))},
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert "2 trial(s) at a time, train.threads=" in out and "TPE with constant_liar" in out
    study = _study(tmp_path, "slow")
    trials = {t.number: t for t in study.trials}
    assert trials[0].params["train.epochs"] == 2
    assert all(t.state.name == "COMPLETE" for t in trials.values())
    # the next trials started and finished while trial 0 ran: no batch waits for it
    for n in range(1, beside + 1):
        assert trials[0].datetime_start < trials[n].datetime_start
        assert trials[n].datetime_complete < trials[0].datetime_complete
    df = pd.read_csv(tmp_path / "outputs" / "sweeps" / "slow" / "results.csv")
    assert list(df["trial"]) == list(range(beside + 1)) and (df["status"] == "complete").all()
    assert (df[df["trial"] > 0]["epochs"] == 1).all()
    # each trial on its share of the cores, its files written, its row the study's value
    cores = len(os.sched_getaffinity(0))
    assert df["overrides"].str.contains(f"train.threads={max(1, cores // 2)}").all()
    assert all((Path(d) / "metrics.json").exists() for d in df["run_dir"])
    assert dict(zip(df["trial"], df["objective"])) == {n: t.value for n, t in trials.items()}


@pytest.mark.slow
def test_a_parallel_study_resumes(tmp_path):
    args = ["-m", "hydra.sweeper.n_trials=3", "hydra.sweeper.study_name=pr",
            "train.epochs=1", "hydra.sweeper.n_jobs=2"]  # fmt: skip
    first = run_cli(tmp_path, *args)
    assert "forkserver" not in first.stdout + first.stderr
    # resumed with its trials forked from a forkserver instead (the same rows, the same study)
    # n_trials is the study's total: 3 more make 6
    args = [a.replace("n_trials=3", "n_trials=6") for a in args]
    second = run_cli(tmp_path, *args, "hydra.launcher.start_method=forkserver")
    out = second.stdout + second.stderr
    assert "(3 trials so far)" in out and "train.threads=1 each" in out
    assert ", forked from a forkserver" in out
    df = pd.read_csv(tmp_path / "outputs" / "sweeps" / "pr" / "results.csv")
    study = _study(tmp_path, "pr")
    assert list(df["trial"]) == list(range(6)) and len(study.trials) == 6
    assert df["run_dir"].is_unique and df["l1_lambda"].is_unique
    values = {t.number: t.value for t in study.trials}
    assert dict(zip(df["trial"], df["objective"])) == values


def test_an_unknown_start_method_is_one_line(tmp_path):
    proc = run_cli(tmp_path, "-m", "hydra.launcher.start_method=spawn", check=False)
    err = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "Traceback" not in err
    assert "hydra.launcher: start_method=spawn is not one of ['fork', 'forkserver']" in err
    assert not (tmp_path / "outputs").exists() or not any((tmp_path / "outputs").rglob("*.csv"))


def test_auto_uses_every_core_with_one_thread_each(tmp_path):
    cores = len(os.sched_getaffinity(0))
    proc = run_cli(tmp_path, "-m", "hydra.sweeper.n_trials=2", "hydra.sweeper.study_name=a",
                   "train.epochs=1")  # fmt: skip
    out = proc.stdout + proc.stderr
    jobs = min(cores, 2)
    assert f"{jobs} trial(s) at a time" in out
    df = pd.read_csv(tmp_path / "outputs" / "sweeps" / "a" / "results.csv")
    if jobs > 1:  # what each ran with is in its overrides: the row reproduces exactly
        assert df["overrides"].str.contains(f"train.threads={cores // jobs}").all()


def _processes_of(study: str) -> list[int]:
    """Live processes whose command line names this study (a sweep and its forked trials)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            cmd = (entry / "cmdline").read_bytes().decode(errors="replace")
            state = (entry / "stat").read_text().split(")")[-1].split()[0]
        except (OSError, ValueError):
            continue
        if f"study_name={study}" in cmd and state != "Z":
            found.append(int(entry.name))
    return found


@pytest.mark.slow
def test_forked_trials_die_with_a_killed_sweep(tmp_path):
    name = f"orphans{os.getpid()}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "sweep.run", "-m", "hydra.sweeper.n_trials=4",
         f"hydra.sweeper.study_name={name}", "hydra.sweeper.n_jobs=2", "train.epochs=3000",
         "train.log_every=3000"],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        end = time.time() + 60
        while len(_processes_of(name)) < 3 and time.time() < end:  # the sweep and 2 trials
            time.sleep(0.1)
        assert len(_processes_of(name)) == 3
        os.kill(proc.pid, signal.SIGKILL)  # the sweep alone, as an OOM killer would
        proc.wait(timeout=10)
        end = time.time() + 10
        while _processes_of(name) and time.time() < end:
            time.sleep(0.1)
        assert _processes_of(name) == []  # no trial trains on for nobody
    finally:
        for pid in _processes_of(name):
            os.kill(pid, signal.SIGKILL)


def test_a_forked_trial_may_use_every_core(tmp_path):
    # One trial at a time gets every core's thread: OpenMP would hang it in a child of a
    # process that had started OpenMP's threads, which the sweep process therefore never does.
    proc = run_cli(tmp_path, "-m", "hydra.sweeper.n_trials=2", "hydra.sweeper.study_name=one",
                   "hydra.sweeper.n_jobs=1", "train.epochs=2", timeout=120)  # fmt: skip
    assert "1 trial(s) at a time" in proc.stdout + proc.stderr
    df = pd.read_csv(tmp_path / "outputs" / "sweeps" / "one" / "results.csv")
    assert list(df["status"]) == ["complete", "complete"]


@pytest.mark.slow
def test_where_it_cannot_fork_the_launcher_hands_trials_to_joblib(tmp_path):
    assert unsafe("cpu") is None  # Linux, CPU: forked
    assert "cuda" in unsafe("cuda")
    # the sweep where forking is refused (on a GPU or macOS): joblib's workers run the trials
    code = (
        "import runpy, sys, sweep.search.launcher as l\n"
        "l.unsafe = lambda device: 'not here (a test)'\n"
        "sys.argv = ['sweep.run', '-m', 'hydra.sweeper.n_trials=2', 'hydra.sweeper.n_jobs=2',\n"
        "            'hydra.sweeper.study_name=fb', 'train.epochs=2']\n"
        "runpy.run_module('sweep.run', run_name='__main__')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "hydra/launcher=fork: not here (a test); trials run in joblib's worker processes" in out
    assert "Joblib.Parallel(n_jobs=2" in out and "2 trial(s) at a time" in out
    df = pd.read_csv(tmp_path / "outputs" / "sweeps" / "fb" / "results.csv")
    assert list(df["status"]) == ["complete", "complete"]
    # each on its share of the cores, its files written, its row the study's value
    cores = len(os.sched_getaffinity(0))
    assert df["overrides"].str.contains(f"train.threads={max(1, cores // 2)}").all()
    assert all((Path(d) / "metrics.json").exists() for d in df["run_dir"])
    values = {t.number: t.value for t in _study(tmp_path, "fb").trials}
    assert dict(zip(df["trial"], df["objective"])) == values


def test_a_forkserver_child_finds_the_task_function_by_name():
    import sweep.run
    from sweep.search.launcher import by_name

    task = sweep.run.main.__wrapped__  # what Hydra hands the launcher: the undecorated function
    assert by_name(task) == ("sweep.run", "main", 1)
    with pytest.raises(TypeError, match="at a module's top level"):
        by_name(lambda cfg: None)


def test_a_forked_jobs_return_crosses_the_pipe_without_its_configs():
    """The fork launcher sends back what the sweep reads of a JobReturn (its result, status,
    overrides, the run directory) and not the job's and Hydra's whole configs (issue 33)."""
    import pickle

    from hydra.core.utils import JobReturn, JobStatus
    from omegaconf import OmegaConf

    from sweep.search.launcher import failed_return, lightened

    hydra_cfg = OmegaConf.create({"hydra": {"runtime": {"output_dir": "/s/trial_3"},
                                            "job": {"name": "run", "num": 3}}})  # fmt: skip
    ret = JobReturn(overrides=["l1_lambda=0.001"], cfg=OmegaConf.create({"seed": 0}),
                    hydra_cfg=hydra_cfg, working_dir="/s", task_name="run",
                    status=JobStatus.COMPLETED)  # fmt: skip
    ret.return_value = {"val_acc": 0.7}
    sent = pickle.loads(pickle.dumps(lightened(ret)))
    assert sent.cfg is None and sent.return_value == {"val_acc": 0.7}
    run_dir = {"hydra": {"runtime": {"output_dir": "/s/trial_3"}}}
    assert OmegaConf.to_container(sent.hydra_cfg) == run_dir
    assert sent.overrides == ["l1_lambda=0.001"] and sent.working_dir == "/s"
    assert sent.status == JobStatus.COMPLETED
    failed = lightened(failed_return(ValueError("bad"), ["x=1"]))
    assert failed.hydra_cfg is None and failed.status == JobStatus.FAILED
    with pytest.raises(ValueError, match="bad"):
        _ = failed.return_value
