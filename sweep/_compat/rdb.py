"""Optuna's RDB storage as l1sweep drives it: the storage a URL names, SQLite in WAL mode,
several writes in one transaction, a trial's attributes in one statement, the connections
closed at exit; each coupling to Optuna's or SQLAlchemy's surface that Optuna does not document
for users, with its why, its switch and its fence (`check()` in sweep/_compat/__init__.py runs
the three `_check_*` at the end).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import sqlite3
import threading
import weakref
from collections.abc import Iterator
from typing import Any


# --- Optuna's storage from a URL ---------------------------------------------------------------
# `optuna.storages.get_storage` turns a URL into the storage object a Study holds (one engine
# for the study list, the study and the lookups by trial number that a Study lacks). Optuna
# documents it "only for internal usage"; its public callers (create_study, load_study) make
# their own storage and keep it inside the Study.
def get_storage(storage: Any) -> Any:
    """The Optuna storage object of a URL, a storage object (returned as it is) or None (an
    in-memory storage). An RDB storage (a database URL, or an RDBStorage) is remembered, so that
    `one_transaction` can reach it behind Optuna's cache."""
    import optuna

    rdb_class = optuna.storages.RDBStorage
    if isinstance(storage, str) and not storage.startswith("redis"):  # as get_storage does
        storage = rdb_class(storage)
    held = optuna.storages.get_storage(storage)
    if isinstance(storage, rdb_class):
        _RDB_BEHIND[held] = storage
        sqlite_wal(storage)
        with _ENGINES_LOCK:
            _ENGINES.add(storage.engine)
    return held


_ENGINES: Any = weakref.WeakSet()  # the RDB storages' engines this process opened
_ENGINES_LOCK = threading.Lock()  # another thread may open one while close_all reads them


def close_all() -> None:
    """Close every remembered RDB storage's pooled connections (at exit): SQLite then moves
    its write-ahead log into the database file and removes the -wal and -shm files beside it,
    a PostgreSQL server sees the sessions end. Python's own teardown would close them only
    where its last garbage collections reach them (sweep/run.py freezes those)."""
    with _ENGINES_LOCK:
        engines = list(_ENGINES)
    for engine in engines:
        with contextlib.suppress(Exception):  # at exit: nothing left to report it to
            engine.dispose()


atexit.register(close_all)  # a forked job leaves by os._exit: only the sweep process runs it


# --- SQLite: commits without an fsync each ----------------------------------------------------
# An SQLite commit in its default journal mode (a rollback journal, synchronous=FULL) is two
# fsyncs of the disk: about 20 ms on this project's machine, so a trial's 3 commits were ~60 ms
# (benchmarks/trial_cost.py). In write-ahead-log mode with synchronous=NORMAL (SQLite's own
# advice for WAL: https://www.sqlite.org/pragma.html#pragma_synchronous) a commit is a write
# to the -wal file and no fsync: a process killed at any point keeps every commit it made (the
# OS holds the written pages); only a crash of the OS or a power cut may lose the last
# commits, never the database's consistency (https://www.sqlite.org/wal.html). WAL is not
# for a database on a network file system (its readers share memory), so a file on one keeps
# SQLite's default. The pragmas are set on each new connection through SQLAlchemy's public
# event API ("connect"); the engine is RDBStorage's `engine` (see one_transaction). The file
# stays in WAL mode (SQLite records it in the file; any SQLite since 3.7.0 reads it, the
# -wal and -shm files beside it come and go). Fence: a connection that does not end up in
# WAL mode keeps SQLite's defaults, said in one log line. L1SWEEP_SQLITE_WAL=0 turns it off.
SQLITE_WAL = {"on": os.environ.get("L1SWEEP_SQLITE_WAL", "1") != "0"}
NETWORK_FILE_SYSTEMS = (
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "lustre", "gpfs", "beegfs", "ceph", "fuse.sshfs",
    "9p", "afs", "glusterfs", "fuse.glusterfs",
)  # fmt: skip
_said: set[str] = set()


def _say_once(line: str) -> None:
    if line not in _said:
        _said.add(line)
        logging.getLogger(__name__).info(line)


def file_system(path: str) -> str:
    """The type of the file system (/proc/mounts' third field) holding `path`; '' where
    /proc/mounts cannot be read (not Linux)."""
    real, best, kind = os.path.realpath(path), "", ""
    try:
        with open("/proc/mounts") as mounts:
            for line in mounts:
                fields = line.split()
                if len(fields) < 3:
                    continue
                point = fields[1].replace("\\040", " ")
                inside = real == point or real.startswith(point.rstrip("/") + "/")
                if inside and len(point) > len(best):
                    best, kind = point, fields[2]
    except OSError:
        return ""
    return kind


def sqlite_wal(rdb: Any) -> bool:
    """Put an RDBStorage's SQLite file in WAL mode with synchronous=NORMAL, on every
    connection its engine opens from now on (those it holds are closed). Returns whether it
    did: not for another database, an in-memory one, a file on a network file system
    (NETWORK_FILE_SYSTEMS), or with L1SWEEP_SQLITE_WAL=0."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    engine = getattr(rdb, "engine", None)
    if not SQLITE_WAL["on"] or not isinstance(engine, Engine):
        return False
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        return False
    kind = file_system(os.path.dirname(os.path.abspath(database)))
    if kind in NETWORK_FILE_SYSTEMS:
        _say_once(f"l1sweep: {database} is on {kind}: SQLite's default journal (WAL needs a "
                  "local file system)")  # fmt: skip
        return False

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            [mode] = cursor.execute("PRAGMA journal_mode=WAL").fetchone()
            if str(mode).lower() == "wal":
                cursor.execute("PRAGMA synchronous=NORMAL")
            else:
                _say_once(f"l1sweep: {database} stays in journal mode {mode} (not WAL): "
                          "each commit waits for the disk")  # fmt: skip
        except Exception as e:  # locked by another process meanwhile: its next connection
            _say_once(f"l1sweep: {database}: WAL not set ({e})")
        finally:
            cursor.close()

    event.listen(engine, "connect", on_connect)
    engine.dispose()  # its pooled connections were opened without the pragmas
    return True


# --- Optuna's RDB storage: several writes in one transaction ------------------------------------
# RDBStorage commits every write on its own: set_user_attr, report, suggest, each a transaction,
# each on SQLite an fsync of the file (about 18 ms on this project's machine). A finished trial's
# row and the ~30 figures the dashboard sorts by were ~31 commits, more than a short trial's
# training. Optuna has no public write of several attributes at once. Each RDBStorage call runs
# in the session its `scoped_session` registry holds for the thread, and commits and closes it
# (optuna/storages/_rdb/storage.py, `_create_scoped_session`). `one_transaction` puts there, for
# this thread only, a Session joined to one connection's transaction in SQLAlchemy's
# "rollback_only" mode (SQLAlchemy's documented way to join a Session into an external
# transaction: its commits are not passed on, its rollbacks are): the calls inside are one
# transaction, committed once at the end, or none of them on an error. RDBStorage's `engine` and
# `scoped_session` carry no underscore but its docs say they are not for users: they are used
# here only. Fence: the engine's COMMITs are counted, and where a block made more than one (an
# Optuna whose calls no longer use the registry's session), batching turns itself off with one
# log line (only this thread's COMMITs are counted: the heartbeat thread writes meanwhile);
# `check()` runs a block on a scratch database.
_RDB_BEHIND: Any = weakref.WeakKeyDictionary()  # the storage a Study holds -> its RDBStorage
# the switch: L1SWEEP_BATCH_WRITES=0 turns it off (benchmarks/trial_cost.py's "before")
BATCH_WRITES = {"on": os.environ.get("L1SWEEP_BATCH_WRITES", "1") != "0", "why_off": ""}
_inside = threading.local()  # .on: this thread is in a block; .commits: COMMITs it made there
_counted: Any = weakref.WeakSet()  # engines whose COMMITs are counted


def _count_commits(engine: Any) -> None:
    from sqlalchemy import event

    if engine not in _counted:
        _counted.add(engine)

        def counted(_conn: Any) -> None:
            if getattr(_inside, "on", False):
                _inside.commits += 1

        event.listen(engine, "commit", counted)


def batch_off(why: str) -> None:
    """Turn `one_transaction` off for this process, saying why once."""
    if BATCH_WRITES["on"]:
        BATCH_WRITES.update(on=False, why_off=why)
        logging.getLogger(__name__).warning(
            f"l1sweep: each storage write is its own transaction from now on ({why})"
        )


@contextlib.contextmanager
def one_transaction(storage: Any) -> Iterator[bool]:
    """Run the Optuna writes of this thread inside the block against `storage` (the storage a
    Study or Trial holds) as one database transaction: committed once when the block ends,
    rolled back whole if it raises. Yields whether it batches: not for a storage other than
    RDBStorage (journal, in-memory: their writes are no commits), inside another block, or once
    batching is off (`BATCH_WRITES`); the writes then commit one by one, as Optuna makes them."""
    from sqlalchemy.engine import Engine
    from sqlalchemy.orm import Session, scoped_session

    rdb = _RDB_BEHIND.get(storage) if BATCH_WRITES["on"] else None
    if rdb is None or getattr(_inside, "on", False):
        yield False
        return
    engine, scoped = getattr(rdb, "engine", None), getattr(rdb, "scoped_session", None)
    if not (isinstance(engine, Engine) and isinstance(scoped, scoped_session)):
        batch_off("optuna's RDBStorage no longer has an engine and a scoped_session")
        yield False
        return
    _count_commits(engine)
    _inside.on, _inside.commits = True, 0
    try:
        with engine.connect() as conn, conn.begin():
            session = Session(bind=conn, join_transaction_mode="rollback_only")
            scoped.registry.set(session)  # this thread's only
            try:
                yield True
            finally:
                scoped.remove()  # closes it; the thread's next call makes its own session
    finally:
        _inside.on = False
    if _inside.commits > 1:
        batch_off(f"a block made {_inside.commits} commits: optuna changed")


# --- Optuna's RDB storage: a trial's attributes in one statement ------------------------------
# Inside one transaction, RDBStorage.set_trial_user_attr is still an ORM lookup of the trial and
# an upsert for each attribute, about 1 ms each on this project's machine: a finished trial's row
# and its figures (28 on a digits trial) were 29 ms of a 1-epoch digits trial's 0.24 s (issue 33,
# benchmarks/trial_cost.py). Optuna has no write of several attributes. `set_trial_user_attrs`
# writes all but the last in one statement, a multi-row INSERT ... ON CONFLICT (trial_id, key) DO
# UPDATE, the upsert Optuna makes for one (SQLite 3.24 and later, PostgreSQL; another database is
# left to Optuna), into the storage's `trial_user_attributes` table (its columns and unique key
# read from the database by SQLAlchemy's reflection, not from Optuna's private models; each value
# JSON as Optuna stores it; the trial's row id from `Trial._trial_id`, which the public lookups by
# study name and number would take two queries to learn), and the last through Optuna's own
# `set_user_attr`, which checks that the trial may still be written: inside `one_transaction`, so
# an error leaves none of them. Fence: a table whose columns are not Optuna's four
# (trial_user_attribute_id, trial_id, key, value_json) or without its unique (trial_id, key), or a
# Trial without `_trial_id`, turns it off with one log line, the attributes then written one by
# one; `check()` writes a scratch trial's 30 attributes and reads them back through Optuna.
# L1SWEEP_BULK_ATTRS=0 turns it off. The live Trial object's own copy (`trial.user_attrs`) lacks
# those written so: the sweep reads its trials from the storage.
BULK_ATTRS = {"on": os.environ.get("L1SWEEP_BULK_ATTRS", "1") != "0", "why_off": ""}
ATTR_COLUMNS = {"trial_user_attribute_id", "trial_id", "key", "value_json"}
_attr_tables: Any = weakref.WeakKeyDictionary()  # engine -> its trial_user_attributes Table


def bulk_off(why: str) -> None:
    """Turn `set_trial_user_attrs`'s one statement off for this process, saying why once."""
    if BULK_ATTRS["on"]:
        BULK_ATTRS.update(on=False, why_off=why)
        logging.getLogger(__name__).warning(
            f"l1sweep: a trial's attributes are written one by one from now on ({why})"
        )


def set_trial_user_attrs(trial: Any, attrs: dict[str, Any]) -> None:
    """`trial.set_user_attr(key, value)` for each of `attrs` (JSON-serializable values); on an
    RDB storage in one transaction, all but the last in one statement (see above), so an
    error leaves none of them written. Raises what Optuna's `set_user_attr` raises (a finished
    trial: RuntimeError; a value JSON cannot hold: TypeError) or, from the one statement,
    SQLAlchemy's error (a lost connection: OperationalError, which the sweep retries)."""
    items = list(attrs.items())
    with one_transaction(trial.storage):
        rdb = _RDB_BEHIND.get(trial.storage)
        inside = getattr(_inside, "on", False)  # this block, or the caller's
        if BULK_ATTRS["on"] and rdb is not None and inside and len(items) > 1:
            if _upsert_attrs(rdb, trial, items[:-1]):
                items = items[-1:]
        for key, value in items:
            trial.set_user_attr(key, value)


def _attr_table(rdb: Any) -> Any:
    """The storage's trial_user_attributes Table (reflected once an engine), or False where it
    is not the one `_upsert_attrs` was written for (said once, by `bulk_off`)."""
    import sqlalchemy as sa

    table = _attr_tables.get(rdb.engine)
    if table is not None:
        return table
    table, why = False, ""
    dialect = rdb.engine.dialect.name
    if dialect not in ("sqlite", "postgresql") or (
        dialect == "sqlite" and sqlite3.sqlite_version_info < (3, 24, 0)
    ):
        why = f"no multi-row upsert written for {dialect} {sqlite3.sqlite_version}"
    else:
        conn = rdb.scoped_session().connection()
        try:
            table = sa.Table("trial_user_attributes", sa.MetaData(), autoload_with=conn)
            keys = [set(u["column_names"]) for u in sa.inspect(conn).get_unique_constraints(
                "trial_user_attributes")]  # fmt: skip
        except sa.exc.NoSuchTableError:
            table, keys = False, []
        columns = {c.name for c in table.columns} if table is not False else set()
        if columns != ATTR_COLUMNS or {"trial_id", "key"} not in keys:
            table = False
            why = f"optuna's trial_user_attributes table has columns {sorted(columns)}"
            why += "" if {"trial_id", "key"} in keys else ", no unique (trial_id, key)"
    _attr_tables[rdb.engine] = table
    if why:
        bulk_off(why)
    return table


def _upsert_attrs(rdb: Any, trial: Any, items: list[tuple[str, Any]]) -> bool:
    """`items` written as the trial's user attributes, each inserted or its value replaced,
    in one statement in the open block's session: False (nothing written) where the table,
    the database or the Trial is not what this was written for."""
    from sqlalchemy.dialects import postgresql, sqlite

    table = _attr_table(rdb)
    if table is False or not BULK_ATTRS["on"]:
        return False
    trial_id = getattr(trial, "_trial_id", None)  # what Optuna's own set_user_attr passes
    if not isinstance(trial_id, int):
        bulk_off("optuna's Trial no longer holds its _trial_id")
        return False
    dialect = sqlite if rdb.engine.dialect.name == "sqlite" else postgresql
    rows = [{"trial_id": trial_id, "key": k, "value_json": json.dumps(v)} for k, v in items]
    insert = dialect.insert(table).values(rows)
    upsert = insert.on_conflict_do_update(
        index_elements=["trial_id", "key"], set_={"value_json": insert.excluded.value_json}
    )
    rdb.scoped_session().execute(upsert)
    return True


def _check_sqlite_wal() -> None:
    """A scratch SQLite storage's connections are in WAL mode with synchronous=NORMAL (1),
    where the scratch directory is on a local file system. RuntimeError otherwise."""
    import tempfile

    from sqlalchemy import text

    with tempfile.TemporaryDirectory() as tmp:
        if not SQLITE_WAL["on"] or file_system(tmp) in NETWORK_FILE_SYSTEMS:
            return
        engine = _RDB_BEHIND[get_storage(f"sqlite:///{tmp}/check.db")].engine
        try:
            with engine.connect() as conn:
                got = [
                    conn.execute(text(f"PRAGMA {p}")).scalar()
                    for p in ("journal_mode", "synchronous")
                ]
        finally:
            engine.dispose()
    if got != ["wal", 1]:
        raise RuntimeError(
            f"sqlite_wal: a storage's connection has journal_mode, synchronous {got}"
        )


def _scratch_block(before: Any, write: Any) -> tuple[bool, int, int, Any]:
    """On a scratch SQLite study's new trial: `before(trial)` on its own, then `write(trial)`
    inside `one_transaction`; returns (whether it batched, the COMMITs it made, the statements
    it sent that write trial_user_attributes, the trial as the study reads it back)."""
    import tempfile

    import optuna
    from sqlalchemy import event

    with tempfile.TemporaryDirectory() as tmp:
        storage = get_storage(f"sqlite:///{tmp}/check.db")
        engine = _RDB_BEHIND[storage].engine
        writes: list[str] = []
        try:
            study = optuna.create_study(storage=storage)
            trial = study.ask()
            before(trial)
            event.listen(engine, "before_cursor_execute",
                         lambda conn, cursor, sql, *rest: writes.append(sql))  # fmt: skip
            with one_transaction(storage) as batched:
                write(trial)
            made = _inside.commits
            [got] = study.get_trials()
        finally:
            engine.dispose()
    attr_writes = sum(w.lstrip().upper().startswith("INSERT INTO TRIAL_USER_ATTRIBUTES")
                      for w in writes)  # fmt: skip
    return batched, made, attr_writes, got


def _check_one_transaction() -> None:
    """One block of two user attributes and a report, on a scratch SQLite study: one COMMIT,
    everything read back. RuntimeError otherwise."""

    def write(trial: Any) -> None:
        trial.set_user_attr("a", 1.0)
        trial.set_user_attr("b", {"c": [1]})
        trial.report(0.5, 1)

    batched, made, _, got = _scratch_block(lambda trial: None, write)
    read_back = (got.user_attrs, got.intermediate_values)
    if not batched or made != 1 or read_back != ({"a": 1.0, "b": {"c": [1]}}, {1: 0.5}):
        raise RuntimeError(
            "optuna's RDBStorage writes no longer join one transaction (one_transaction: "
            f"batched {batched}, {made} commits, read back {read_back})"
        )


def _check_bulk_attrs() -> None:
    """Thirty attributes by `set_trial_user_attrs` on a scratch SQLite trial, one of them
    written before: two INSERTs (the upsert of 29, Optuna's of the last) in one COMMIT, read
    back by Optuna as written. RuntimeError otherwise; nothing checked where it is switched
    off (L1SWEEP_BULK_ATTRS=0)."""
    if not BULK_ATTRS["on"]:
        return
    attrs = {f"k{i}": float(i) for i in range(29)} | {"row": {"a": [1, None], "b": "x"}}
    before = lambda trial: trial.set_user_attr("k3", "before")  # noqa: E731
    _, made, inserts, got = _scratch_block(before, lambda t: set_trial_user_attrs(t, attrs))
    if not BULK_ATTRS["on"] or made != 1 or inserts != 2 or got.user_attrs != attrs:
        raise RuntimeError(
            "set_trial_user_attrs: optuna's storage no longer takes or reads back what it "
            f"wrote (on {BULK_ATTRS['on']}, {made} commits, {inserts} INSERTs, read back "
            f"{got.user_attrs})"
        )
