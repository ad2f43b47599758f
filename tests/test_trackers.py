"""A tracker never costs a trial (sweep/task/loggers.py): an MLflow store that cannot be reached
is refused before trial 0 in one line; one that fails mid-sweep is a bounded wait and a warning;
a path or a study name with an apostrophe is no search filter's problem; a sweep resumed from
a moved directory finds its parent run.

Real MLflow: a local SQLite store, a real `mlflow server` on 127.0.0.1 stopped mid-sweep, an
unused port on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pandas as pd
import pytest

from conftest import run_cli

mlflow = pytest.importorskip("mlflow")

FAST = ["train.epochs=2", "train.log_every=1"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _runs(uri: str) -> pd.DataFrame:
    mlflow.set_tracking_uri(uri)
    return mlflow.search_runs(experiment_names=["l1sweep"])


def _one_error_line(proc: subprocess.CompletedProcess) -> str:
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "Traceback" not in out, out
    [line] = [ln for ln in out.splitlines() if "error:" in ln]
    return line


def test_an_unreachable_tracking_server_is_refused_before_trial_0_in_one_line(tmp_path):
    uri = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    for args in (["-m", "hydra.sweeper.n_trials=2", "hydra.sweeper.study_name=off"], []):
        start = time.perf_counter()
        proc = run_cli(tmp_path, *args, "logger=mlflow", f"logger.mlflow.tracking_uri={uri}",
                       *FAST, check=False)  # fmt: skip
        seconds = time.perf_counter() - start
        line = _one_error_line(proc)
        assert f"logger.mlflow.tracking_uri={uri} cannot be reached (" in line
        assert "Connection refused" in line and "logger=csv" in line
        assert seconds < 60  # the start-up alone; MLflow's own retries would take 4 min 16 s
    assert not list(tmp_path.rglob("metrics.json"))  # no trial, no run trained


def test_an_unwritable_store_folder_is_refused_before_trial_0(tmp_path):
    (tmp_path / "blocked").write_text("a file where the store's folder would be")
    uri = f"sqlite:///{tmp_path}/blocked/mlflow.db"
    proc = run_cli(tmp_path, "-m", "hydra.sweeper.n_trials=1", "logger=mlflow",
                   f"logger.mlflow.tracking_uri={uri}", *FAST, check=False)  # fmt: skip
    assert "cannot be reached (cannot make" in _one_error_line(proc)


@pytest.fixture
def mlflow_server(tmp_path):
    """A real `mlflow server` on a free 127.0.0.1 port, its store an SQLite file: yields (its
    URI, its store's URI, stop())."""
    exe = shutil.which("mlflow", path=os.path.dirname(sys.executable)) or shutil.which("mlflow")
    if exe is None:
        pytest.skip("the mlflow command is not installed")
    port, store = _free_port(), f"sqlite:///{tmp_path}/server.db"
    server = subprocess.Popen(
        [exe, "server", "--backend-store-uri", store, "--host", "127.0.0.1", "--port",
         str(port), "--workers", "1"],
        cwd=tmp_path, stdout=(tmp_path / "server.log").open("w"), stderr=subprocess.STDOUT,
        start_new_session=True,  # its artifacts (mlartifacts/) in tmp_path too
    )  # fmt: skip

    def stop() -> None:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)

    uri = f"http://127.0.0.1:{port}"
    try:
        end = time.time() + 120
        while True:
            try:
                direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
                direct.open(f"{uri}/health", timeout=2).close()  # no proxy: see test_dashboard
                break
            except OSError:
                assert time.time() < end and server.poll() is None, (
                    tmp_path / "server.log"
                ).read_text()[-2000:]
                time.sleep(0.5)
        yield uri, store, stop
    finally:
        stop()


@pytest.mark.slow
def test_a_tracking_server_that_dies_mid_sweep_costs_no_trial(tmp_path, mlflow_server):
    uri, store, stop = mlflow_server
    log = tmp_path / "sweep.log"
    sweep = subprocess.Popen(
        [sys.executable, "-m", "sweep.run", "-m", "hydra.sweeper.n_trials=3",
         "hydra.sweeper.n_jobs=1", "hydra.sweeper.study_name=dies", "logger=mlflow",
         f"logger.mlflow.tracking_uri={uri}", "train.epochs=20", "train.log_every=5"],
        cwd=tmp_path, stdout=log.open("w"), stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONWARNINGS": "ignore"}, start_new_session=True,
    )  # fmt: skip
    try:
        end = time.time() + 180
        while "trial 0 [" not in log.read_text() and time.time() < end:
            time.sleep(0.05)
        assert "trial 0 [" in log.read_text(), log.read_text()
        stop()  # trial 0 logged to it; the server is gone for trials 1 and 2
        killed = time.perf_counter()
        code = sweep.wait(timeout=300)
        after = time.perf_counter() - killed
    finally:
        if sweep.poll() is None:
            os.killpg(sweep.pid, signal.SIGKILL)
    out = log.read_text()
    assert code == 0 and "Traceback" not in out, out
    df = pd.read_csv(tmp_path / "outputs" / "sweeps" / "dies" / "results.csv")
    assert list(df["status"]) == ["complete"] * 3  # no trial failed, none lost
    warned = [ln for ln in out.splitlines() if "logger=mlflow: " in ln and "failed (" in ln]
    assert len(warned) == 2, out  # one warning per trial, not one per retry
    assert all("Connection refused" in ln and "goes on without MLflow" in ln for ln in warned)
    assert "Retrying" not in out
    # MLflow's own retries would hold each trial 4 min 16 s; bounded, two trials take seconds
    assert after < 90, after
    # what trial 0 logged is in the server's store
    runs = _runs(store)
    trials = runs[runs["tags.l1sweep.role"] == "trial"]
    assert list(trials["tags.l1sweep.trial"]) == ["0"] and list(trials["status"]) == ["FINISHED"]
    assert float(trials["metrics.val_acc"].iloc[0]) == df.loc[0, "val_acc"]


@pytest.mark.slow
def test_a_working_directory_and_a_study_name_with_an_apostrophe(tmp_path):
    cwd = tmp_path / "it's here"
    cwd.mkdir()
    uri = f"sqlite:///{cwd}/outputs/mlflow.db"  # the default store, relative to the cwd
    common = ["logger=mlflow", *FAST]
    sweep = run_cli(cwd, "-m", "hydra.sweeper.n_trials=2", "hydra.sweeper.study_name=\"o'brien\"",
                    *common)  # fmt: skip
    single = run_cli(cwd, *common, "hydra.run.dir=one")
    for proc in (sweep, single):
        out = proc.stdout + proc.stderr
        assert "logger=mlflow:" not in out and "Invalid clause" not in out, out
    runs = _runs(uri)
    parent = runs[runs["tags.l1sweep.role"] == "sweep"]
    assert list(parent["tags.mlflow.runName"]) == ["o'brien"]
    trials = runs[runs["tags.l1sweep.role"] == "trial"]
    assert sorted(trials["tags.l1sweep.trial"]) == ["0", "1"]
    assert (trials["tags.mlflow.parentRunId"] == parent["run_id"].iloc[0]).all()
    single_runs = runs[runs["tags.l1sweep.role"] == "run"]
    assert list(single_runs["tags.l1sweep.run_dir"]) == [str(cwd / "one")]
    assert (runs["status"] == "FINISHED").all()
    # the printed resume command runs as printed (the name quoted for Hydra): nothing left
    out = sweep.stdout + sweep.stderr
    [command] = re.findall(r"resume or extend with: (.+) \(hydra\.sweeper\.n_trials=", out)[-1:]
    again = run_cli(cwd, *shlex.split(command)[3:])
    assert "nothing to run" in again.stdout + again.stderr


@pytest.mark.slow
def test_a_sweep_resumed_from_a_moved_directory_finds_its_parent_run(tmp_path):
    uri = f"sqlite:///{tmp_path}/ml/mlflow.db"  # outside the project, which moves
    common = ["-m", "logger=mlflow", f"logger.mlflow.tracking_uri={uri}",
              "hydra.sweeper.study_name=moved", *FAST]  # fmt: skip
    (tmp_path / "a").mkdir()
    run_cli(tmp_path / "a", *common, "hydra.sweeper.n_trials=1")
    (tmp_path / "a").rename(tmp_path / "b")  # moved, or mounted elsewhere on another node
    run_cli(tmp_path / "b", *common, "hydra.sweeper.n_trials=2")
    runs = _runs(uri)
    parents = runs[runs["tags.l1sweep.role"] == "sweep"]
    assert len(parents) == 1 and list(parents["tags.mlflow.runName"]) == ["moved"]
    trials = runs[runs["tags.l1sweep.role"] == "trial"]
    assert sorted(trials["tags.l1sweep.trial"]) == ["0", "1"]
    assert (trials["tags.mlflow.parentRunId"] == parents["run_id"].iloc[0]).all()
    marker = json.loads((tmp_path / "b" / "outputs" / "sweeps" / "moved" / ".l1sweep-study")
                        .read_text())  # fmt: skip
    assert (trials["tags.l1sweep.key"] == marker["id"]).all()


def test_the_sweep_key_is_the_studys_not_the_paths(tmp_path):
    from sweep.search import study
    from sweep.task import loggers

    assert loggers.OWNER_FILE == study.OWNER_FILE
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    path_key, name = loggers.sweep_key(a)  # no owner record: the path
    assert name is None and path_key != loggers.sweep_key(b)[0]
    record = {"study": "s", "storage": "sqlite:///outputs/optuna.db"}
    (a / loggers.OWNER_FILE).write_text(json.dumps(record))  # a record from before ids
    old = loggers.sweep_key(a)
    a.rename(b)
    assert loggers.sweep_key(b) == old and old[1] == "s"
    (b / loggers.OWNER_FILE).write_text(json.dumps({**record, "id": "0123456789abcdef" * 2}))
    assert loggers.sweep_key(b) == ("0123456789abcdef" * 2, "s")
