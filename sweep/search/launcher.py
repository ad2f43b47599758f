"""`hydra/launcher=fork`, the default: each trial in a process forked from the sweep's own.

joblib's loky workers are fresh interpreters: each imports torch and Hydra and decodes the data
before its first trial (about 2 s a worker here, docs/performance.md), and every trial's config,
context and result cross a pickle; Hydra's basic launcher runs one trial at a time. A child
forked from the sweep process starts with torch imported, the config loader warm and the data
decoded (its pages shared with the parent, not copied), runs the job as the basic launcher
does, and sends its JobReturn back through a pipe.

Forking is safe only where (`unsafe` says why not):
- the platform is Linux (macOS's system libraries do not survive a fork);
- the trials train on the CPU (CUDA does not survive a fork);
- the parent never started OpenMP's thread pool: a child that used more than one thread would
  hang in it, so the sweep process keeps torch at one thread (`single_threaded`) and
  each child sets its own count;
- the fork happens on the main thread (`start`), while the heartbeat thread is not inside the
  storage (`FORK_LOCK`): a child inherits no lock held by another thread.
Where forking is not safe the launcher hands its trials to joblib's launcher (its defaults), and
says so once. Each child ignores Ctrl-C, which the sweep process handles by ending its children,
and dies with the sweep process (Linux's parent-death signal) if that is killed.

`hydra.launcher.start_method=forkserver` forks each trial instead from a server process that
imported torch and l1sweep once (`multiprocessing`'s forkserver, PRELOAD): no fork of a process
with threads, at the price of pickling each trial's config and context across (as joblib does)
and of decoding the data in every trial. It is measured against `fork` in docs/performance.md.
"""

from __future__ import annotations

import ctypes
import functools
import importlib
import logging
import multiprocessing
import os
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

from sweep import _compat
from sweep.search import interrupts
from sweep.search.compose import Composer

log = logging.getLogger(__name__)

# Held by the fork and by any other thread of the sweep process while it is inside a library
# that keeps process-wide locks (SQLite, SQLAlchemy): the heartbeat thread (sweep/search/study.py).
FORK_LOCK = threading.Lock()
_PR_SET_PDEATHSIG = 1
START_METHODS = ("fork", "forkserver")
# What a forkserver imports once, before its first fork: torch, the training code and this
# launcher, the data loaders' libraries, and torch._dynamo, which torch.optim's constructor
# imports on first use (about 2 s). The server skips a module that fails to import.
PRELOAD = ["sweep.task.job", "sweep.search.launcher", "sklearn.datasets", "sklearn.model_selection",
           "torchvision.datasets", "torch._dynamo"]  # fmt: skip


def unsafe(device: str) -> str | None:
    """Why trials on `device` cannot be forked from this process, or None."""
    if not sys.platform.startswith("linux"):
        return f"forking is not safe on {sys.platform}"
    if device != "cpu":
        return f"trials on {device} cannot be forked ({device} does not survive a fork)"
    return None


def single_threaded() -> None:
    """Keep this process's torch at one thread before it computes anything, so that OpenMP's
    thread pool is never started here and the forked trials may start their own."""
    import torch

    torch.set_num_threads(1)


class JobDied(RuntimeError):
    """A job's process ended without returning its result."""


def died(idx: int, pid: int | None, exitcode: int | None) -> str:
    """Why job `idx`'s process ended without a result, in words: killed by a signal (which is
    what the kernel's out-of-memory killer sends) or exited with a code."""
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        oom = " (out of memory?)" if -exitcode == signal.SIGKILL else ""
        return f"the process of job {idx} (pid {pid}) was killed by {name}{oom}"
    return (
        f"the process of job {idx} (pid {pid}) exited with code {exitcode} before returning "
        "its result"
    )


def failed_return(error: BaseException, overrides: Sequence[str]) -> JobReturn:
    """A JobReturn for a job that failed before or outside Hydra's run_job: reading its
    return_value raises `error`, as for a job whose task raised."""
    ret = JobReturn(overrides=list(overrides), status=JobStatus.FAILED)
    ret.return_value = error
    return ret


def lightened(ret: JobReturn) -> JobReturn:
    """`ret` with what the sweep reads of it and no more, for the pipe back: its status,
    result, overrides, working dir and task name, and of its Hydra config only
    `hydra.runtime.output_dir` (sweep/search/loop.py `_outcome`); the job's config
    (`cfg`) dropped. The whole configs were 23 KB a trial to pickle and unpickle, 2.4 ms of a
    trial (issue 33); the trial's .hydra/ files hold them."""
    if isinstance(ret.hydra_cfg, DictConfig):
        output_dir = OmegaConf.select(ret.hydra_cfg, "hydra.runtime.output_dir", default=None)
        ret.hydra_cfg = OmegaConf.create({"hydra": {"runtime": {"output_dir": output_dir}}})
    ret.cfg = None
    return ret


class ForkLauncher(Launcher):
    """`hydra/launcher=fork`: each job in a process forked from the sweep's (see the
    module's doc); joblib's launcher where forking is unsafe (`use_joblib`)."""

    def __init__(self, start_method: str = "fork") -> None:
        if start_method not in START_METHODS:
            raise ValueError(f"start_method={start_method} is not one of {list(START_METHODS)}")
        self.start_method = start_method
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None
        self.fallback: Launcher | None = None  # joblib's, where forking is not safe
        self.composer: Composer | None = None  # the jobs' configs (forked ones)
        self._children: set[multiprocessing.process.BaseProcess] = set()

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        """Hydra's plugin call: the config, context and task function the jobs run with."""
        self.config = config
        self.hydra_context = hydra_context
        self.task_function = task_function
        self.composer = Composer(hydra_context.config_loader, config)

    def use_joblib(self, why: str) -> Launcher:
        """Hand every job to joblib's launcher from now on; returns it."""
        self.fallback = _compat.joblib_launcher(
            hydra_context=self.hydra_context, task_function=self.task_function, config=self.config
        )
        log.info(f"hydra/launcher=fork: {why}; trials run in joblib's worker processes")
        return self.fallback

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        """Hydra's launcher call: every job at once, each in its own forked process."""
        if self.fallback is not None:
            return self.fallback.launch(job_overrides, initial_job_idx)
        waits = [self.start(o, initial_job_idx + i) for i, o in enumerate(job_overrides)]
        return [wait() for wait in waits]

    def start(self, overrides: Sequence[str], idx: int) -> Callable[[], JobReturn]:
        """Fork the job's process now, from the main thread; returns a function that waits for
        its JobReturn (from any thread)."""
        assert self.config is not None and self.fallback is None
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("ForkLauncher.start must run on the main thread")
        setup_globals()
        self._reap()
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
        job_config = None
        if self.start_method == "fork" and self.composer is not None:
            try:  # here, once a sweep through Hydra, then copies (sweep/search/compose.py)
                job_config = self.composer.config(overrides)
            except Exception as e:  # a failed job, as where its process composes it
                return functools.partial(failed_return, e, overrides)
        context = multiprocessing.get_context(self.start_method)
        parent: int | None = os.getpid()
        if self.start_method == "forkserver":
            context.set_forkserver_preload(PRELOAD)  # read when the server starts (first fork)
            parent = None  # the child's parent is the server, which ends when this process does
        receive, send = context.Pipe(duplex=False)
        child = context.Process(
            target=self._child, args=(send, list(overrides), idx, parent, job_config),
            name=f"l1sweep-job-{idx}", daemon=True,  # ended with the sweep, whatever happens
        )  # fmt: skip
        # Held: a Ctrl-C that lands in an at-fork hook (logging's releases its lock after every
        # fork) is printed as 'Exception ignored' and lost, and the sweep would go on.
        with interrupts.deferred():
            with FORK_LOCK, warnings.catch_warnings():
                # Python 3.12+ warns of fork in a process with threads: see the module's doc
                warnings.simplefilter("ignore", DeprecationWarning)
                child.start()
            send.close()
            self._children.add(child)

        def wait() -> JobReturn:
            try:
                while not receive.poll(0.5):  # a lost Ctrl-C does not wait for the trial's end
                    interrupts.check()
                ret = receive.recv()  # a failed job's error keeps its traceback (JobReturn's)
            except EOFError:  # the process ended without a result: a failed job
                child.join()
                self._children.discard(child)
                return failed_return(JobDied(died(idx, child.pid, child.exitcode)), overrides)
            finally:
                receive.close()
            # not joined here: its process still unwinds (multiprocessing's exit, 20-60 ms a
            # trial measured by benchmarks/trial_cost.py) while the trial is told; reaped by
            # the next start, kill_children, or multiprocessing at exit
            return ret

        return wait

    def _reap(self) -> None:
        """Forget the jobs' processes that have ended (`exitcode` polls: the zombie is reaped)."""
        for child in list(self._children):
            if child.exitcode is not None:
                self._children.discard(child)

    def kill_children(self) -> None:
        """End every running job's process now (after Ctrl-C or an error: their trials are
        failed already)."""
        for child in list(self._children):
            child.kill()
        for child in list(self._children):
            child.join(timeout=10)
        self._children.clear()

    def __getstate__(self) -> dict[str, Any]:
        """What a forkserver's child receives (pickled): the config, the context, Hydra's
        global state (its ConfigStore and plugins, as joblib's launcher sends them) and the task
        function by name, since `python -m sweep.run` defines it in __main__."""
        import cloudpickle  # OmegaConf's resolvers are closures, which pickle cannot carry

        state = {**self.__dict__, "_children": set(), "fallback": None, "composer": None}
        state["task_function"] = by_name(self.task_function)
        state["singleton"] = _compat.hydra_global_state()
        return {"cloudpickled": cloudpickle.dumps(state)}

    def __setstate__(self, pickled: dict[str, Any]) -> None:
        import cloudpickle

        state = cloudpickle.loads(pickled["cloudpickled"])
        _compat.set_hydra_global_state(state.pop("singleton"))
        module, name, depth = state["task_function"]
        task = getattr(importlib.import_module(module), name)
        for _ in range(depth):  # under @hydra.main's wrapper
            task = task.__wrapped__
        self.__dict__.update(state, task_function=task)

    def _child(
        self,
        send: Any,
        overrides: list[str],
        idx: int,
        parent: int | None,
        job_config: DictConfig | None = None,
    ) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C: the sweep ends its children
        try:
            ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        except (AttributeError, OSError):  # not glibc: ends with the sweep only in order
            pass
        if parent is not None and os.getppid() != parent:  # the sweep died before the line above
            os._exit(1)
        try:
            ret = lightened(self._run(overrides, idx, job_config))
        except Exception as e:  # before the job ran (composing its config): a failed job too
            ret = failed_return(e, overrides)
        try:
            send.send(ret)
        except Exception as e:  # a return value pickle cannot carry
            ret.status = JobStatus.FAILED
            ret.return_value = RuntimeError(f"job {idx}'s result cannot be sent back: {e}")
            send.send(ret)
        send.close()

    def _run(
        self, overrides: list[str], idx: int, job_config: DictConfig | None = None
    ) -> JobReturn:
        """The job, as Hydra's basic launcher runs it; its config composed here unless given."""
        assert self.hydra_context is not None and self.config is not None
        sweep_config = job_config
        if sweep_config is None:
            loader = self.hydra_context.config_loader
            sweep_config = loader.load_sweep_config(self.config, list(overrides))
        with open_dict(sweep_config):
            sweep_config.hydra.job.id = str(idx)
            sweep_config.hydra.job.num = idx
        assert self.task_function is not None
        return run_job(
            hydra_context=self.hydra_context,
            task_function=self.task_function,
            config=sweep_config,
            job_dir_key="hydra.sweep.dir",
            job_subdir_key="hydra.sweep.subdir",
        )


def by_name(task: Any) -> tuple[str, str, int]:
    """A task function as (module, name, depth): `getattr(import_module(module), name)`, unwrapped
    `depth` times through `__wrapped__`, is `task`. The module `python -m` ran as __main__ is
    named by its import name. TypeError for a task that is not reachable so."""
    module = sys.modules[task.__module__]
    name = module.__spec__.name if task.__module__ == "__main__" and module.__spec__ else None
    candidate, depth = getattr(module, task.__name__, None), 0
    while candidate is not None and candidate is not task:
        candidate, depth = getattr(candidate, "__wrapped__", None), depth + 1
    if candidate is None or (task.__module__ == "__main__" and name is None):
        raise TypeError(
            f"hydra.launcher.start_method=forkserver needs a task function defined at a "
            f"module's top level and run with python -m; {task.__qualname__} is not"
        )
    return name or task.__module__, task.__name__, depth


# ---- which launcher runs a sweep's trials ------------------------------------------------------


def fork_or_not(chosen: ForkLauncher, device: str) -> None:
    """The fork launcher (the default) forks its trials on `device` where that is safe, and
    keeps this process at one torch thread for it; elsewhere it hands them to joblib's."""
    why = unsafe(device)
    if why is None:
        single_threaded()
    else:
        chosen.use_joblib(why)


def runner(chosen: Launcher) -> Launcher:
    """The launcher that runs the trials: the fork launcher's joblib, where it handed them
    over; else `chosen` itself."""
    if isinstance(chosen, ForkLauncher) and chosen.fallback is not None:
        return chosen.fallback
    return chosen


def class_path(chosen: Launcher) -> str:
    """The class path of the launcher that runs the trials (sweep/search/parallel.py's kinds)."""
    kind = type(runner(chosen))
    return f"{kind.__module__}.{kind.__name__}"


def start_method(chosen: Launcher) -> str | None:
    """How the fork launcher starts the trials' processes (None: another launcher runs them)."""
    return getattr(runner(chosen), "start_method", None)


def joblib_of(chosen: Launcher) -> Any:
    """The joblib launcher that runs the trials, if one does."""
    return runner(chosen) if "joblib" in class_path(chosen) else None
