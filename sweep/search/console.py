"""What a sweep prints: one line per finished trial under a progress bar, the epochs in each
trial's own run.log.

A sweep's console holds its start (study, results path, resume command), one line per finished
trial (`trial N [k/n] complete ... | best: ...`) and its end. Each trial's epoch lines, and its
own closing line, go to the trial's `run.log` only (Hydra's job log file, beside its
metrics.json); its warnings (a diverged run) still reach the console. The parent's launch
lines (`#k : overrides`, joblib's `Launching jobs`) leave the console too: a trial's overrides
are its row's `overrides`.

Where stderr is a terminal, a tqdm bar below the lines shows the trials done, the elapsed time
and ETA, and the best value so far; elsewhere (CI, a file, SLURM's output) there is no bar and
no control code, and each trial's line ends with the ETA instead.

The detail comes back with `hydra.verbose=true` (or a list of loggers, Hydra's option), or
with `train.log_every` given on the command line: the trials' epoch lines reach the console
again, and so do the launch lines. A single run (no -m) keeps its epoch lines on the console.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import shutil
import sys
import time
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from sweep import _compat

# The loggers whose INFO lines announce each launched job (Hydra's launchers and l1sweep's).
LAUNCH_LOGGERS = ("sweep.search.launcher", *_compat.LAUNCH_LOGGERS)
# The key a user gives to see the trials' epochs on the console again.
DETAIL_KEY = "train.log_every"


def console_handlers(logger: logging.Logger | None = None) -> list[logging.Handler]:
    """The handlers of `logger` (the root logger) that write to the terminal: stream handlers
    on stdout or stderr, not Hydra's file handler (a FileHandler is a StreamHandler too)."""
    logger = logger or logging.getLogger()
    return [
        h
        for h in logger.handlers
        if isinstance(h, logging.StreamHandler)
        and not isinstance(h, logging.FileHandler)
        and getattr(h, "stream", None) in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)
    ]


def wants_detail(verbose: Any, overrides: list[str] | tuple[str, ...]) -> bool:
    """Whether the user asked for a sweep's detail on the console: `hydra.verbose` set (true, a
    logger name or a list of them), or `train.log_every` given among the overrides."""
    given = any(o.lstrip("+~").split("=", 1)[0] == DETAIL_KEY for o in overrides)
    return bool(verbose) or given


def quiet_trial() -> bool:
    """In a sweep's trial (Hydra's MULTIRUN job), after Hydra configured the job's logging: its
    console handlers drop everything below WARNING, so the epoch lines land in run.log only,
    unless the user asked for the detail (`wants_detail`). Returns whether it quietened them;
    a single run, or a call outside Hydra, is left as it is."""
    if not HydraConfig.initialized():
        return False
    hc = HydraConfig.get()
    if hc.mode != RunMode.MULTIRUN or wants_detail(hc.verbose, list(hc.overrides.task)):
        return False
    for handler in console_handlers():
        handler.setLevel(logging.WARNING)
    return True


class _NoLaunchLines(logging.Filter):
    """Drops the launchers' INFO lines (one per launched job)."""

    def filter(self, record: logging.LogRecord) -> bool:
        launch = record.name.startswith(LAUNCH_LOGGERS)
        return record.levelno >= logging.WARNING or not launch


def interactive(stream: Any = None) -> bool:
    """Whether `stream` (stderr) is a terminal that can draw a bar (not TERM=dumb)."""
    stream = stream or sys.stderr
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) and os.environ.get("TERM") != "dumb"


class SweepConsole:
    """The sweep process's console while its trials run: `trial_done` logs each finished
    trial's line and moves the bar; `close` ends the bar and restores the logging (called by
    the sweep's end, and at exit if the sweep stops early).

    n_trials: the study's total (the bar's; hydra.sweeper.n_trials). verbose: hydra.verbose.
    overrides: the sweep's command-line task overrides (`train.log_every` there keeps the
    launch lines). bar: draw a tqdm bar (default: where stderr is a terminal). done: the
    study's trials that count already (a resumed study's): where the bar starts."""

    def __init__(
        self,
        n_trials: int,
        verbose: Any = False,
        overrides: list[str] | tuple[str, ...] = (),
        bar: bool | None = None,
        done: int = 0,
    ) -> None:
        self.n_trials, self.done = n_trials, done
        self.start = time.perf_counter()
        self.bar: Any = None
        self._stack = contextlib.ExitStack()
        self._filter: logging.Filter | None = None
        if not wants_detail(verbose, overrides):
            self._filter = _NoLaunchLines()
            for handler in console_handlers():
                handler.addFilter(self._filter)
        if interactive() if bar is None else bar:
            from tqdm import tqdm
            from tqdm.contrib.logging import logging_redirect_tqdm

            tqdm.monitor_interval = 0  # no monitor thread: the trials are forked from here
            # a terminal that reports no width (a bare pty) gets 100 columns
            width = shutil.get_terminal_size((100, 24)).columns
            self.bar = tqdm(total=n_trials, initial=min(done, n_trials), unit="trial",
                            ncols=width, desc="sweep",
                            bar_format="{desc} {n_fmt}/{total_fmt} |{bar}| "
                            "[{elapsed}<{remaining}]{postfix}")  # fmt: skip
            # the log lines are written above the bar (tqdm.write), not through it
            self._stack.enter_context(logging_redirect_tqdm())
        atexit.register(self.close)

    def eta(self, n_done: int) -> float:
        """Seconds left at the mean pace so far: elapsed / the trials done since the start *
        trials left."""
        elapsed, since = time.perf_counter() - self.start, n_done - self.done
        return elapsed / since * max(self.n_trials - n_done, 0) if since > 0 else float("nan")

    def trial_done(self, line: str, n_done: int, best: str, logger: logging.Logger) -> None:
        """Log a finished trial's `line` on `logger` and move the bar to `n_done` of n_trials
        with `best` (the best value so far, in words) beside it; without a bar the line ends
        with the ETA."""
        if self.bar is None:
            left = self.eta(n_done)
            if n_done < self.n_trials and left == left:  # not NaN
                line += f"  | eta {_clock(left)}"
            logger.info(line)
            return
        logger.info(line)
        self.bar.set_postfix_str(best, refresh=False)
        self.bar.update(max(0, min(n_done, self.n_trials) - self.bar.n))

    def close(self) -> None:
        """End the bar (its last state stays on screen) and restore the console's logging."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        self._stack.close()
        if self._filter is not None:
            for handler in logging.getLogger().handlers:
                handler.removeFilter(self._filter)
            self._filter = None
        atexit.unregister(self.close)


def _clock(seconds: float) -> str:
    """Seconds as m:ss (h:mm:ss from an hour)."""
    s = round(seconds)
    h, m = divmod(s // 60, 60)
    return f"{h}:{m:02d}:{s % 60:02d}" if h else f"{m}:{s % 60:02d}"
