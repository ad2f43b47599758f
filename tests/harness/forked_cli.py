"""`python -m MODULE ARGS` without the start-up: the child of a forkserver that imported the
heavy libraries once (torch, torch._dynamo, scikit-learn, Hydra, Optuna, pandas, l1sweep's
modules), run as `python -m` runs it.

A test suite that starts hundreds of `python -m sweep.run` processes spends most of each
(~5 s of 6 on two cores) importing and tearing down, not in the code under test. Each call
here is still its own process, forked from a server that only imported modules (it never ran
a torch op, a Hydra app or an Optuna study, so nothing of one call reaches the next); in it,
the module runs as `__main__` with the call's argv, working directory, environment, sys.path
(the directory first, as `python -m` puts it) and stdout/stderr, and exits with its code after
the atexit handlers, as the interpreter does. tests/conftest.py's `run_cli` falls back to a
real interpreter where that cannot hold: an environment that changes what is imported
(PYTHONPATH) or what the OpenMP runtime read when torch was imported (OMP_*, MKL_*).
"""

from __future__ import annotations

import atexit
import contextlib
import io
import os
import runpy
import sys
import threading
import traceback
import warnings

# What `python -m sweep.run` imports before its first line of l1sweep runs, and what a trial
# imports (sweep.search.launcher.PRELOAD). Not sweep.run itself: `python -m` runs it fresh.
PRELOAD = [
    "torch", "torch._dynamo", "torch.nn", "torch.optim", "numpy", "pandas", "optuna",
    "sqlalchemy", "hydra", "hydra.core.hydra_config", "omegaconf", "sklearn.datasets",
    "sklearn.model_selection", "torchvision", "tqdm", "cloudpickle",
    "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper",
    "hydra_plugins.hydra_joblib_launcher.joblib_launcher",
    "sweep.search.sweeper", "sweep.search.launcher", "sweep.task.job", "sweep.task.callbacks",
]  # fmt: skip


def _stream(fd: int, path: str) -> io.TextIOWrapper:
    """File descriptor `fd` pointed at a new file `path`, as a text stream."""
    target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(target, fd)
    os.close(target)
    return io.TextIOWrapper(io.FileIO(fd, "w", closefd=False), encoding="utf-8", newline=None)


def main(module: str, args: list[str], cwd: str, env: dict[str, str], path: list[str],
         out: str, err: str) -> None:  # fmt: skip
    """Run `module` as `__main__` with argv `args`, in `cwd`, with environment `env` and
    sys.path `path`, stdout and stderr into the files `out` and `err`; never returns: exits
    with the module's exit code (1 and a traceback on stderr for an uncaught exception)."""
    with contextlib.suppress(OSError):  # its own process group: a timed-out call is killed
        os.setsid()  # with every child it made
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    sys.stdout, sys.stderr = _stream(1, out), _stream(2, err)
    sys.stdin = open(os.devnull)
    sys.path[:] = path
    if env.get("PYTHONWARNINGS"):
        warnings.simplefilter(env["PYTHONWARNINGS"])
    sys.argv = [module, *args]  # runpy puts the module's file first, as `python -m` does
    code: object = 0
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as e:
        code = e.code
    except BaseException:  # what the interpreter prints for an uncaught exception
        traceback.print_exc()
        code = 1
    if code is None:
        code = 0
    elif not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    try:  # what the interpreter does at exit, in its order:
        threading._shutdown()  # executors' exit hooks (loky, concurrent.futures), thread joins
        atexit._run_exitfuncs()  # then logging's flush, l1sweep's console
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
