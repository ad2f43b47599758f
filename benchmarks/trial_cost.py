"""What one more trial costs beyond its training (issue 33), and where it goes.

1. The marginal cost, whole processes timed: a sweep of N and one of 2 one-epoch digits
   trials, one trial at a time (`hydra.sweeper.n_jobs=1`, the default fork launcher), give
   (T_N - T_2) / (N - 2) a trial; less the extra trials' training (results.csv's
   `train_seconds`) that is the framework's cost of a trial. Three ways, back to back, so they
   share the machine's load:
   (a) l1sweep with every storage write its own commit and every job's config composed by
       Hydra (`L1SWEEP_BATCH_WRITES=0 L1SWEEP_COMPOSE_ONCE=0`: how it ran a trial before
       issue 33),
   (b) l1sweep as it is,
   (c) the stock hydra-optuna-sweeper (basic launcher, the same SQLite storage) running a task
       that trains nothing (benchmarks/seed_task/empty.py): a Hydra sweep's own floor.
2. Where it goes, each piece timed alone in this process (median of 5): a trial's storage
   writes by the sweep loop (TrialLoop.ask: the ask, one parameter drawn, the claim; the row
   with its figures and curve, the tell) on an SQLite file, one commit each against batched,
   with their COMMIT counts; a trial's config
   composed by Hydra's compose API (the project's config and a trial's overrides, as the
   launcher composes each job); results.csv and points.csv rewritten from a study of N
   trials; a forked process that returns at once (the fork launcher's start and join).

    python benchmarks/trial_cost.py              # N = 20
    python benchmarks/trial_cost.py --trials 12  # quicker, noisier

The last line is machine-readable: key=value pairs.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import processes

REPO = Path(__file__).resolve().parents[1]
BEFORE = {"L1SWEEP_BATCH_WRITES": "0", "L1SWEEP_COMPOSE_ONCE": "0"}  # issue 33's switches off
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))  # the row a 1-epoch digits trial returns


def run(cwd: Path, args: list[str], env: dict[str, str] | None = None) -> float:
    """Seconds the whole process took; its output kept in cwd/log.txt."""
    cwd.mkdir(parents=True)
    return processes.timed(args, cwd, env)[1]


def l1sweep(cwd: Path, n: int, env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, summed training seconds) of an n-trial 1-epoch digits sweep."""
    args = [sys.executable, "-m", "sweep.run", "-m", "hydra.sweeper.study_name=b",
            f"hydra.sweeper.n_trials={n}", "train.epochs=1", "hydra.sweeper.n_jobs=1"]  # fmt: skip
    wall = run(cwd, args, env)
    results = pd.read_csv(cwd / "outputs" / "sweeps" / "b" / "results.csv")
    assert len(results) == n, f"{len(results)} rows of {n}"
    return wall, float(results["train_seconds"].sum())


def stock(cwd: Path, n: int) -> tuple[float, float]:
    args = [sys.executable, str(REPO / "benchmarks" / "seed_task" / "empty.py"), "-m",
            f"hydra.sweeper.n_trials={n}", "hydra.sweeper.n_jobs=1",
            f"hydra.sweeper.storage=sqlite:///{cwd}/stock.db",
            f"hydra.sweep.dir={cwd}/multirun"]  # fmt: skip
    return run(cwd, args), 0.0


def marginal(tmp: Path, n: int) -> dict[str, float]:
    ways: dict[str, Callable[[Path, int], tuple[float, float]]] = {
        "before": lambda cwd, k: l1sweep(cwd, k, BEFORE),
        "l1sweep": lambda cwd, k: l1sweep(cwd, k, {}),
        "stock": stock,
    }
    names = {"before": "(a) l1sweep before (commits, compose)",
             "l1sweep": "(b) l1sweep as it is",
             "stock": "(c) stock sweeper, empty task"}  # fmt: skip
    print(f"1. marginal cost of a trial: (T_{n} - T_2) / {n - 2}, 1-epoch digits, n_jobs=1")
    figures = {}
    for key, way in ways.items():
        wall_2, train_2 = way(tmp / f"{key}_2", 2)
        wall_n, train_n = way(tmp / f"{key}_{n}", n)
        per_trial = (wall_n - wall_2) / (n - 2)
        training = (train_n - train_2) / (n - 2)
        print(f"  {names[key]:38s} T_2 {wall_2:5.1f} s  T_{n} {wall_n:5.1f} s"
              f"  -> {per_trial:.3f} s a trial = training {training:.3f} s"
              f" + framework {per_trial - training:.3f} s")  # fmt: skip
        figures[f"{key}_per_trial_s"] = per_trial
        figures[f"{key}_overhead_s"] = per_trial - training
    return figures


def median_of(fn: Callable[[], object], repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def storage_writes(tmp: Path, n: int, batched: bool) -> tuple[float, float, int, object]:
    """(median seconds of one trial's storage writes by the sweep loop, TrialLoop.ask and its
    record and tell, of rewriting results.csv and points.csv from the study's n trials, the
    COMMITs of a trial, the study)."""
    import optuna
    from optuna.trial import TrialState
    from sqlalchemy import event
    from test_storage_commits import CURVE, ROW, _plan

    from sweep import _compat
    from sweep.search.launcher import ForkLauncher
    from sweep.search.loop import TrialLoop
    from sweep.search.study import write_csv

    _compat.BATCH_WRITES["on"] = batched
    rdb = optuna.storages.RDBStorage(f"sqlite:///{tmp}/{'batched' if batched else 'plain'}.db")
    held = _compat.get_storage(rdb)
    study = optuna.create_study(storage=held, direction="maximize")
    study.held = held
    commits: list[int] = []
    # COMMITs with writes in them (Optuna commits its read-only sessions too)
    event.listen(
        rdb.engine, "commit", lambda c: commits.append(c.connection.dbapi_connection.in_transaction)
    )
    folder = tmp / f"loop_{batched}"
    folder.mkdir()
    loop = TrialLoop(_plan(study, folder, n_trials=10**6), ForkLauncher())

    def one_trial() -> None:
        trial = loop.ask()
        row = {**ROW, "trial": trial.number}
        loop._record(trial, row, TrialState.COMPLETE, [row["val_acc"]], CURVE)

    seconds = median_of(one_trial)
    commits.clear()
    one_trial()
    n_commits = sum(commits)
    while len(study.trials) < n:
        one_trial()
    rewrite = median_of(lambda: write_csv(study, folder / "results.csv"))
    _compat.BATCH_WRITES["on"] = True
    return seconds, rewrite, n_commits, study


def compose_seconds() -> tuple[float, float]:
    """Median seconds of a trial's job config composed by Hydra (its config loader's
    `load_sweep_config`, as the launcher composed each job) and copied from the sweep's first
    (sweep/search/compose.py, as it does now)."""
    import warnings

    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode

    import sweep.run  # noqa: F401  (registers the project's config schema and sweeper)
    from sweep.search.compose import Composer

    warnings.simplefilter("ignore")
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base=None):
        loader = GlobalHydra.instance().config_loader()
        master = loader.load_configuration("config", ["train.epochs=1"], RunMode.MULTIRUN)
        composer = Composer(loader, master)
        trial = iter(range(1000))

        def overrides() -> list[str]:
            i = next(trial)
            return [f"l1_lambda={1e-5 * (i + 1)}", "train.epochs=1",
                    f"hydra.sweep.subdir=trial_{i}"]  # fmt: skip

        hydra = median_of(lambda: loader.load_sweep_config(master, overrides()))
        composer.config(overrides())
        composer.config(overrides())  # the template, then the check
        copied = median_of(lambda: composer.config(overrides()))
        assert composer.checked and composer.composed == 2
        return hydra, copied


def _nothing() -> None:
    pass


def fork_seconds() -> float:
    context = multiprocessing.get_context("fork")

    def once() -> None:
        child = context.Process(target=_nothing)
        child.start()
        child.join()

    return median_of(once)


def where(tmp: Path, n: int) -> dict[str, float]:
    print("2. where it goes, each piece alone in this process (median of 5):")
    plain, _, plain_commits, _ = storage_writes(tmp, n, batched=False)
    batched, rewrite, batched_commits, _ = storage_writes(tmp, n, batched=True)
    print(f"  a trial's storage writes, SQLite: {plain:.3f} s in {plain_commits} commits (before)"
          f" -> {batched:.3f} s in {batched_commits} commits")  # fmt: skip
    print(f"  results.csv and points.csv rewritten from {n} trials: {rewrite:.3f} s")
    composed, copied = compose_seconds()
    print(f"  a trial's job config: composed by Hydra {composed:.3f} s (before)"
          f" -> copied from the sweep's first {copied:.3f} s")  # fmt: skip
    forked = fork_seconds()
    print(f"  a forked process started and joined: {forked:.3f} s")
    return {"storage_before_s": plain, "storage_s": batched, "commits_before": plain_commits,
            "commits": batched_commits, "csv_s": rewrite, "compose_before_s": composed,
            "compose_s": copied, "fork_s": forked}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20, help="N, the larger sweep (> 2)")
    parser.add_argument("--only", type=int, choices=(1, 2))
    a = parser.parse_args()
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    print(f"{len(os.sched_getaffinity(0))} cores, load average {os.getloadavg()[0]:.1f}")
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        if a.only in (None, 1):
            figures.update(marginal(Path(tmp), a.trials))
        if a.only in (None, 2):
            figures.update(where(Path(tmp), a.trials))
    print(" ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                   for k, v in figures.items()))  # fmt: skip


if __name__ == "__main__":
    main()
