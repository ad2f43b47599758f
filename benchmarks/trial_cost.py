"""What one more trial costs beyond its training (issue 33), and where it goes.

1. The marginal cost, whole processes timed: a sweep of N and one of 2 one-epoch digits
   trials, one trial at a time (`hydra.sweeper.n_jobs=1`, the default fork launcher), give
   (T_N - T_2) / (N - 2) a trial; less the extra trials' training (results.csv's
   `train_seconds`) that is the framework's cost of a trial. Three ways, so they share the
   machine's load:
   (a) l1sweep with every storage write its own commit, SQLite's default journal (an fsync a
       commit) and every job's config composed by Hydra (`L1SWEEP_BATCH_WRITES=0
       L1SWEEP_SQLITE_WAL=0 L1SWEEP_COMPOSE_ONCE=0 L1SWEEP_BULK_ATTRS=0`: issue 33's switches
       off),
   (b) l1sweep as it is,
   (c) the stock hydra-optuna-sweeper (basic launcher, the same SQLite storage) running a task
       that trains nothing (benchmarks/seed_task/empty.py): a Hydra sweep's own floor;
   (d) only where --ways names it (`threads1`): (b) with `train.threads=1`. With n_jobs=1 a
       trial's torch uses every core; on a machine other processes keep busy, its threads
       wait for each other, in training and in the job's measuring alike (issue 33's notes).
   (e) only where --ways names it (`attrs1`): (b) with a trial's attributes written one by
       one through Optuna (`L1SWEEP_BULK_ATTRS=0`), the switch of sweep/_compat/rdb.py's
       two-statement write, so that its gain is measured in the same run.
   `--repeats R` runs every way's pair of sweeps R times, the ways in turn (a, b, c, then c,
   b, a, ...); each figure is the median of the R pairs' (one pair's T_N - T_2 is a few
   seconds, which another process's burst can double), and the pairs' range is printed.
2. Where it goes, each piece timed alone in this process (median of 5): a trial's storage
   writes by the sweep loop (TrialLoop.ask: the ask, one parameter drawn, the claim; the row
   with its figures and curve and the tell) on an SQLite file, one commit each in SQLite's
   default journal against batched in WAL mode, with their COMMIT counts, and batched with the
   row's attributes written one by one (`L1SWEEP_BULK_ATTRS=0`); a trial's config
   composed by Hydra's compose API (the project's config and a trial's overrides, as the
   launcher composes each job); results.csv and points.csv rewritten from a study of N
   trials (by the plan's ResultFiles, which built the earlier trials' rows once); a forked
   process that returns at once (the fork launcher's start and join); and a
   job's own cost beyond its training (`job.run` of a 1-epoch digits trial less its
   `train_seconds`: the configuration's check and build, the final measures, the callbacks'
   files, of which the archive model.l1z, written and read back); and the archive's two
   searches before issue 33 and now, on that trial's model: layouts chosen by the full codec
   search or by an estimate (ms of `encode`, the archive's bytes), k-means by each value or
   by the sorted values' runs.

    python benchmarks/trial_cost.py                        # N = 42, 3 repeats
    python benchmarks/trial_cost.py --trials 22 --repeats 1 # quicker, noisier
    python benchmarks/trial_cost.py --only 1 --ways l1sweep,stock

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
BEFORE = {"L1SWEEP_BATCH_WRITES": "0", "L1SWEEP_SQLITE_WAL": "0", "L1SWEEP_COMPOSE_ONCE": "0",
          "L1SWEEP_BULK_ATTRS": "0"}  # fmt: skip
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))  # the row a 1-epoch digits trial returns


def run(cwd: Path, args: list[str], env: dict[str, str] | None = None) -> float:
    """Seconds the whole process took; its output kept in cwd/log.txt."""
    cwd.mkdir(parents=True)
    return processes.timed(args, cwd, env)[1]


def l1sweep(cwd: Path, n: int, env: dict[str, str], *extra: str) -> tuple[float, float]:
    """(wall seconds, summed training seconds) of an n-trial 1-epoch digits sweep."""
    args = [sys.executable, "-m", "sweep.run", "-m", "hydra.sweeper.study_name=b",
            f"hydra.sweeper.n_trials={n}", "train.epochs=1", "hydra.sweeper.n_jobs=1",
            *extra]  # fmt: skip
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


WAYS = {
    "before": "(a) l1sweep before (commits, compose)",
    "l1sweep": "(b) l1sweep as it is",
    "stock": "(c) stock sweeper, empty task",
    "threads1": "(d) l1sweep, train.threads=1",
    "attrs1": "(e) l1sweep, attributes one by one",
}


def pair(tmp: Path, key: str, n: int) -> tuple[float, float, float, float]:
    """One way's (T_2, T_n, training seconds of the 2, of the n) in folders of their own."""
    way: Callable[[Path, int], tuple[float, float]] = {
        "before": lambda cwd, k: l1sweep(cwd, k, BEFORE),
        "l1sweep": lambda cwd, k: l1sweep(cwd, k, {}),
        "stock": stock,
        "threads1": lambda cwd, k: l1sweep(cwd, k, {}, "train.threads=1"),
        "attrs1": lambda cwd, k: l1sweep(cwd, k, {"L1SWEEP_BULK_ATTRS": "0"}),
    }[key]
    wall_2, train_2 = way(tmp / "2", 2)
    wall_n, train_n = way(tmp / str(n), n)
    return wall_2, wall_n, train_2, train_n


def marginal(tmp: Path, n: int, repeats: int, ways: list[str]) -> dict[str, float]:
    """The ways' marginal cost of a trial: each way's pair of sweeps `repeats` times, the ways
    in turn (reversed every other repeat); the median of the pairs' figures."""
    how = f", median of {repeats} pairs a way, the ways in turn" if repeats > 1 else ""
    print(f"1. marginal cost of a trial: (T_{n} - T_2) / {n - 2}, 1-epoch digits, n_jobs=1{how}")
    runs: dict[str, list[tuple[float, float, float, float]]] = {k: [] for k in ways}
    for r in range(repeats):
        for key in ways if r % 2 == 0 else ways[::-1]:
            runs[key].append(pair(tmp / f"{key}_{r}", key, n))
    figures = {}
    for key in ways:
        med = statistics.median
        per_trial = [(w_n - w_2) / (n - 2) for w_2, w_n, _, _ in runs[key]]
        framework = [(w_n - w_2 - t_n + t_2) / (n - 2) for w_2, w_n, t_2, t_n in runs[key]]
        wall_2, wall_n = med(r[0] for r in runs[key]), med(r[1] for r in runs[key])
        training = med(per_trial) - med(framework)
        spread = f"  (pairs: {min(framework):.3f}-{max(framework):.3f})" if repeats > 1 else ""
        print(f"  {WAYS[key]:38s} T_2 {wall_2:5.1f} s  T_{n} {wall_n:5.1f} s"
              f"  -> {med(per_trial):.3f} s a trial = training {training:.3f} s"
              f" + framework {med(framework):.3f} s{spread}")  # fmt: skip
        figures[f"{key}_per_trial_s"] = med(per_trial)
        figures[f"{key}_overhead_s"] = med(framework)
    if "l1sweep" in ways and "stock" in ways:
        above = figures["l1sweep_overhead_s"] - figures["stock_overhead_s"]
        print(f"  (b) above the stock floor (c): {above:.3f} s a trial")
        figures["above_stock_s"] = above
    return figures


def median_of(fn: Callable[[], object], repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def storage_writes(
    tmp: Path, n: int, batched: bool, bulk: bool | None = None
) -> tuple[float, float, int, object]:
    """(median seconds of one trial's storage writes by the sweep loop, TrialLoop.ask and its
    record and tell, of rewriting results.csv and points.csv from the study's n trials, the
    COMMITs of a trial, the study). `bulk`: the row's attributes in one statement (default:
    as `batched`)."""
    import optuna
    from optuna.trial import TrialState
    from sqlalchemy import event
    from test_storage_commits import CURVE, ROW, _plan

    from sweep import _compat
    from sweep.search.launcher import ForkLauncher
    from sweep.search.loop import TrialLoop
    from sweep.search.study import ResultFiles

    _compat.BATCH_WRITES["on"] = _compat.SQLITE_WAL["on"] = batched
    _compat.BULK_ATTRS["on"] = batched if bulk is None else bulk
    name = ("batched" if batched else "plain") + ("" if bulk in (None, batched) else "_attrs1")
    rdb = optuna.storages.RDBStorage(f"sqlite:///{tmp}/{name}.db")
    held = _compat.get_storage(rdb)
    study = optuna.create_study(storage=held, direction="maximize")
    study.held = held
    commits: list[int] = []
    # COMMITs with writes in them (Optuna commits its read-only sessions too)
    event.listen(
        rdb.engine, "commit", lambda c: commits.append(c.connection.dbapi_connection.in_transaction)
    )
    folder = tmp / f"loop_{name}"
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
    files = ResultFiles(folder / "results.csv")  # the loop's: each trial's row built once
    files.write(study)
    rewrite = median_of(lambda: files.write(study))
    _compat.BATCH_WRITES["on"] = _compat.SQLITE_WAL["on"] = _compat.BULK_ATTRS["on"] = True
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


def job_seconds(tmp: Path) -> tuple[float, float]:
    """Median (seconds of `job.run` of a 1-epoch digits trial less its train_seconds, the
    same without the archive callback): what a job costs beyond its training, in this process
    (as a forked job finds it: the data placed and the modules imported by a first run)."""
    import warnings

    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    import sweep.run  # noqa: F401  (registers the project's config schema)
    from sweep.task import job

    warnings.simplefilter("ignore")
    runs = iter(range(1000))

    def beyond(overrides: list[str]) -> float:
        with initialize_config_dir(config_dir=str(REPO / "conf"), version_base=None):
            cfg = compose("config", ["train.epochs=1", *overrides], return_hydra_config=True)
        choices = dict(cfg.hydra.runtime.choices)
        task = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
        job.run(task, tmp / f"job_{next(runs)}", choices)  # the first: placed, imported
        times = []
        for _ in range(5):
            start = time.perf_counter()
            row = job.run(task, tmp / f"job_{next(runs)}", choices)
            times.append(time.perf_counter() - start - row["train_seconds"])
        return statistics.median(times)

    return beyond([]), beyond(["~callbacks.archive"])


def _nothing() -> None:
    pass


def fork_seconds() -> float:
    context = multiprocessing.get_context("fork")

    def once() -> None:
        child = context.Process(target=_nothing)
        child.start()
        child.join()

    return median_of(once)


def archive_pieces(trained: Path) -> dict[str, float]:
    """The archive's two searches, before issue 33 and now, on a 1-epoch digits trial's model
    (`trained`, its model.pt: 64-128-10), as trained and with 90% of each weight (the smallest)
    zeroed: a layer's layout chosen by the full codec search or by `_estimated_size` (seconds
    of `encode`, the archive's bytes), and fc1's k-means (8,192 weights, 32 centroids) by each
    value or by the sorted values' runs."""
    import torch
    from test_export import lloyd_per_value

    from sweep.deploy import archive, codebook
    from sweep.models import builtin

    model = builtin.mlp(64, 10, [128])
    model.load_state_dict(torch.load(trained))
    weights = model.fc1.weight.detach().numpy().ravel().copy()
    arch = {"_target_": "sweep.models.mlp", "hidden": [128], "n_inputs": 64, "n_classes": 10}
    estimate = archive._estimated_size
    out = {}
    for zeros in (0.0, 0.9):
        with torch.no_grad():
            for layer in (model.fc1, model.fc2):
                w = layer.weight
                w.mul_(w.abs() > w.abs().flatten().quantile(zeros)) if zeros else None
        shared = codebook.quantize(model, 5)
        for way, size in (("full", lambda raw: len(min(archive._candidates(raw), key=len))),
                          ("estimate", estimate)):  # fmt: skip
            archive._estimated_size = size
            out[f"encode_{way}_{zeros}_s"] = median_of(lambda m=shared: archive.encode(m, 5, arch))
            out[f"bytes_{way}_{zeros}"] = len(archive.encode(shared, 5, arch))
        archive._estimated_size = estimate
        print(f"  archive of the trained digits MLP, {zeros:.0%} zeros: layouts by the full codec"
              f" search {out[f'encode_full_{zeros}_s'] * 1e3:.1f} ms, {out[f'bytes_full_{zeros}']}"
              f" B -> by the estimate {out[f'encode_estimate_{zeros}_s'] * 1e3:.1f} ms,"
              f" {out[f'bytes_estimate_{zeros}']} B")  # fmt: skip
    out["kmeans_before_s"] = median_of(lambda: lloyd_per_value(weights, 32))
    out["kmeans_s"] = median_of(lambda: codebook.kmeans_1d(weights, 32))
    print(f"  k-means of fc1's 8,192 weights, 32 centroids: each value assigned"
          f" {out['kmeans_before_s'] * 1e3:.1f} ms -> the sorted values' runs"
          f" {out['kmeans_s'] * 1e3:.1f} ms")  # fmt: skip
    return out


def where(tmp: Path, n: int) -> dict[str, float]:
    print("2. where it goes, each piece alone in this process (median of 5):")
    plain, _, plain_commits, _ = storage_writes(tmp, n, batched=False)
    batched, rewrite, batched_commits, _ = storage_writes(tmp, n, batched=True)
    attrs1, _, _, _ = storage_writes(tmp, 2, batched=True, bulk=False)
    print(f"  a trial's storage writes, SQLite: {plain:.3f} s in {plain_commits} commits (before)"
          f" -> {batched:.3f} s in {batched_commits} commits ({attrs1:.3f} s with the row's"
          f" attributes one by one, L1SWEEP_BULK_ATTRS=0)")  # fmt: skip
    print(f"  results.csv and points.csv rewritten from {n} trials: {rewrite:.3f} s")
    composed, copied = compose_seconds()
    print(f"  a trial's job config: composed by Hydra {composed:.3f} s (before)"
          f" -> copied from the sweep's first {copied:.3f} s")  # fmt: skip
    forked = fork_seconds()
    print(f"  a forked process started and joined: {forked:.3f} s")
    job_s, no_archive = job_seconds(tmp)
    archive = job_s - no_archive
    print(f"  a job beyond its training (job.run less train_seconds): {job_s:.3f} s, of"
          f" which the archive (model.l1z written, read back, scored) {archive:.3f} s")  # fmt: skip
    pieces = archive_pieces(tmp / "job_1" / "model.pt")
    return {"storage_before_s": plain, "storage_s": batched, "storage_attrs1_s": attrs1,
            "commits_before": plain_commits,
            **pieces, "commits": batched_commits, "csv_s": rewrite, "compose_before_s": composed,
            "compose_s": copied, "fork_s": forked, "job_s": job_s,
            "archive_s": archive}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=42, help="N, the larger sweep (> 2)")
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="pairs of sweeps a way (part 1), in turn; the median is reported",
    )
    parser.add_argument(
        "--ways",
        default="before,l1sweep,stock",
        help="part 1's ways, of before,l1sweep,stock,threads1,attrs1",
    )
    parser.add_argument("--only", type=int, choices=(1, 2), help="run part 1 or part 2 only")
    a = parser.parse_args()
    ways = a.ways.split(",")
    if a.trials <= 2 or a.repeats < 1 or not ways or not set(ways) <= WAYS.keys():
        parser.error("--trials > 2, --repeats >= 1, --ways of " + ",".join(WAYS))
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    print(f"{len(os.sched_getaffinity(0))} cores, load average {os.getloadavg()[0]:.1f}")
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        if a.only in (None, 1):
            figures.update(marginal(Path(tmp), a.trials, a.repeats, ways))
        if a.only in (None, 2):
            figures.update(where(Path(tmp), a.trials))
    print(" ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                   for k, v in figures.items()))  # fmt: skip


if __name__ == "__main__":
    main()
