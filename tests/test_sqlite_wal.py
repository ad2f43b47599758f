"""A sweep's SQLite storage commits without an fsync each (WAL, synchronous=NORMAL: issue 33),
and a killed process keeps every commit it made. Real SQLite files, a real killed process."""

from __future__ import annotations

import logging
import os
import sqlite3
import subprocess
import sys

import optuna

from sweep import _compat

# a process that commits a trial's row through the sweep's storage, then dies without closing
# anything (no checkpoint of the -wal file, no clean exit)
KILLED = """
import os, sys, optuna
from sweep import _compat
storage = _compat.get_storage(sys.argv[1])
study = optuna.create_study(study_name="s", storage=storage)
trial = study.ask()
with _compat.one_transaction(storage):
    trial.set_user_attr("row", {"val_acc": 0.7118})
    trial.set_user_attr("val_acc", 0.7118)
study.tell(trial, 0.7118)
os.kill(os.getpid(), 9)
"""


def _pragmas(db) -> tuple[str, int]:
    storage = _compat.get_storage(f"sqlite:///{db}")
    engine = _compat.rdb._RDB_BEHIND[storage].engine
    with engine.connect() as conn:
        mode = conn.exec_driver_sql("PRAGMA journal_mode").scalar()
        sync = conn.exec_driver_sql("PRAGMA synchronous").scalar()
    engine.dispose()
    return mode, sync


def test_a_sweeps_sqlite_file_is_in_wal_mode_and_a_killed_process_keeps_its_commits(tmp_path):
    db = tmp_path / "optuna.db"
    done = subprocess.run([sys.executable, "-c", KILLED, f"sqlite:///{db}"], timeout=120)
    assert done.returncode == -9
    assert (tmp_path / "optuna.db-wal").exists()  # the commits are there, not yet checkpointed
    # read by plain sqlite3, as optuna-dashboard or another tool would
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    [(value,)] = con.execute("SELECT value FROM trial_values").fetchall()
    con.close()
    assert value == 0.7118
    [t] = optuna.load_study(study_name="s", storage=f"sqlite:///{db}").trials
    assert t.state.name == "COMPLETE" and t.user_attrs["row"] == {"val_acc": 0.7118}
    assert _pragmas(db) == ("wal", 1)  # 1: NORMAL


def test_off_switch_and_a_network_file_system_keep_sqlites_defaults(tmp_path, monkeypatch, caplog):
    monkeypatch.setitem(_compat.SQLITE_WAL, "on", False)
    assert _pragmas(tmp_path / "off.db") == ("delete", 2)  # 2: FULL, SQLite's default
    monkeypatch.setitem(_compat.SQLITE_WAL, "on", True)
    monkeypatch.setattr(_compat.rdb, "file_system", lambda path: "nfs4")
    with caplog.at_level(logging.INFO, logger="sweep._compat.rdb"):
        assert _pragmas(tmp_path / "nfs.db") == ("delete", 2)
    assert any("is on nfs4: SQLite's default journal" in r.getMessage() for r in caplog.records)


def test_file_system_names_the_mount_holding_a_path(tmp_path):
    assert _compat.file_system("/proc/self") == "proc"
    assert _compat.file_system(str(tmp_path)) not in ("", "proc")


def test_a_finished_sweep_leaves_its_sqlite_file_whole(tmp_path):
    """A sweep process frees its teardown (`gc.freeze` at exit) and closes its storages'
    connections itself first (`close_all`): SQLite moves the write-ahead log into the file,
    and no -wal or -shm file is left beside it, as with a plain Python exit."""
    args = ["-m", "sweep.run", "-m", "hydra.sweeper.n_trials=2", "train.epochs=1"]
    done = subprocess.run([sys.executable, *args], cwd=tmp_path, timeout=300,
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    outputs = tmp_path / "outputs"
    assert sorted(p.name for p in outputs.glob("optuna.db*")) == ["optuna.db"]
    con = sqlite3.connect(outputs / "optuna.db")
    assert con.execute("PRAGMA journal_mode").fetchone() == ("wal",)  # it was in WAL mode
    assert con.execute("SELECT count(*) FROM trials WHERE state = 'COMPLETE'").fetchone() == (2,)
    con.close()


# at exit, after sweep.run's own handlers (registered later, so run earlier): frozen or not
FROZEN = """
import atexit, gc, runpy, sys
atexit.register(lambda: print("frozen objects:", gc.get_freeze_count() > 0))
sys.argv = ["sweep.run", "train.epochs=-1"]
runpy.run_module("sweep.run", run_name="__main__")
"""


def test_sweep_run_freezes_at_exit_unless_switched_off(tmp_path):
    """`python -m sweep.run` freezes what is alive at exit (a refused command here: quick),
    in a process without the test suite's own freeze (tests/harness/sitecustomize.py)."""
    path = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if "harness" not in p]
    for switch, said in (("1", "frozen objects: True"), ("0", "frozen objects: False")):
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(path), "L1SWEEP_FREEZE_AT_EXIT": switch}
        done = subprocess.run([sys.executable, "-c", FROZEN], cwd=tmp_path, env=env, timeout=120,
                              capture_output=True, text=True)  # fmt: skip
        assert done.returncode == 2 and "train.epochs must be an integer" in done.stdout
        assert done.stdout.strip().splitlines()[-1] == said
