"""Parallel trials: how many at once (`hydra.sweeper.n_jobs`, `auto` by default), and the slot
loop that keeps that many running, a new one starting as soon as any finishes.

Hydra's stock sweeper launches a batch of n_jobs trials and waits for the slowest before it
asks the next batch (hydra#3091); with trials of different lengths (early stopping, a slow
corner of the search space) the cores idle. Here each running trial is one slot: a thread
that waits for that single job. The launcher runs the job in its own process (a child forked
by sweep/launcher.py, joblib's loky pool, a submitit process or SLURM task), so the threads
only wait. Everything that touches the study (ask, tell, the CSV) and every fork stays on the
main thread, where Ctrl-C lands and can be deferred.
"""

from __future__ import annotations

import contextlib
import logging
import math
import multiprocessing
import os
import signal
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from sweep.errors import UserError
from sweep.search import interrupts

Job = TypeVar("Job")

log = logging.getLogger(__name__)
# after Ctrl-C, how long the sweep keeps ending its trials' processes before it exits anyway
END_WITHIN = 30.0
# A worker process's resident memory before it holds any data: torch, Hydra and Optuna
# imported, measured at 624 MiB on this project's machine (most of it shared libraries,
# counted whole to stay on the safe side).
BASE_JOB_BYTES = 640 * 2**20
# The decoded data set is held about twice in a job: the cached full set and its split.
DATA_COPIES = 2
# Leave this share of the available memory to everything else.
MEMORY_SHARE = 0.8
# Trials sharing one GPU under auto. A small model's step is CPU-bound (Python, kernel
# launches), so trials side by side fill the GPU's idle time: a 20-trial digits sweep on an
# H200 took 55 s one at a time, 48 s two at a time, 41 s four at a time (docs/performance.md).
GPU_TRIALS = 4
# A trial's GPU memory: its CUDA context and the data it copies there.
GPU_CONTEXT_BYTES = 512 * 2**20


@dataclass(frozen=True)
class Plan:
    """Trials at a time, torch threads per trial (None: the job's own default), and why."""

    jobs: int
    threads: int | None
    why: str


def launcher_kind(target: str) -> str:
    """'fork': the launcher forks each job from this process (sweep/launcher.py); 'process':
    it runs jobs in local worker processes (joblib, submitit local); 'cluster': on other
    machines (SLURM); 'inline': in this process, one at a time (basic)."""
    if target == "sweep.search.launcher.ForkLauncher":
        return "fork"
    if "joblib" in target or target.endswith("LocalLauncher"):
        return "process"
    if "submitit" in target:
        return "cluster"
    return "inline"


def cores() -> int:
    """The cores this process may use (a cgroup or SLURM share), not all the machine has."""
    return len(os.sched_getaffinity(0))


def available_memory() -> int:
    """Bytes a new process can take without swapping: MemAvailable, capped by a cgroup limit."""
    found = math.inf
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found = int(line.split()[1]) * 1024
    except OSError:
        found = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    try:  # cgroup v2: the container's limit less what it already uses
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            used = int(Path("/sys/fs/cgroup/memory.current").read_text())
            found = min(found, int(limit) - used)
    except (OSError, ValueError):
        pass
    return int(found) if math.isfinite(found) else 2**40


def plan(
    option: Any,
    *,
    launcher: str,
    device: str,
    n_trials: int,
    cores: int,
    memory: int,
    data_bytes: int,
    threads: int | None,
    gpu_memory: int | None = None,
    shares_data: bool | None = None,
) -> Plan:
    """Trials at a time for `hydra.sweeper.n_jobs` (`auto` or an int) and threads per trial.

    auto, with a launcher that runs local processes: on the CPU one trial per core, one torch
    thread each, as many as the memory holds (a joblib or submitit worker decodes its own copy
    of the data; a forked one shares this process's) and no more than the sweep's trials. A
    small model cannot use more than one core well (two one-thread trials finish more trials
    an hour than one two-thread trial: docs/performance.md), so cores go to trials first;
    threads left over when trials are fewer than cores go to each trial. On a CUDA GPU up to
    GPU_TRIALS trials share it, as its free memory (`gpu_memory`) and the cores allow; on
    Apple's MPS one at a time (not measured). In-process launchers (basic) run one at a time
    anyway; on a cluster (SLURM) auto cannot see the machines: the user says how many.
    `shares_data`: whether the trials' processes share this process's decoded data (by
    default, where the launcher forks them from here; not under start_method=forkserver).
    """
    kind = launcher_kind(launcher)
    if shares_data is None:
        shares_data = kind == "fork"
    if option == "auto":
        if kind == "cluster":
            raise UserError(
                "hydra.sweeper.n_jobs=auto chooses for this machine; on a cluster launcher set "
                "the trials to run at once, e.g. hydra.sweeper.n_jobs=16"
            )
        if kind == "inline":
            return Plan(1, threads, "the basic launcher runs one trial at a time, in-process")
        if device not in ("cpu", "cuda"):
            return Plan(1, threads, f"one trial at a time on {device}")
        per_job = BASE_JOB_BYTES + (0 if shares_data else DATA_COPIES * data_bytes)
        by_memory = max(1, int(MEMORY_SHARE * memory // per_job))
        jobs = max(1, min(cores, by_memory, n_trials))
        why = (
            f"{cores} cores, memory for {by_memory} workers of ~{per_job / 2**30:.1f} GiB, "
            f"{n_trials} trials"
        )
        if device == "cuda":
            on_gpu = GPU_CONTEXT_BYTES + data_bytes
            by_gpu = max(1, int(MEMORY_SHARE * (gpu_memory or 0) // on_gpu))
            jobs = min(jobs, GPU_TRIALS, by_gpu)
            why += f", GPU memory for {by_gpu}, at most {GPU_TRIALS} on one GPU"
    else:
        jobs, why = int(option), "hydra.sweeper.n_jobs"
        if jobs > 1 and kind == "inline":
            return Plan(1, threads, "the basic launcher runs one trial at a time; use joblib")
    if threads is None and jobs > 1 and kind in ("fork", "process"):
        threads = max(1, cores // jobs)  # parallel local workers share the cores
    return Plan(jobs, threads, why)


def run(
    n_trials: int,
    jobs: int,
    ask: Callable[[], Job | None],
    launch: Callable[[Job], Callable[[], Any]],
    tell: Callable[[Job, Any], bool],
    running: list[Job],
    end: Callable[[], None] | None = None,
) -> None:
    """Keep `jobs` trials running until `n_trials` have been asked (or ask() says no more)
    and all of them told.

    ask() makes the next job and appends it to `running` (main thread; in one step, so that
    an interrupt cannot lose a job made but not yet listed), or returns None to ask no more
    (the study holds its trials: the running ones are still told); launch(job) starts it (main
    thread) and returns wait(), which blocks until its result (in a worker thread of a
    concurrent.futures pool; on the main thread when jobs == 1); tell(job, result) records it
    (main thread) and returns False to ask no more: the running ones are still waited for and
    told, then run returns. `running` holds the jobs in flight, for a heartbeat and for failing
    them on an interrupt. A launcher error is raised on the main thread once the others are
    told. The loop is Optuna's own `_optimize` for n_jobs > 1: submit, then
    wait(FIRST_COMPLETED), with a timeout so that Ctrl-C is seen within 0.5 s.

    On an interrupt, `end()` (if given) is called until the launcher calls still running have
    returned (END_WITHIN s at most): a call may start its worker after the interrupt, and its
    thread would hold the process's exit while that trial trained on.
    """
    if jobs == 1:  # on the main thread, as a plain loop: Ctrl-C reaches an in-process job
        _run_inline(n_trials, ask, launch, tell, running)
        return
    pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="l1sweep-trial")
    futures: dict[Future, Job] = {}
    asked, asking = 0, True
    error: BaseException | None = None
    try:
        while (asking and asked < n_trials) or futures:
            interrupts.check()
            while asking and asked < n_trials and len(futures) < jobs:
                job = ask()
                if job is None:
                    asking = False
                    break
                asked += 1
                futures[_submit(pool, launch, job)] = job
            done, _ = wait(futures, timeout=0.5, return_when=FIRST_COMPLETED)
            for future in done:
                job = futures.pop(future)
                if future.exception() is not None:  # left in `running`: the caller fails it
                    error, asking = error or future.exception(), False
                    continue
                asking = tell(job, future.result()) and asking
                running.remove(job)
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        if end is not None:
            _end_calls(futures, end)
        raise
    pool.shutdown(wait=False)
    if error is not None:
        raise error


def _end_calls(futures: dict[Future, Job], end: Callable[[], None]) -> None:
    """Call end() until every launcher call in `futures` has returned, or END_WITHIN seconds."""
    deadline = time.monotonic() + END_WITHIN
    while True:
        end()
        _, pending = wait(futures, timeout=0.2)
        if not pending:
            return
        if time.monotonic() > deadline:
            log.warning(f"{len(pending)} trial(s) still running after {END_WITHIN:.0f} s")
            return


def _run_inline(
    n_trials: int,
    ask: Callable[[], Job | None],
    launch: Callable[[Job], Callable[[], Any]],
    tell: Callable[[Job, Any], bool],
    running: list[Job],
) -> None:
    """`run` with one trial at a time, on the main thread."""
    for _ in range(n_trials):
        interrupts.check()
        job = ask()
        if job is None:
            return
        result = launch(job)()  # an error leaves the job in `running` for the caller
        keep_asking = tell(job, result)
        running.remove(job)
        if not keep_asking:
            return


def _submit(
    pool: ThreadPoolExecutor, launch: Callable[[Job], Callable[[], Any]], job: Job
) -> Future:
    """The future of `job`'s result: launched now, waited for in a worker thread."""
    try:
        return pool.submit(launch(job))
    except Exception as e:  # as if it had failed in its worker
        failed: Future = Future()
        failed.set_exception(e)
        return failed


def stop_workers() -> None:
    """End joblib's worker processes now (after an interrupt or an error): their trials are
    failed already, and loky would keep them running, and the exit waiting, to their end.
    They are this process's multiprocessing children (loky's processes are
    multiprocessing.Process subclasses), so the standard library lists them; each gets SIGKILL
    by its pid (loky's Popen has no kill(): Process.kill() raises AttributeError there)."""
    for child in multiprocessing.active_children():
        if child.pid is not None:
            with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
                os.kill(child.pid, signal.SIGKILL)


def gpu_memory() -> int:
    """Free bytes on the current CUDA device."""
    import torch

    return int(torch.cuda.mem_get_info()[0])
