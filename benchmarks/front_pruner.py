"""The same front sooner? A multi-objective sweep with and without hydra/sweeper/pruner=front.

Runs sweeps one after the other on this machine (base, front, front, base: `--order`), the
same command and seeds but for the pruner (sweep/search/front.py):

  (a) base:  python -m sweep.run -m objective=pareto ...
  (b) front: the same, plus hydra/sweeper/pruner=front

and prints, for each: wall seconds, trials complete and stopped (pruned), and the final front's
hypervolume on validation and on test (sweep/results/points.py front_figures: x =
-log10(weights kept), y = accuracy, reference (0, chance); the front is chosen on validation,
the test set only scores it); then the hypervolumes against wall time (each finished trial:
seconds since the sweep's process started, validation and test hypervolume of the points so
far), and when (b) first reaches (a)'s final validation hypervolume within 1%. The target
(issue 33): (b)'s final hypervolume within 1% of (a)'s on validation and 2% on test, in at most
0.6 of (a)'s wall time.

    python benchmarks/front_pruner.py                        # digits: the default sweep, pareto
    python benchmarks/front_pruner.py --data fashion         # experiment=fashion_frontier
    python benchmarks/front_pruner.py --smoke                # digits, 4 short trials (a check)
    python benchmarks/front_pruner.py -- hydra.sweeper.n_trials=12   # overrides for both arms
    python benchmarks/front_pruner.py -- hydra.sweeper.pruner.margin=0.05   # the front arm only

Each sweep gets a fresh directory and SQLite storage under --out (default a temporary one). The
last line is machine-readable: key=value pairs (the arms' mean wall seconds; the lower
hypervolume of each arm's runs). Timings on a shared machine are noisy: compare the ratio of
the arms of one run, and the load average printed before and after each sweep.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from datetime import datetime
from pathlib import Path

import pandas as pd
import processes

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sweep.results import points  # noqa: E402

DEBIAN = Path("/usr/share/datasets/fashion-mnist")
DATA = {
    "digits": ["objective=pareto"],  # README's sweep (20 TPE trials over l1_lambda), 2 objectives
    "fashion": ["experiment=fashion_frontier", "objective=pareto"],
}
SMOKE = ["objective=pareto", "train.epochs=20", "hydra.sweeper.n_trials=4",
         "hydra.sweeper.pruner.n_startup_trials=1"]  # fmt: skip
ARMS = {"base": [], "front": ["hydra/sweeper/pruner=front"]}


def sweep(out: Path, name: str, args: list[str]) -> tuple[float, float]:
    """Run one sweep in out/name; returns its start (POSIX time) and wall seconds."""
    cwd = out / name
    cwd.mkdir(parents=True)
    cmd = [sys.executable, "-m", "sweep.run", "-m", *args,
           f"hydra.sweeper.study_name={name}", f"hydra.sweeper.storage=sqlite:///{cwd}/o.db",
           f"hydra.sweep.dir={cwd}/sweep"]  # fmt: skip
    print(f"{name}: {' '.join(cmd[1:])}  (load {os.getloadavg()[0]:.1f})", flush=True)
    return processes.timed(cmd, cwd, name=name)


def report(out: Path, name: str, start: float, seconds: float) -> dict:
    """One arm's figures, printed: trials by status, final hypervolumes, and their history."""
    rows = pd.read_csv(out / name / "sweep" / "results.csv")
    pts = pd.read_csv(out / name / "sweep" / points.NAME)
    h = points.history(pts)
    h["wall_s"] = [t.timestamp() - start for t in h["finished"]]
    final = points.front_figures(pts)
    status = rows["status"].value_counts().to_dict()
    stopped = rows[rows["status"] == "pruned"]
    print(
        f"{name}: {seconds:.1f} s wall (load {os.getloadavg()[0]:.1f}), trials {status}; "
        f"hypervolume val {final['hypervolume']:.4f} test {final['test_hypervolume']:.4f}"
    )
    if len(stopped):
        print(f"  stopped at steps {sorted(stopped['stopped_at'].astype(int))}")
    print(f"  {'trial':>5} {'wall_s':>7} {'val_hv':>7} {'test_hv':>7}")
    for r in h.itertuples():
        print(f"  {r.trial:>5} {r.wall_s:>7.1f} {r.hypervolume:>7.4f} {r.test_hypervolume:>7.4f}")
    return {"seconds": seconds, "stopped": len(stopped), "trials": len(rows), "history": h,
            "hv": final["hypervolume"], "test_hv": final["test_hypervolume"]}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=tuple(DATA), default="digits")
    parser.add_argument("--smoke", action="store_true", help="digits, 4 short trials")
    parser.add_argument("--data-root", type=Path, default=DEBIAN, help="Fashion-MNIST IDX dir")
    parser.add_argument("--out", type=Path, help="where the sweeps go (default: a temp dir)")
    parser.add_argument(
        "--order",
        default="base,front,front,base",
        help="the arms in the order run (ABBA: the machine's drift cancels)",
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        help="after --: overrides for both arms (hydra.sweeper.pruner.*: front only)",
    )
    opts = parser.parse_args()
    out = opts.out or Path(tempfile.mkdtemp(prefix="front-pruner-"))
    args = SMOKE if opts.smoke else DATA[opts.data]
    if opts.data == "fashion" and not opts.smoke:
        args = [*args, f"data.root={out / 'data'}", f"data.fallback_dir={opts.data_root}"]
    print(f"{datetime.now():%Y-%m-%d %H:%M} on {os.cpu_count()} CPUs; sweeps in {out}")
    runs: dict[str, list[dict]] = {"base": [], "front": []}
    for i, arm in enumerate(opts.order.split(",")):
        # a pruner option (the smoke run's, or one given after --) needs the pruner chosen:
        # base runs without it
        given = [a for a in [*args, *opts.overrides]
                 if arm == "front" or not a.startswith("hydra.sweeper.pruner.")]  # fmt: skip
        name = f"{arm}{i}"
        start, seconds = sweep(out, name, [*given, *ARMS[arm]])
        runs[arm].append(report(out, name, start, seconds))
    base, front = runs["base"], runs["front"]
    mean = {k: sum(r["seconds"] for r in v) / len(v) for k, v in runs.items()}
    ratio = mean["front"] / mean["base"]
    base_hv = min(r["hv"] for r in base)  # the lower of the base runs: the target to reach
    base_test = min(r["test_hv"] for r in base)
    hv = min(r["hv"] for r in front) / base_hv - 1
    test = min(r["test_hv"] for r in front) / base_test - 1
    reach = []
    for r in front:
        h = r["history"][r["history"]["hypervolume"] >= 0.99 * base_hv]
        reach.append(float(h["wall_s"].iloc[0]) if len(h) else float("nan"))
    stopped = [r["stopped"] for r in front]
    print(f"front/base mean wall time {ratio:.3f} (target <= 0.6); hypervolume val {hv:+.2%} "
          f"(target within 1%), test {test:+.2%} (within 2%); trials stopped {stopped} of "
          f"{front[0]['trials']}; front reaches 99% of base's val hypervolume at "
          f"{[round(s, 1) for s in reach]} s = {[round(s / mean['base'], 3) for s in reach]} "
          f"of base's mean wall time")  # fmt: skip
    figures = {"base_s": mean["base"], "front_s": mean["front"], "ratio": ratio,
               "base_hv": base_hv, "front_hv": min(r["hv"] for r in front),
               "base_test_hv": base_test, "front_test_hv": min(r["test_hv"] for r in front),
               "stopped": sum(stopped) / len(stopped),
               "reach_ratio": max(reach) / mean["base"]}  # fmt: skip
    print(" ".join(f"{k}={v:.4f}" for k, v in figures.items()))


if __name__ == "__main__":
    main()
