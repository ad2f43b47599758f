"""Relative paths and URLs read from the directory the command was started in.

A user writes `data.path=my.csv` or `hydra.sweeper.storage=sqlite:///outputs/optuna.db` meaning
the directory they ran the command from. Under Hydra's `hydra.job.chdir=true` a job runs inside
its own output directory, where such a path names another file: the storage "unable to open
database file", a second mlflow.db in every trial. So every relative path or URL l1sweep opens is
resolved by these two functions, against Hydra's record of the start directory
(`hydra.runtime.cwd`, through Hydra's public `to_absolute_path`; the process's own directory
outside a Hydra run), and used absolute from there on.
"""

from __future__ import annotations

import os
from pathlib import Path

from hydra.utils import to_absolute_path

SQLITE = "sqlite:///"  # SQLAlchemy: sqlite:///relative.db, sqlite:////absolute.db
FILE = "file:"


def started_in(path: str | os.PathLike) -> Path:
    """`path` (`~` expanded) as it reads from the directory the command was started in; an
    absolute path as it is."""
    return Path(to_absolute_path(str(Path(path).expanduser())))


def url_started_in(url: str) -> str:
    """A storage or tracking URL with a relative file in it (`sqlite:///rel.db`, `file:rel`,
    or a bare path, as MLflow takes) made absolute as `started_in` does; any other URL (a
    server's, an in-memory SQLite `sqlite://`, `sqlite:///:memory:`) as it is."""
    if url.startswith(SQLITE):
        file = url.removeprefix(SQLITE)
        if file and not file.startswith((":memory:", "file:")) and not os.path.isabs(file):
            return SQLITE + started_in(file).as_posix()
        return url
    if url.startswith(FILE) and not url.startswith("file://"):
        file = url.removeprefix(FILE)
        return FILE + started_in(file).as_posix() if not os.path.isabs(file) else url
    if "://" in url or not url:
        return url
    return started_in(url).as_posix()
