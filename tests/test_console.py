"""The sweep's console (sweep/search/console.py): a line per trial, a bar on a terminal, the
epochs in each trial's run.log; real sweeps on digits."""

import fcntl
import logging
import os
import pty
import struct
import subprocess
import sys
import termios

import pytest

from sweep.search.console import SweepConsole, wants_detail


def run_on_terminal(cwd, *args: str) -> str:
    """`python -m sweep.run ARGS` with stdout and stderr on a pseudo-terminal (120 columns), as
    an interactive user runs it; returns what the terminal received."""
    main, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    env = {**os.environ, "TERM": "xterm", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen([sys.executable, "-m", "sweep.run", *args], cwd=cwd, stdin=child,
                            stdout=child, stderr=child, env=env)  # fmt: skip
    os.close(child)
    out = b""
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:  # the child side closed: Linux's EIO
            break
        if not chunk:
            break
        out += chunk
    os.close(main)
    assert proc.wait(timeout=300) == 0, out.decode()
    return out.decode()


@pytest.mark.slow
def test_on_a_terminal_a_bar_counts_the_trials_and_log_every_brings_the_epochs_back(tmp_path):
    out = run_on_terminal(tmp_path, "-m", "hydra.sweeper.n_trials=2", "train.epochs=2",
                          "train.log_every=1", "hydra.sweeper.study_name=tty")  # fmt: skip
    # the bar, redrawn in place (carriage returns), ends at 2/2 with the best value beside it
    assert "\rsweep 2/2 |" in out and "best: trial" in out.split("\rsweep 2/2 |")[-1]
    assert "\rsweep 0/2 |" in out
    # train.log_every given: every trial's epochs on the console again (2 trials x 2 epochs)
    lines = out.replace("\r\n", "\n").split("\n")
    assert sum("epoch 2/2" in ln for ln in lines) == 2
    assert sum("epoch 1/2" in ln for ln in lines) == 2
    # and the launch lines (one per trial) too
    assert sum(" : l1_lambda=" in ln for ln in lines) == 2


def test_without_a_terminal_each_trial_line_ends_with_the_eta_and_no_bar(caplog):
    console = SweepConsole(3, bar=False)
    log = logging.getLogger("sweep.test_console")
    with caplog.at_level(logging.INFO):
        console.start -= 60.0  # one minute into the sweep
        console.trial_done("trial 0 [1/3] complete", 1, "best: trial 0 0.9", log)
        console.trial_done("trial 2 [3/3] complete", 3, "best: trial 0 0.9", log)
        console.close()
    first, last = [r.getMessage() for r in caplog.records]
    # 60 s for the first trial: 2 left at that pace is 2:00
    assert first.startswith("trial 0 [1/3] complete  | eta 2:0") and "\r" not in first
    assert last == "trial 2 [3/3] complete"  # the last one has nothing left to wait for
    assert console.bar is None


def test_detail_comes_back_with_hydra_verbose_or_train_log_every():
    assert not wants_detail(False, ["l1_lambda=1e-4", "train.epochs=3"])
    assert wants_detail(True, [])
    assert wants_detail(["sweep.training.train"], [])
    assert wants_detail(False, ["train.log_every=10"])
    assert wants_detail(False, ["+train.log_every=10"])


def test_a_trials_line_shows_the_parameters_the_sweep_searches():
    from sweep.search.loop import searched

    row = {"overrides": "bn_lambda=0.0031 'prune.sparsity=0.5' train.threads=1", "l1_lambda": 0.0}
    # a sweep over bn_lambda shows bn_lambda, not the row's l1_lambda of 0
    assert searched(row, ("bn_lambda", "prune.sparsity")) == "bn_lambda=0.0031  prune.sparsity=0.5"
    default = {"overrides": "l1_lambda=0.00012520653814999459 train.threads=1"}
    assert searched(default, ("l1_lambda",)) == "l1_lambda=0.000125"  # the README's line
    assert searched({"overrides": "", "regularizer": "l1"}, ("regularizer",)) == "regularizer=l1"
