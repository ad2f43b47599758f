"""Ctrl-C in the sweep process: raised where the sweep can handle it, and never lost.

Python raises KeyboardInterrupt wherever the main thread is when the signal is handled. Inside
an at-fork hook, a weakref callback or a __del__, it is printed as 'Exception ignored' and
dropped, and the sweep would go on to its last trial (seen in logging's at-fork hook, which runs
after every forked trial, and in SQLAlchemy's weakref callbacks). So the handler also records
the interrupt, and the sweep's loop raises it again at its next check.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

_pending = threading.Event()  # a Ctrl-C the sweep has not handled yet


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    _pending.set()
    raise KeyboardInterrupt


@contextlib.contextmanager
def handled() -> Iterator[None]:
    """Ctrl-C during the block raises KeyboardInterrupt as usual, and check() raises it again
    until clear(). A process started with SIGINT ignored (a shell's background job) keeps it so."""
    _pending.clear()
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield
        return
    signal.signal(signal.SIGINT, _on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def check() -> None:
    """On the main thread, raise KeyboardInterrupt if a Ctrl-C came that the sweep has not
    handled (other threads leave it to the main one, as Python does)."""
    if _pending.is_set() and threading.current_thread() is threading.main_thread():
        raise KeyboardInterrupt


def clear() -> None:
    """The Ctrl-C is being handled: check() raises no more for it."""
    _pending.clear()


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold Ctrl-C until the block is done (steps that must not be cut in half), then raise it."""
    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or not callable(previous):
        yield  # off the main thread, which alone gets signals; or Ctrl-C ignored, or fatal
        return
    came: list[int] = []
    signal.signal(signal.SIGINT, lambda signum, frame: came.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if came:
        if previous is _on_sigint:
            _pending.set()
        raise KeyboardInterrupt
