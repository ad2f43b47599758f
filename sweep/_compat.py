"""Every private API of another library that l1sweep uses, in one place, each with why.

A private name can change in any release. Each one is used only through this module, and
`check()` (run by tests/test_compat.py) fails naming the one that the installed libraries no
longer have, so an upgrade breaks one test with a clear message instead of a sweep at run time.
The fast training steps (`train.fast`) turn themselves off, with one log line, where the names
they need are gone (`missing()`).
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    # Each imported where it is used: the archive loader needs only torch and numpy, and the
    # sweeper (which Hydra imports for every command) parses a search space without torch,
    # so a mistaken override is refused before torch's seconds of import.
    import torch
    from omegaconf import DictConfig
    from torch import nn


# --- Hydra's Optuna sweeper -----------------------------------------------------------------
# The plugin turns Hydra's sweep overrides (choice, range, interval, tag(log)) into Optuna
# distributions in `create_params_from_overrides`, with care for ranges Optuna cannot hold
# (float steps, Hydra's exclusive stop). The function has no public home; using it keeps
# l1sweep's search space exactly the plugin's documented one.
def create_params_from_overrides(arguments: list[str]) -> tuple[dict, dict[str, Any], list[str]]:
    """(search space: Optuna distributions by key, fixed values by key, other overrides) of
    Hydra override strings, as the Optuna sweeper plugin parses them."""
    from hydra_plugins.hydra_optuna_sweeper._impl import create_params_from_overrides as parse

    return parse(arguments)


# --- Hydra's instantiate allow-list -----------------------------------------------------------
# hydra-core 1.4.0rc3 restricts which `_target_`s a call may run through the keyword
# `_execution_whitelist_`; Hydra's main branch spells it `_target_whitelist_`, and l1sweep's pin
# admits any 1.4. Every instantiate that runs a name from a config goes through `instantiate`
# here, which passes the spelling the installed Hydra takes (read from its signature).
ALLOW_LIST_KEYWORDS = ("_target_whitelist_", "_execution_whitelist_")
# Hydra's message for a nested `_target_` the allow-list refused (both spellings' releases).
REFUSED_TARGET = r"Target '([^']+)' is not in the Hydra (?:execution|target) whitelist"


@functools.cache
def allow_list_keyword() -> str:
    """The keyword `hydra.utils.instantiate` takes for its allow-list of `_target_`s.
    Raises RuntimeError where it takes neither spelling (l1sweep would run any target)."""
    import inspect

    from hydra.utils import instantiate as hydra_instantiate

    params = inspect.signature(hydra_instantiate).parameters
    for keyword in ALLOW_LIST_KEYWORDS:
        if keyword in params:
            return keyword
    raise RuntimeError(
        "hydra.utils.instantiate takes no allow-list of _target_s "
        f"(neither of {', '.join(ALLOW_LIST_KEYWORDS)}): install hydra-core 1.4.0rc3"
    )


def instantiate(config: Any, allowed: tuple[str, ...], **kwargs: Any) -> Any:
    """`hydra.utils.instantiate(config, **kwargs)` allowed to run only the `_target_`s in
    `allowed` (exact names, or `prefix.*`). Raises Hydra's InstantiationException for a
    refused or failing target, as Hydra does."""
    from hydra.utils import instantiate as hydra_instantiate

    return hydra_instantiate(config, **kwargs, **{allow_list_keyword(): tuple(allowed)})


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
    return held


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
    import logging

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
    import logging

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


# --- Hydra's global state and launchers --------------------------------------------------------
# A forkserver's child runs a job in a fresh process: it needs Hydra's ConfigStore and plugin
# registry as the sweep process has them. Hydra's joblib launcher sends them the same way
# (`Singleton.get_state()` / `set_state()`, hydra.core.singleton; not in Hydra's docs).
def hydra_global_state() -> Any:
    """Hydra's global singletons (ConfigStore, plugins) as one picklable object."""
    from hydra.core.singleton import Singleton

    return Singleton.get_state()


def set_hydra_global_state(state: Any) -> None:
    """Restore what `hydra_global_state` returned, in a fresh process."""
    from hydra.core.singleton import Singleton

    Singleton.set_state(state)


def joblib_launcher(**setup: Any) -> Any:
    """Hydra's joblib launcher with its documented defaults, set up with `setup`
    (hydra_context, task_function, config): the fork launcher hands its jobs to it where forking
    is unsafe. The class sits in the plugin's module, not a documented API."""
    import dataclasses

    from hydra_plugins.hydra_joblib_launcher.config import JobLibLauncherConf
    from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher

    options = dataclasses.asdict(JobLibLauncherConf())
    options.pop("_target_")
    launcher = JoblibLauncher(**options)
    launcher.setup(**setup)
    return launcher


# The loggers whose INFO lines announce each launched job: Hydra's launchers log under their
# (private) module names.
LAUNCH_LOGGERS = (
    "hydra._internal.core_plugins.basic_launcher",
    "hydra_plugins.hydra_joblib_launcher",
    "hydra_plugins.hydra_submitit_launcher",
)


__all__ = [
    "LAUNCH_LOGGERS",
    "REFUSED_TARGET",
    "BATCH_WRITES",
    "allow_list_keyword",
    "batch_off",
    "check",
    "config_root",
    "create_params_from_overrides",
    "get_storage",
    "hydra_global_state",
    "instantiate",
    "joblib_launcher",
    "has_module_hooks",
    "has_optimizer_step_hooks",
    "log_softmax_backward",
    "missing",
    "one_transaction",
    "set_hydra_global_state",
    "sqlite_wal",
]


# --- torch.nn.Module hooks -----------------------------------------------------------------
# The hand-written MLP step (sweep/training/fastmlp.py) bypasses module calls, so a hook would be
# skipped silently, and the compactor (sweep/models/compact.py) cannot carry a forward hook over to
# the smaller layers. torch registers hooks publicly but has no public way to ask whether a
# module has any.
def has_module_hooks(module: nn.Module, forward_only: bool = False) -> bool:
    """Whether `module` itself (not its children) has a forward, forward-pre or (unless
    `forward_only`) backward hook registered."""
    if module._forward_hooks or module._forward_pre_hooks:
        return True
    return not forward_only and bool(module._backward_hooks)


# --- torch.optim.Optimizer step hooks --------------------------------------------------------
# The flat SGD step (sweep/training/fastsgd.py) stands in for optimizer.step(), which runs the step
# hooks; it must step aside where any is registered, and torch has no public query for them.
def has_optimizer_step_hooks(optimizer: torch.optim.Optimizer) -> bool:
    """Whether a step pre/post hook is registered on `optimizer` or globally."""
    from torch.optim import optimizer as torch_optimizer

    return any(
        (
            optimizer._optimizer_step_pre_hooks,
            optimizer._optimizer_step_post_hooks,
            torch_optimizer._global_optimizer_pre_hooks,
            torch_optimizer._global_optimizer_post_hooks,
        )
    )


# --- ATen's log-softmax backward ---------------------------------------------------------------
# The kernel autograd runs for log_softmax's gradient; the same arithmetic in public ops
# (grad - exp(out) * grad.sum) differs in the last bits in about 9 batches of 10 (measured),
# and the fast MLP step promises autograd's bits.
@functools.cache
def _log_softmax_kernel() -> Any:
    import torch

    return getattr(torch, "_log_softmax_backward_data", None)


def log_softmax_backward(
    grad: torch.Tensor, output: torch.Tensor, dim: int, dtype: torch.dtype
) -> torch.Tensor:
    """d(loss)/d(logits) from d(loss)/d(log_softmax) `grad` and log_softmax's `output`, both
    (batch, classes): autograd's own kernel (torch._log_softmax_backward_data)."""
    return _log_softmax_kernel()(grad, output, dim, dtype)


# --- OmegaConf: a node's root ------------------------------------------------------------------
# `allow_targets` sits at the config's root, and a `_target_` is checked where it is built,
# from the node alone (`sweep.config.user_code.instantiate_checked`): OmegaConf has no public way
# from a node to its root.
def config_root(node: DictConfig) -> DictConfig:
    """The root config that `node` belongs to (itself, if it is one)."""
    return node._get_root()


@functools.cache
def missing() -> tuple[str, ...]:
    """The private names above that the installed torch lacks (empty: all present)."""
    import torch

    out = []
    probe = torch.nn.Linear(1, 1)
    try:
        has_module_hooks(probe)
    except AttributeError as e:
        out.append(f"torch.nn.Module hooks ({e})")
    try:
        has_optimizer_step_hooks(torch.optim.SGD(probe.parameters(), lr=0.1))
    except AttributeError as e:
        out.append(f"torch.optim step hooks ({e})")
    from omegaconf import OmegaConf

    try:
        config_root(OmegaConf.create({"a": {}}).a)
    except AttributeError as e:
        out.append(f"omegaconf's node root ({e})")
    if _log_softmax_kernel() is None:
        out.append("torch._log_softmax_backward_data")
    return tuple(out)


def check() -> None:
    """Raise RuntimeError naming every private API above that the installed libraries no
    longer have or that no longer behaves as l1sweep relies on."""
    gone = missing()
    try:
        allow_list_keyword()
    except RuntimeError as e:
        gone += (str(e),)
    if gone:
        raise RuntimeError(f"private API gone from the installed libraries: {', '.join(gone)}")
    space, fixed, rest = create_params_from_overrides(
        ["a=tag(log, interval(1e-5, 1e-3))", "b=choice(x,y)", "c=3", "~d"]
    )
    if (sorted(space), fixed, rest) != (["a", "b"], {"c": "3"}, ["~d"]):
        raise RuntimeError(
            "hydra_optuna_sweeper._impl.create_params_from_overrides changed: "
            f"got {space}, {fixed}, {rest}"
        )
    _check_one_transaction()
    _check_sqlite_wal()


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


def _check_one_transaction() -> None:
    """One block of two user attributes and a report, on a scratch SQLite study: one COMMIT,
    everything read back. RuntimeError otherwise."""
    import tempfile

    import optuna

    with tempfile.TemporaryDirectory() as tmp:
        storage = get_storage(f"sqlite:///{tmp}/check.db")
        engine = _RDB_BEHIND[storage].engine
        try:
            study = optuna.create_study(storage=storage)
            trial = study.ask()
            with one_transaction(storage) as batched:
                trial.set_user_attr("a", 1.0)
                trial.set_user_attr("b", {"c": [1]})
                trial.report(0.5, 1)
            made = _inside.commits
            [got] = study.get_trials()
        finally:
            engine.dispose()
    read_back = (got.user_attrs, got.intermediate_values)
    if not batched or made != 1 or read_back != ({"a": 1.0, "b": {"c": [1]}}, {1: 0.5}):
        raise RuntimeError(
            "optuna's RDBStorage writes no longer join one transaction (one_transaction: "
            f"batched {batched}, {made} commits, read back {read_back})"
        )
