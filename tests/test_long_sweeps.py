"""Sweeps that survive: resume, kill, divergence, bad input, parallel and shared studies.

Real processes against real storages (SQLite, a journal file, PostgreSQL): nothing mocked.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest

from conftest import run_cli, write_mnist_like

FAST = ["train.epochs=1", "train.log_every=1"]


def study_of(cwd: Path, name: str, storage: str | None = None) -> optuna.Study:
    return optuna.load_study(
        study_name=name, storage=storage or f"sqlite:///{cwd}/outputs/optuna.db"
    )


def csv_of(cwd: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(cwd / "outputs" / "sweeps" / name / "results.csv")


def assert_csv_agrees_with_study(df: pd.DataFrame, study: optuna.Study) -> None:
    complete = {t.number: t.value for t in study.trials if t.state.name == "COMPLETE"}
    rows = df[df["status"] == "complete"]
    assert rows["trial"].is_unique
    assert dict(zip(rows["trial"], rows["objective"])) == complete


def test_rerun_continues_the_study_and_overwrites_nothing(tmp_path):
    args = ["-m", "hydra.sweeper.n_trials=2", "hydra.sweeper.study_name=r", *FAST]
    first = run_cli(tmp_path, *args)
    assert "study r" in first.stdout + first.stderr
    trial0 = tmp_path / "outputs" / "sweeps" / "r" / "trial_0" / "metrics.json"
    before = trial0.read_bytes()
    second = run_cli(tmp_path, *args)
    out = second.stdout + second.stderr
    assert "(2 trials so far)" in out and re.search(r"trial [23] \[2/2\]", out)
    assert "resume or extend with: python -m sweep.run -m" in out
    df = csv_of(tmp_path, "r")
    assert list(df["trial"]) == [0, 1, 2, 3]
    assert trial0.read_bytes() == before
    assert df["run_dir"].is_unique
    study = study_of(tmp_path, "r")
    assert len(study.trials) == 4
    assert_csv_agrees_with_study(df, study)
    # the resumed sampler is not replaying the first draws
    assert df["l1_lambda"].is_unique


def test_each_invocation_is_a_new_study_by_default(tmp_path):
    run_cli(tmp_path, "-m", "hydra.sweeper.n_trials=1", *FAST)
    time.sleep(1.1)  # default names carry the second
    run_cli(tmp_path, "-m", "hydra.sweeper.n_trials=1", *FAST)
    names = optuna.get_all_study_names(f"sqlite:///{tmp_path}/outputs/optuna.db")
    assert len(names) == 2 and all(n.startswith("l1sweep-") for n in names)
    assert len(list((tmp_path / "outputs" / "sweeps").glob("*/results.csv"))) == 2


def test_a_named_study_refuses_another_configuration(tmp_path):
    run_cli(tmp_path, "-m", "hydra.sweeper.n_trials=1", "hydra.sweeper.study_name=c", *FAST)
    csv = tmp_path / "outputs" / "sweeps" / "c" / "results.csv"
    before = csv.read_bytes()
    for other in (["train.epochs=2"], ["regularizer=l1", *FAST], ["objective=pareto", *FAST],
                  ["l1_lambda=tag(log, interval(1e-6, 1e-3))", *FAST]):  # fmt: skip
        proc = run_cli(
            tmp_path, "-m", "hydra.sweeper.n_trials=1", "hydra.sweeper.study_name=c", *other,
            check=False,
        )  # fmt: skip
        out = proc.stdout + proc.stderr
        assert proc.returncode == 2, out
        assert "was started with a different configuration" in out or "directions" in out
        assert "Traceback" not in out
    assert csv.read_bytes() == before
    assert len(study_of(tmp_path, "c").trials) == 1


def _start_sweep(
    cwd: Path, name: str, n: int = 200, jobs: int = 1, epochs: int = 30, *extra: str
) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "sweep.run", "-m", f"hydra.sweeper.n_trials={n}",
         f"hydra.sweeper.study_name={name}", f"train.epochs={epochs}",
         f"train.log_every={epochs}", f"hydra.sweeper.n_jobs={jobs}", *extra],
        cwd=cwd, stdout=(cwd / f"{name}.log").open("w"), stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONWARNINGS": "ignore"}, start_new_session=True,
        # Ctrl-C as a terminal delivers it: a shell's background job (`cmd &`, as some CI
        # runners start pytest) inherits SIGINT ignored, and Python then never raises
        # KeyboardInterrupt for it
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip


def _wait_rows(csv: Path, n: int, timeout: float = 120) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if csv.exists() and len(pd.read_csv(csv)) >= n:
            return
        time.sleep(0.05)
    raise AssertionError(f"{csv} never reached {n} rows")


@pytest.mark.parametrize("jobs", [1, 2])
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_killed_sweep_loses_at_most_the_running_trials(tmp_path, sig, jobs):
    name = f"k{sig.value}"
    csv = tmp_path / "outputs" / "sweeps" / name / "results.csv"
    proc = _start_sweep(tmp_path, name, jobs=jobs)
    try:
        _wait_rows(csv, 3)
        os.killpg(proc.pid, sig)
        proc.wait(timeout=60)
    finally:  # a sweep that outlives a failed test would slow every test after it
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    df = pd.read_csv(csv)  # parses: never half-written
    study = study_of(tmp_path, name)
    assert_csv_agrees_with_study(df, study)
    states = [t.state.name for t in study.trials]
    assert states.count("RUNNING") <= (jobs if sig == signal.SIGKILL else 0)
    if sig == signal.SIGINT:  # one line, and the command that goes on
        out = (tmp_path / f"{name}.log").read_text()
        assert proc.returncode == 130 and "Traceback" not in out, out[-2000:]
        assert "interrupted: the trials that were running are failed; resume with: " in out
    lost = len(study.trials) - len(df)
    assert lost <= jobs, states
    # a trial told just before the kill has its row in the study; the next start writes it
    recorded = sum(t.state.is_finished() and t.user_attrs.get("row") is not None
                   for t in study.trials)  # fmt: skip
    # start it again: more trials, nothing duplicated, every finished trial once
    run_cli(tmp_path, "-m", "hydra.sweeper.n_trials=2", f"hydra.sweeper.study_name={name}",
            "train.epochs=30", "train.log_every=30")  # fmt: skip
    df2, study2 = pd.read_csv(csv), study_of(tmp_path, name)
    assert len(df2) == recorded + 2 and df2["trial"].is_unique
    assert set(df["trial"]) < set(df2["trial"])
    assert_csv_agrees_with_study(df2, study2)


@pytest.mark.parametrize("launcher", ["fork", "joblib"])
def test_ctrl_c_ends_the_running_trials_at_once(tmp_path, launcher):
    name = f"cc{launcher}"
    proc = _start_sweep(tmp_path, name, 4, 2, 100_000, f"hydra/launcher={launcher}")
    try:
        end = time.time() + 120
        while time.time() < end and (tmp_path / f"{name}.log").read_text().count("#") < 2:
            time.sleep(0.1)  # both trials launched
        time.sleep(2)
        os.killpg(proc.pid, signal.SIGINT)
        start = time.time()
        proc.wait(timeout=60)
        assert time.time() - start < 15  # not the trials' end: they would train for minutes
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130
    assert [t.state.name for t in study_of(tmp_path, name).trials] == ["FAIL", "FAIL"]


def test_a_diverged_trial_is_recorded_and_the_sweep_goes_on(tmp_path):
    run_cli(
        tmp_path, "-m", "hydra/sweeper/sampler=grid", "optimizer.lr=choice(1e9,0.01)",
        "l1_lambda=1e-4", "regularizer=none", "hydra.sweeper.study_name=nan", "train.epochs=3",
    )  # fmt: skip
    df = csv_of(tmp_path, "nan").set_index("trial")
    assert sorted(df["status"]) == ["complete", "diverged"]
    bad = df[df["status"] == "diverged"].iloc[0]
    assert "optimizer.lr=1000000000.0" in bad["overrides"] and pd.isna(bad["val_acc"])
    states = sorted(t.state.name for t in study_of(tmp_path, "nan").trials)
    assert states == ["COMPLETE", "FAIL"]


def test_a_rerun_grid_study_runs_only_the_points_it_has_not_run(tmp_path):
    grid = ["-m", "hydra/sweeper/sampler=grid", "l1_lambda=choice(1e-5,1e-4,1e-3)",
            "hydra.sweeper.study_name=g", *FAST]  # fmt: skip
    run_cli(tmp_path, *grid, "hydra.sweeper.n_trials=1")
    # neither logging nor the MLP step's implementation is the configuration
    second = run_cli(tmp_path, *grid, "train.log_every=2", "train.fast=false")
    assert "grid: 2 of its points not yet run" in second.stdout + second.stderr
    third = run_cli(tmp_path, *grid)
    assert "grid: 0 of its points not yet run" in third.stdout + third.stderr
    df = csv_of(tmp_path, "g")
    assert sorted(df["l1_lambda"]) == [1e-5, 1e-4, 1e-3] and list(df["trial"]) == [0, 1, 2]
    assert len(study_of(tmp_path, "g").trials) == 3


def test_the_csv_holds_only_trials_the_study_has_finished(tmp_path):
    from sweep.study import write_csv

    study = optuna.create_study()
    running = study.ask()
    running.set_user_attr("row", {"trial": 0, "status": "complete", "objective": 0.9})
    csv = tmp_path / "results.csv"
    write_csv(study, csv)  # another process may hold a row a moment before its state
    assert len(pd.read_csv(csv)) == 0
    study.tell(running, 0.9)
    write_csv(study, csv)
    assert pd.read_csv(csv).to_dict("records") == [
        {"trial": 0, "status": "complete", "objective": 0.9}
    ]


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_programming_error_stops_the_sweep_with_its_traceback(tmp_path, jobs):
    proc = run_cli(
        tmp_path, "-m", "objective.metrics=[bogus]", "hydra.sweeper.study_name=bug", *FAST,
        f"hydra.sweeper.n_jobs={jobs}", check=False,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Traceback" in out and "KeyError: 'bogus'" in out
    # no trial starts after the first failure; those already running are recorded
    df, trials = csv_of(tmp_path, "bug"), study_of(tmp_path, "bug").trials
    assert set(df["status"]) == {"failed"} and len(df) == len(trials) <= jobs


@pytest.mark.parametrize("target", ["csv", "dir"])
def test_read_only_results_are_refused_and_left_intact(tmp_path, target):
    args = ["-m", "hydra.sweeper.n_trials=1", "hydra.sweeper.study_name=ro", *FAST]
    run_cli(tmp_path, *args)
    sweep_dir = tmp_path / "outputs" / "sweeps" / "ro"
    csv = sweep_dir / "results.csv"
    before = csv.read_bytes()
    path = csv if target == "csv" else sweep_dir
    path.chmod(0o444 if target == "csv" else 0o555)
    try:
        proc = run_cli(tmp_path, *args, check=False)
    finally:
        path.chmod(0o644 if target == "csv" else 0o755)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "read-only" in out and "Traceback" not in out
    assert csv.read_bytes() == before and len(study_of(tmp_path, "ro").trials) == 1


@pytest.mark.parametrize("launcher", ["fork", "joblib", "local"])
def test_parallel_local_workers(tmp_path, launcher):
    run_cli(
        tmp_path, "-m", f"hydra/launcher={launcher}", "hydra.sweeper.n_jobs=2",
        "hydra.sweeper.n_trials=4", "hydra.sweeper.study_name=par", *FAST,
    )  # fmt: skip
    df = csv_of(tmp_path, "par")
    assert sorted(df["trial"]) == [0, 1, 2, 3] and (df["status"] == "complete").all()
    cores = len(os.sched_getaffinity(0))
    assert df["overrides"].str.contains(f"train.threads={max(1, cores // 2)}").all()
    assert_csv_agrees_with_study(df, study_of(tmp_path, "par"))
    for run_dir in df["run_dir"]:
        assert (Path(run_dir) / "metrics.json").exists()


def _two_sweeps_at_once(cwd: Path, *storage_args: str) -> None:
    cmd = [sys.executable, "-m", "sweep.run", "-m", *storage_args, "hydra.sweeper.n_trials=3",
           "hydra.sweeper.study_name=shared", *FAST]  # fmt: skip
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    procs = [subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for _ in range(2)]  # fmt: skip
    for p in procs:
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0, out


def _check_shared(cwd: Path, storage: str) -> None:
    df = csv_of(cwd, "shared")
    study = study_of(cwd, "shared", storage)
    assert len(study.trials) == 6 and sorted(df["trial"]) == list(range(6))
    assert_csv_agrees_with_study(df, study)
    assert df["l1_lambda"].is_unique  # started at the same instant, yet different draws


def test_two_processes_share_a_journal_study(tmp_path):
    _two_sweeps_at_once(tmp_path, "+hydra/sweeper/storage=journal")
    journal = tmp_path / "outputs" / "optuna.journal"
    backend = optuna.storages.journal.JournalFileBackend(str(journal))
    _check_shared(tmp_path, optuna.storages.JournalStorage(backend))


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):  # CI installs the server: there, not starting it is a failure
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def postgres_url():
    """A throw-away PostgreSQL server on a free loopback port (Debian's postgresql package)."""
    pg_ctl = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if not pg_ctl:
        _unavailable("PostgreSQL server not installed (apt-get install postgresql)")
    bindir = Path(pg_ctl[-1]).parent
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        if not shutil.which("runuser"):
            _unavailable("running as root without runuser: cannot start PostgreSQL")
        as_user = ["runuser", "-u", "postgres", "--"]
    base = Path(tempfile.mkdtemp(prefix="l1sweep-pg-"))
    base.chmod(0o777)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    db = base / "db"

    def pg(tool: str, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*as_user, str(bindir / tool), *args], capture_output=True,
                              text=True, timeout=120)  # fmt: skip

    steps = [
        ("initdb", "-D", str(db), "-A", "trust", "-U", "l1sweep"),
        ("pg_ctl", "-D", str(db), "-w", "-l", str(base / "log"), "-o",
         f"-p {port} -k {base} -c listen_addresses=127.0.0.1", "start"),
        ("createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "l1sweep", "sweeps"),
    ]  # fmt: skip
    for step in steps:
        proc = pg(*step)
        if proc.returncode != 0:
            _unavailable(f"could not start PostgreSQL ({step[0]}): {proc.stderr.strip()[:300]}")
    yield f"postgresql+psycopg://l1sweep@127.0.0.1:{port}/sweeps"
    pg("pg_ctl", "-D", str(db), "-m", "immediate", "stop")
    shutil.rmtree(base, ignore_errors=True)


def test_two_processes_share_a_postgresql_study(tmp_path, postgres_url):
    _two_sweeps_at_once(tmp_path, f"hydra.sweeper.storage={postgres_url}")
    _check_shared(tmp_path, postgres_url)


def test_corrupt_idx_files_stop_the_sweep_with_one_line(tmp_path):
    raw = tmp_path / "data" / "MNIST" / "raw"
    write_mnist_like(raw, n_train=100, n_test=50)
    labels = raw / "train-labels-idx1-ubyte"
    labels.write_bytes(labels.read_bytes()[:60])  # truncated
    proc = run_cli(tmp_path, "-m", "data=mnist", "hydra.sweeper.study_name=idx", *FAST, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "truncated or corrupt" in out and str(raw) in out
    assert "Traceback" not in out and "trial 0" not in out


def test_a_storage_password_is_masked_in_the_error_line(tmp_path):
    url = "postgresql+psycopg://alice:s3cret@127.0.0.1:9/sweeps"
    proc = run_cli(tmp_path, "-m", f"hydra.sweeper.storage={url}", *FAST, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "Traceback" not in out, out
    assert (
        "cannot open the Optuna storage 'postgresql+psycopg://alice:***@127.0.0.1:9/sweeps'" in out
    )
    assert "s3cret" not in out


def _files_holding(root: Path, secret: str) -> list[str]:
    return sorted(
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file() and secret.encode() in p.read_bytes()  # model.pt and the lock too
    )


def test_a_storage_password_stays_out_of_logs_and_files(tmp_path, postgres_url):
    # The test server trusts any password: the URL carries one only to see where it goes.
    url = postgres_url.replace("l1sweep@", "l1sweep:s3cret@")
    args = ["-m", "hydra.sweeper.n_trials=1", "hydra.sweeper.study_name=pw", *FAST]
    proc = run_cli(tmp_path, *args, f"hydra.sweeper.storage={url}")
    out = proc.stdout + proc.stderr
    assert "s3cret" not in out and "l1sweep:***@" in out  # start line, resume command, end line
    assert "resume or extend with:" in out
    # Hydra's own record of each job's overrides (.hydra/) keeps them as typed ...
    assert _files_holding(tmp_path / "outputs", "s3cret") == ["sweeps/pw/trial_0/.hydra/hydra.yaml"]
    # ... so the documented way passes the URL in an environment variable: no file, no line
    env = {"L1SWEEP_STORAGE": url}
    proc = run_cli(tmp_path, *args, "hydra.sweeper.storage=${oc.env:L1SWEEP_STORAGE}", env=env)
    out = proc.stdout + proc.stderr
    assert "s3cret" not in out and "'hydra.sweeper.storage=${oc.env:L1SWEEP_STORAGE}'" in out
    assert _files_holding(tmp_path / "outputs", "s3cret") == ["sweeps/pw/trial_0/.hydra/hydra.yaml"]
    assert len(study_of(tmp_path, "pw", postgres_url).trials) == 2
