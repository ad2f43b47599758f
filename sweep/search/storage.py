"""Talking to the study's storage when it may fail for a while: retry, then stop in one line.

A storage can refuse an operation that would succeed a little later: an SQLite file that
another process (optuna-dashboard, a backup, a second sweep) holds locked for longer than
SQLite's own wait ("database is locked"), a PostgreSQL server restarting or a dropped
connection. `retrying` runs one storage operation again with exponential backoff for up to
`hydra.sweeper.storage_wait` seconds, logging each retry; past that it raises
StorageUnavailable, which the sweeper reports as one line (and a non-zero exit) after keeping
every finished trial's row. A trial whose job finished but whose result could not be told
stays RUNNING in the storage; the next start records it from its files (sweep/search/study.py,
recover_stale) instead of training it again.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from typing import TypeVar

import optuna
from sqlalchemy import exc as sa

log = logging.getLogger(__name__)

T = TypeVar("T")

FIRST_PAUSE = 0.5  # seconds before the first retry; doubled each time, at most MAX_PAUSE
MAX_PAUSE = 8.0


class StorageUnavailable(Exception):
    """The storage kept failing for longer than the sweep waits; the message is one line."""


def transient(error: BaseException) -> bool:
    """Whether `error` (or what it was raised from) is one a later attempt may not meet: a lock,
    a lost or refused connection. Invalid data, a missing study or a trial already finished
    are not."""
    seen: set[int] = set()
    e: BaseException | None = error
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, (sa.OperationalError, sa.InterfaceError, sqlite3.OperationalError)):
            return True
        if isinstance(e, sa.DBAPIError) and e.connection_invalidated:
            return True
        if isinstance(e, (ConnectionError, TimeoutError)):
            return True
        if type(e).__module__.startswith("psycopg") and type(e).__name__ == "OperationalError":
            return True
        e = e.__cause__ or e.__context__
    return False


def reason(error: BaseException) -> str:
    """The first line of the innermost database error's message ("database is locked")."""
    e: BaseException = error
    while isinstance(e, optuna.exceptions.StorageInternalError) and e.__cause__ is not None:
        e = e.__cause__
    if isinstance(e, sa.DBAPIError) and e.orig is not None:
        e = e.orig
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def retrying(what: str, call: Callable[[], T], wait: float, where: str = "") -> T:
    """call(), retried with backoff while it fails with a transient storage error, for up to
    `wait` seconds in all; `what` names the operation in the log ("telling trial 3").

    Raises StorageUnavailable (one line: what, where, why) once `wait` has passed; any other
    error at once."""
    start, pause, attempt = time.monotonic(), FIRST_PAUSE, 0
    while True:
        try:
            return call()
        except Exception as e:
            if not transient(e):
                raise
            attempt += 1
            waited = time.monotonic() - start
            if waited + pause > wait:
                place = f" {where}" if where else ""
                raise StorageUnavailable(
                    f"the Optuna storage{place} kept failing for {waited:.0f}s while {what} "
                    f"({reason(e)}; hydra.sweeper.storage_wait={wait:g})"
                ) from e
            log.warning(
                f"storage: {what} failed ({reason(e)}); retry {attempt} in {pause:g}s "
                f"(gives up after {wait:g}s)"
            )
            time.sleep(pause)
            pause = min(2 * pause, MAX_PAUSE)
