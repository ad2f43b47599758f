"""Ctrl-C that Python drops (raised inside a finalizer) still stops the sweep's loop."""

from __future__ import annotations

import gc
import signal
import time

import pytest

from sweep.search import interrupts, parallel

# the dropped Ctrl-C is what these tests make happen
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


class _Swallows:
    """Gets Ctrl-C while Python runs its finalizer: Python prints 'Exception ignored' and drops
    it, as it does inside an at-fork hook or a weakref callback."""

    def __del__(self) -> None:
        signal.raise_signal(signal.SIGINT)


@pytest.fixture(autouse=True)
def _default_sigint():
    # a pytest worker may run with SIGINT ignored; a terminal's process has Python's handler
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def _swallow() -> None:
    _Swallows()  # finalized at once
    gc.collect()


def test_python_alone_loses_a_ctrl_c_raised_in_a_finalizer():
    _swallow()  # no KeyboardInterrupt: why sweep.search.interrupts exists
    interrupts.check()  # and nothing recorded outside handled()


def test_a_dropped_ctrl_c_is_raised_at_the_next_check():
    with interrupts.handled():
        _swallow()
        with pytest.raises(KeyboardInterrupt):
            interrupts.check()
        with pytest.raises(KeyboardInterrupt):
            interrupts.check()  # until handled
        interrupts.clear()
        interrupts.check()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_deferred_holds_ctrl_c_to_the_end_of_the_block():
    done = []
    with interrupts.handled():
        with pytest.raises(KeyboardInterrupt):
            with interrupts.deferred():
                signal.raise_signal(signal.SIGINT)
                done.append("rest of the block")
        assert done == ["rest of the block"]
        with pytest.raises(KeyboardInterrupt):
            interrupts.check()


def test_ignored_ctrl_c_stays_ignored():
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a shell's background job
    with interrupts.handled():
        with interrupts.deferred():
            signal.raise_signal(signal.SIGINT)
        interrupts.check()


@pytest.mark.parametrize("jobs", [1, 2])
def test_the_loop_stops_on_a_dropped_ctrl_c(jobs):
    running: list[int] = []
    numbers = iter(range(10))
    told: list[int] = []

    def ask() -> int:
        running.append(next(numbers))
        return running[-1]

    def launch(n: int):
        if n == 1:
            _swallow()  # on the main thread, as a fork's at-fork hooks run

        def wait() -> int:
            end = time.perf_counter() + (5.0 if n == 1 and jobs == 2 else 0.2)
            while time.perf_counter() < end:  # a trial in a thread or process
                time.sleep(0.01)
            return n

        return wait

    t0 = time.perf_counter()
    with interrupts.handled(), pytest.raises(KeyboardInterrupt):
        parallel.run(10, jobs, ask, launch, lambda n, r: told.append(n) or True, running)
    # stopped without waiting for the 5 s trial, and asked no trial after the interrupt
    assert time.perf_counter() - t0 < 2.0
    if jobs == 1:  # the trial ran on; the loop stopped before the next
        assert told == [0, 1] and running == []
    else:
        assert told == [0] and running == [1]  # trial 1 left for the caller to fail
