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

# long sweeps: kill and Ctrl-C, storage outages, PostgreSQL and journal studies, resumes
pytestmark = pytest.mark.slow

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


@pytest.fixture(scope="module")
def one_trial(tmp_path_factory) -> Path:
    """A directory holding a finished 1-trial sweep of study `one` (its optuna.db, its sweep
    directory): the tests that refuse a second start in it work on copies (`started`)."""
    cwd = tmp_path_factory.mktemp("one")
    run_cli(cwd, "-m", "hydra.sweeper.n_trials=1", "hydra.sweeper.study_name=one", *FAST)
    return cwd


def started(one_trial: Path, tmp_path: Path) -> Path:
    """tmp_path holding a copy of the one-trial sweep, as if it had run there."""
    shutil.copytree(one_trial, tmp_path, dirs_exist_ok=True)
    return tmp_path


def test_rerun_continues_the_study_and_overwrites_nothing(tmp_path):
    args = ["-m", "hydra.sweeper.study_name=r", *FAST]
    first = run_cli(tmp_path, *args, "hydra.sweeper.n_trials=2")
    assert "study r" in first.stdout + first.stderr
    trial0 = tmp_path / "outputs" / "sweeps" / "r" / "trial_0" / "metrics.json"
    before = trial0.read_bytes()
    # hydra.sweeper.n_trials is the study's total: extending it means raising it
    second = run_cli(tmp_path, *args, "hydra.sweeper.n_trials=4")
    out = second.stdout + second.stderr
    assert "(2 trials so far)" in out and re.search(r"trial [23] \[4/4\]", out)
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


def test_a_named_study_refuses_another_configuration(tmp_path, one_trial):
    started(one_trial, tmp_path)
    csv = tmp_path / "outputs" / "sweeps" / "one" / "results.csv"
    before = csv.read_bytes()
    for other in (["train.epochs=2"], ["regularizer=l1", *FAST], ["objective=pareto", *FAST],
                  ["l1_lambda=tag(log, interval(1e-6, 1e-3))", *FAST]):  # fmt: skip
        proc = run_cli(
            tmp_path, "-m", "hydra.sweeper.n_trials=1", "hydra.sweeper.study_name=one", *other,
            check=False,
        )  # fmt: skip
        out = proc.stdout + proc.stderr
        assert proc.returncode == 2, out
        assert "was started with a different configuration" in out or "directions" in out
        assert "Traceback" not in out
    assert csv.read_bytes() == before
    assert len(study_of(tmp_path, "one").trials) == 1


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


def _trained(cwd: Path, name: str, number: int) -> bool:
    """Whether trial `number`'s job wrote its whole result (a later start records it)."""
    import json

    metrics = cwd / "outputs" / "sweeps" / name / f"trial_{number}" / "metrics.json"
    try:
        return "status" in json.loads(metrics.read_text())
    except (OSError, ValueError):
        return False


def _wait_rows(csv: Path, n: int, timeout: float = 120) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if csv.exists() and len(pd.read_csv(csv)) >= n:
            return
        time.sleep(0.05)
    raise AssertionError(f"{csv} never reached {n} rows")


# SIGKILL with two trials running (both may be lost), Ctrl-C with one (it is failed, the rest
# kept); Ctrl-C with two running is test_ctrl_c_ends_the_running_trials_at_once
@pytest.mark.parametrize(
    ("sig", "jobs"), [(signal.SIGKILL, 2), (signal.SIGINT, 1)], ids=["kill-2", "int-1"]
)
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
    if sig == signal.SIGINT:  # handled: results.csv rewritten on the way out
        assert_csv_agrees_with_study(df, study)
    else:  # a SIGKILL between a tell and its rewrite: every row as the study has it, no more
        complete = {t.number: t.value for t in study.trials if t.state.name == "COMPLETE"}
        rows = df[df["status"] == "complete"]
        assert dict(zip(rows["trial"], rows["objective"])).items() <= complete.items()
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
    # ... and a killed trial whose job had written its result is recorded from its files
    recorded += sum(t.state.name == "RUNNING" and _trained(tmp_path, name, t.number)
                    for t in study.trials)  # fmt: skip
    # start it again with a total of 2 more: nothing duplicated, every finished trial once
    run_cli(tmp_path, "-m", f"hydra.sweeper.n_trials={recorded + 2}",
            f"hydra.sweeper.study_name={name}", "train.epochs=30",
            "train.log_every=30")  # fmt: skip
    df2, study2 = pd.read_csv(csv), study_of(tmp_path, name)
    assert len(df2) == recorded + 2 and df2["trial"].is_unique
    assert set(df["trial"]) < set(df2["trial"])
    assert_csv_agrees_with_study(df2, study2)


# 'early': Ctrl-C as the second trial is launched, before joblib's call has started its worker
# processes (the call starts them after the interrupt; the sweep still ends them)
@pytest.mark.parametrize(
    ("launcher", "after"), [("fork", 2.0), ("joblib", 2.0), ("joblib", 0.0)],
    ids=["fork", "joblib", "joblib-early"],
)  # fmt: skip
def test_ctrl_c_ends_the_running_trials_at_once(tmp_path, launcher, after):
    name = f"cc{launcher}"
    proc = _start_sweep(tmp_path, name, 4, 2, 100_000, f"hydra/launcher={launcher}")
    try:
        end = time.time() + 120
        while time.time() < end and (tmp_path / f"{name}.log").read_text().count("#") < 2:
            time.sleep(0.02)  # both trials launched
        time.sleep(after)
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
    from sweep.search.study import ResultFiles

    study = optuna.create_study()
    running = study.ask()
    running.set_user_attr("row", {"trial": 0, "status": "complete", "objective": 0.9})
    csv = tmp_path / "results.csv"
    ResultFiles(csv).write(study)  # another process may hold a row a moment before its state
    assert len(pd.read_csv(csv)) == 0
    study.tell(running, 0.9)
    ResultFiles(csv).write(study)
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
def test_read_only_results_are_refused_and_left_intact(tmp_path, one_trial, target):
    args = ["-m", "hydra.sweeper.n_trials=1", "hydra.sweeper.study_name=one", *FAST]
    started(one_trial, tmp_path)
    sweep_dir = tmp_path / "outputs" / "sweeps" / "one"
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
    assert csv.read_bytes() == before and len(study_of(tmp_path, "one").trials) == 1


def _two_sweeps_at_once(cwd: Path, *storage_args: str) -> None:
    # n_trials is the study's total: the two processes share 6 trials
    cmd = [sys.executable, "-m", "sweep.run", "-m", *storage_args, "hydra.sweeper.n_trials=6",
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


class Postgres:
    """A throw-away PostgreSQL server: its URL, and stop/start for the tests that restart it."""

    def __init__(self, url: str, pg) -> None:
        self.url, self._pg = url, pg

    def stop(self) -> None:
        proc = self._pg("pg_ctl", "-m", "fast", "-w", "stop")
        assert proc.returncode == 0, proc.stderr

    def start(self) -> None:
        proc = self._pg("pg_ctl", "-w", "start")
        assert proc.returncode == 0, proc.stderr


@pytest.fixture(scope="module")
def postgres():
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
        if tool == "pg_ctl":  # the server's directory; to start it, its log and options
            server = ("-l", str(base / "log"), "-o",
                      f"-p {port} -k {base} -c listen_addresses=127.0.0.1")  # fmt: skip
            args = ("-D", str(db), *(server if "start" in args else ()), *args)
        return subprocess.run([*as_user, str(bindir / tool), *args], capture_output=True,
                              text=True, timeout=120)  # fmt: skip

    steps = [
        ("initdb", "-D", str(db), "-A", "trust", "-U", "l1sweep"),
        ("pg_ctl", "-w", "start"),
        ("createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "l1sweep", "sweeps"),
    ]  # fmt: skip
    for step in steps:
        proc = pg(*step)
        if proc.returncode != 0:
            _unavailable(f"could not start PostgreSQL ({step[0]}): {proc.stderr.strip()[:300]}")
    yield Postgres(f"postgresql+psycopg://l1sweep@127.0.0.1:{port}/sweeps", pg)
    pg("pg_ctl", "-m", "immediate", "stop")
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def postgres_url(postgres) -> str:
    return postgres.url


def test_two_processes_share_a_postgresql_study(tmp_path, postgres_url):
    _two_sweeps_at_once(tmp_path, f"hydra.sweeper.storage={postgres_url}")
    _check_shared(tmp_path, postgres_url)


def test_a_trials_attributes_on_postgresql_are_one_upsert_and_read_back(postgres_url):
    """On PostgreSQL too (sweep/_compat/rdb.py): the row and its figures in one multi-row
    upsert plus Optuna's own write of the last, a value written before replaced, and Optuna
    reads back what one-by-one writes would have left."""
    from test_storage_commits import _attr_writes

    from sweep import _compat
    from sweep.search.trials import figures

    row = {"trial": 0, "status": "complete", "val_acc": 0.7118, "sparsity": 0.5, "nnz": 9563}
    storage = _compat.get_storage(postgres_url)
    study = optuna.create_study(study_name=f"attrs-{time.time_ns()}", storage=storage)
    trial = study.ask()
    trial.set_user_attr("val_acc", "before")
    writes = _attr_writes(_compat.rdb._RDB_BEHIND[storage].engine)
    with _compat.one_transaction(storage):
        _compat.set_trial_user_attrs(trial, {**figures(row), "row": row})
    assert writes == ["INSERT", "INSERT"]
    [got] = optuna.load_study(study_name=study.study_name, storage=postgres_url).trials
    assert got.user_attrs == {"val_acc": 0.7118, "sparsity": 0.5, "nnz": 9563.0, "trial": 0.0,
                              "row": row}  # fmt: skip


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
    args = _total(args, 2)  # the study's total: one more trial
    proc = run_cli(tmp_path, *args, "hydra.sweeper.storage=${oc.env:L1SWEEP_STORAGE}", env=env)
    out = proc.stdout + proc.stderr
    assert "s3cret" not in out and "'hydra.sweeper.storage=${oc.env:L1SWEEP_STORAGE}'" in out
    assert _files_holding(tmp_path / "outputs", "s3cret") == ["sweeps/pw/trial_0/.hydra/hydra.yaml"]
    assert len(study_of(tmp_path, "pw", postgres_url).trials) == 2


# ---- a start that fails, two studies in one directory, failed jobs ------------------------


def _one_error_line(proc, code: int = 2) -> str:
    out = proc.stdout + proc.stderr
    assert proc.returncode == code, out
    assert "Traceback" not in out, out
    [line] = [ln for ln in out.splitlines() if "error:" in ln]
    return line


@pytest.mark.parametrize(
    "bad",
    [
        ["objective.metrics=[val_acc,sparsity]"],
        ["objective=pareto", "objective.direction=[maximize]"],
    ],
)
def test_a_failed_start_leaves_no_study_and_the_corrected_command_runs(tmp_path, bad):
    args = ["-m", "hydra.sweeper.n_trials=1", "hydra.sweeper.study_name=fix", *FAST]
    line = _one_error_line(run_cli(tmp_path, *args, *bad, check=False))
    assert "objective.metrics has 2 (val_acc, sparsity) but objective.direction has 1" in line
    assert not (tmp_path / "outputs" / "optuna.db").exists()  # checked before the storage
    corrected = [a for a in bad if "direction" not in a] + [
        "objective.direction=[maximize,maximize]"
    ]
    run_cli(tmp_path, *args, *corrected)
    study = study_of(tmp_path, "fix")
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MAXIMIZE"]
    assert [t.state.name for t in study.trials] == ["COMPLETE"]


def _total(args: list[str], n: int) -> list[str]:
    """`args` with hydra.sweeper.n_trials=n: the study's total (a resumed study runs the rest)."""
    return [a for a in args if not a.startswith("hydra.sweeper.n_trials=")] + [
        f"hydra.sweeper.n_trials={n}"
    ]


def test_a_second_study_is_refused_in_another_studys_directory(tmp_path):
    shared = ["hydra.sweep.dir=outputs/sweeps/fixed", "hydra.sweeper.n_trials=1", *FAST]
    run_cli(tmp_path, "-m", "hydra.sweeper.study_name=a", *shared)
    sweep_dir = tmp_path / "outputs" / "sweeps" / "fixed"
    before = {p: p.read_bytes() for p in sweep_dir.rglob("*") if p.is_file()}
    for other in (["hydra.sweeper.study_name=b"], []):  # named, and auto-named (l1sweep-<time>)
        line = _one_error_line(run_cli(tmp_path, "-m", *other, *shared, check=False))
        assert f"the sweep directory {Path('outputs/sweeps/fixed')} belongs to study 'a'" in line
        assert "choose another directory with hydra.sweep.dir=" in line
    # a study of the same name in another storage is another study
    journal = ["hydra.sweeper.study_name=a", "+hydra/sweeper/storage=journal"]
    _one_error_line(run_cli(tmp_path, "-m", *journal, *shared, check=False))
    assert {p: p.read_bytes() for p in sweep_dir.rglob("*") if p.is_file()} == before
    assert optuna.get_all_study_names(f"sqlite:///{tmp_path}/outputs/optuna.db") == ["a"]
    # the owner resumes there (n_trials is the study's total: one more trial)
    run_cli(tmp_path, "-m", "hydra.sweeper.study_name=a", *_total(shared, 2))
    df = pd.read_csv(sweep_dir / "results.csv")
    assert list(df["trial"]) == [0, 1]
    assert (sweep_dir / "trial_0" / "metrics.json").read_bytes() == before[
        sweep_dir / "trial_0" / "metrics.json"
    ]


def test_a_directory_from_before_owner_records_is_its_studys_only(tmp_path):
    shared = ["hydra.sweep.dir=outputs/sweeps/old", "hydra.sweeper.n_trials=1", *FAST]
    run_cli(tmp_path, "-m", "hydra.sweeper.study_name=a", *shared)
    sweep_dir = tmp_path / "outputs" / "sweeps" / "old"
    (sweep_dir / ".l1sweep-study").unlink()  # as a sweep of an earlier l1sweep left it
    line = _one_error_line(run_cli(tmp_path, "-m", "hydra.sweeper.study_name=b", *shared,
                                   check=False))  # fmt: skip
    assert "holds another sweep's results.csv or trial_* files" in line
    # refused once its study was made (only then are the directory's trials known): the
    # study it made is deleted again
    assert optuna.get_all_study_names(f"sqlite:///{tmp_path}/outputs/optuna.db") == ["a"]
    run_cli(tmp_path, "-m", "hydra.sweeper.study_name=a", *_total(shared, 2))
    assert '"study": "a"' in (sweep_dir / ".l1sweep-study").read_text()
    assert list(pd.read_csv(sweep_dir / "results.csv")["trial"]) == [0, 1]


def test_every_trial_failing_is_rows_with_their_error_and_a_non_zero_exit(tmp_path):
    proc = run_cli(tmp_path, "-m", "objective.metrics=[bogus]", "hydra.sweeper.n_trials=3",
                   "hydra.sweeper.max_failure_rate=1.0", "hydra.sweeper.study_name=allbad", *FAST,
                   check=False)  # fmt: skip
    line = _one_error_line(proc, code=1)
    assert "every trial of this sweep failed (3 of 3); the first: KeyError: 'bogus'" in line
    df = csv_of(tmp_path, "allbad")
    assert list(df["status"]) == ["failed"] * 3 and list(df["error"]) == ["KeyError: 'bogus'"] * 3
    assert [t.state.name for t in study_of(tmp_path, "allbad").trials] == ["FAIL"] * 3


def _killer_package(root: Path) -> None:
    """A user's model package whose model kills or ends its own process, in a trial's process
    only (the sweep builds the model once itself, to check it)."""
    pkg = root / "killer"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        "import multiprocessing, os, signal\n"
        "import torch.nn as nn\n\n"
        "def model(n_inputs, n_classes, how='kill', **unused):\n"
        "    if multiprocessing.parent_process() is not None:  # a forked trial\n"
        "        if how == 'kill':\n"
        "            os.kill(os.getpid(), signal.SIGKILL)\n"
        "        os._exit(3)\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(n_inputs, n_classes))\n"
    )


@pytest.mark.parametrize(
    "how,said",
    [("kill", "was killed by SIGKILL (out of memory?)"),
     ("exit", "exited with code 3 before returning its result")],
)  # fmt: skip
def test_a_trial_whose_process_dies_is_a_failed_row_that_says_how(tmp_path, how, said):
    _killer_package(tmp_path)
    model = ["allow_targets=[killer.*]", "model._target_=killer.model", f"+model.how={how}"]
    proc = run_cli(tmp_path, "-m", *model, "hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=1",
                   "hydra.sweeper.study_name=dies", *FAST, check=False,
                   env={"PYTHONPATH": f"{tmp_path}:{os.environ.get('PYTHONPATH', '')}"},
                   )  # fmt: skip
    line = _one_error_line(proc, code=1)
    assert said in line and "resume with: python -m sweep.run -m" in line
    assert ("out of memory" in line) == (how == "kill")
    df = csv_of(tmp_path, "dies")  # the first failure stops the sweep (max_failure_rate=0)
    assert list(df["status"]) == ["failed"] and said in df["error"][0]
    assert [t.state.name for t in study_of(tmp_path, "dies").trials] == ["FAIL"]


def test_a_glob_over_a_group_searches_its_options(tmp_path):
    run_cli(tmp_path, "-m", "optimizer=glob(*)", "hydra/sweeper/sampler=grid", "l1_lambda=1e-4",
            "hydra.sweeper.study_name=glob", *FAST)  # fmt: skip
    assert sorted(csv_of(tmp_path, "glob")["optimizer"]) == ["adam", "sgd"]


# ---- the storage failing mid-sweep ---------------------------------------------------------


def _sweep_until_trial(cwd: Path, n: int, *args: str) -> subprocess.Popen:
    """Start a 3-trial sweep (one trial at a time), and return once trial `n` has started."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "sweep.run", "-m", "hydra.sweeper.n_trials=3",
         "hydra.sweeper.n_jobs=1", "hydra.sweeper.study_name=st", *args],
        cwd=cwd, stdout=(cwd / "st.log").open("w"), stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONWARNINGS": "ignore"}, start_new_session=True,
    )  # fmt: skip
    started = cwd / "outputs" / "sweeps" / "st" / f"trial_{n}"
    end = time.time() + 120
    while not started.exists() and proc.poll() is None and time.time() < end:
        time.sleep(0.02)
    assert started.exists(), (cwd / "st.log").read_text()
    return proc


def _until_trained(cwd: Path, n: int, timeout: float = 300) -> None:
    """Wait until trial `n`'s job has written its metrics.json (its result, not yet told)."""
    done = cwd / "outputs" / "sweeps" / "st" / f"trial_{n}" / "metrics.json"
    end = time.time() + timeout
    while not done.exists() and time.time() < end:
        time.sleep(0.05)
    assert done.exists(), (cwd / "st.log").read_text()


def _locked(db: Path):
    """Another process's exclusive transaction on an SQLite file (as a backup or a dashboard
    writing to it would hold), until the returned connection rolls back."""
    import sqlite3

    con = sqlite3.connect(db, isolation_level=None)
    con.execute("BEGIN EXCLUSIVE")
    return con


# trials long enough that the lock is taken while trial 1 trains, before its result is told
SLOWER = ["train.epochs=10", "train.log_every=10"]


def test_a_storage_locked_for_a_while_is_waited_for(tmp_path):
    proc = _sweep_until_trial(tmp_path, 1, *SLOWER, "hydra.sweeper.storage_wait=60")
    con = _locked(tmp_path / "outputs" / "optuna.db")
    try:  # held from before trial 1's result to well after it: its telling waits on the lock
        _until_trained(tmp_path, 1)
        time.sleep(8)  # longer than SQLite's own wait (5 s)
    finally:
        con.execute("ROLLBACK")
    assert proc.wait(timeout=300) == 0
    out = (tmp_path / "st.log").read_text()
    assert re.search(r"storage: \w[\w ]* failed \(database is locked\); retry 1 in 0.5s", out), out
    df, study = csv_of(tmp_path, "st"), study_of(tmp_path, "st")
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3 and len(df) == 3
    assert_csv_agrees_with_study(df, study)


def test_a_storage_locked_for_good_stops_and_the_next_start_records_the_trial(tmp_path):
    import json

    proc = _sweep_until_trial(tmp_path, 1, *SLOWER, "hydra.sweeper.storage_wait=3")
    con = _locked(tmp_path / "outputs" / "optuna.db")
    try:
        code = proc.wait(timeout=300)
    finally:
        con.execute("ROLLBACK")
    out = (tmp_path / "st.log").read_text()
    assert code == 1 and "Traceback" not in out, out
    [line] = [ln for ln in out.splitlines() if "error:" in ln]
    assert (
        "kept failing for" in line and "(database is locked; hydra.sweeper.storage_wait=3)" in line
    )
    assert "resume with: python -m sweep.run -m" in line
    # trial 0 keeps its row; trial 1 trained and wrote its files, but is not told yet
    assert list(csv_of(tmp_path, "st")["trial"]) == [0]
    trial1 = tmp_path / "outputs" / "sweeps" / "st" / "trial_1"
    metrics = json.loads((trial1 / "metrics.json").read_text())
    assert [t.state.name for t in study_of(tmp_path, "st").trials] == ["COMPLETE", "RUNNING"]
    model = (trial1 / "model.pt").read_bytes()
    # the same total as the stopped sweep's: trial 1 recorded from its files, one more drawn
    again = run_cli(tmp_path, "-m", "hydra.sweeper.n_trials=3", "hydra.sweeper.n_jobs=1",
                    "hydra.sweeper.study_name=st", *SLOWER)  # fmt: skip
    left = r"trial 1 was left RUNNING \(its process \d+ is gone\) after its job had finished"
    assert re.search(left + ": its result is recorded from", again.stdout + again.stderr)
    study = study_of(tmp_path, "st")
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3
    assert study.trials[1].value == metrics["val_acc"]
    assert study.trials[2].params != study.trials[1].params  # a new draw, not a rerun
    assert (trial1 / "model.pt").read_bytes() == model  # not trained again
    df = csv_of(tmp_path, "st").set_index("trial")
    assert list(df.index) == [0, 1, 2] and df.loc[1, "val_acc"] == metrics["val_acc"]
    assert df.loc[1, "run_dir"] == str(trial1) and "l1_lambda=" in df.loc[1, "overrides"]
    assert_csv_agrees_with_study(df.reset_index(), study)


def test_a_postgresql_server_restarted_mid_sweep_is_waited_for(tmp_path, postgres):
    storage = f"hydra.sweeper.storage={postgres.url}"
    proc = _sweep_until_trial(tmp_path, 1, *SLOWER, storage,
                              "hydra.sweeper.storage_wait=120")  # fmt: skip
    try:  # down from before trial 1's result is told until after it is ready
        postgres.stop()
        _until_trained(tmp_path, 1)
        time.sleep(2)
    finally:
        postgres.start()
    assert proc.wait(timeout=300) == 0, (tmp_path / "st.log").read_text()
    out = (tmp_path / "st.log").read_text()
    assert re.search(r"storage: \w[\w ]* failed \(.+\); retry 1 in 0.5s", out), out
    study = study_of(tmp_path, "st", postgres.url)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3
    assert_csv_agrees_with_study(csv_of(tmp_path, "st"), study)
