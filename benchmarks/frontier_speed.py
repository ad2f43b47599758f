"""The Fashion-MNIST front in less wall time: plain trials against paths.

Runs, one after the other in this process's machine, with the same launcher settings:

  (a) `python -m sweep.run -m experiment=fashion_frontier`: 30 multi-objective TPE trials over
      (l1_lambda, prune.sparsity), each of whose final model is one point;
  (b) `python -m sweep.run -m experiment=fashion_path`: TPE trials over (l1_lambda,
      prune.epochs), each walking the path 0.5, 0.8, ..., 0.99 and measuring a point per level.

For each sweep it prints, at each finished trial, the seconds since the sweep's process
started and the hypervolume of the front of all points so far (sweep/results/hypervolume.py: x =
-log10(weights kept), y = validation accuracy, reference (0, 0.1)), and the test-accuracy
hypervolume of that front's points (chosen on validation). The target: (b) reaches (a)'s final
validation hypervolume in at most a third of (a)'s wall time, and (b)'s final front's test
hypervolume is not lower than (a)'s. Because (b)'s path reaches 0.99, where (a)'s interval
ends and its trials rarely land, the hypervolumes with x capped at (a)'s sparsest front point
are printed too (what (b) gains beyond it left out).

    python benchmarks/frontier_speed.py                   # the full run (about 20 min idle)
    python benchmarks/frontier_speed.py --data digits     # the same sweeps on digits
    python benchmarks/frontier_speed.py --smoke           # digits, tiny sweeps (a test)

Each sweep gets a fresh directory and SQLite storage under --out (default a temporary one);
the Fashion-MNIST IDX files are read from --data-root (the Debian package's). The last line is
machine-readable: key=value pairs.
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
from sweep.results.hypervolume import kept_axis  # noqa: E402

DEBIAN = Path("/usr/share/datasets/fashion-mnist")
# one trial at a time, one torch thread: the setting docs/results.md's 12.8 minutes were timed in
LAUNCH = ["hydra.sweeper.n_jobs=1", "train.threads=1", "train.log_every=100"]
# the path sweep first: it pays for unpacking the data set the frontier sweep then finds
FULL = {
    "path": ["experiment=fashion_path"],
    "frontier": ["experiment=fashion_frontier"],
}
SMOKE = {  # digits, a few epochs: the same two kinds of sweep, in seconds
    "path": ["prune=magnitude", "objective=path_hypervolume", "train.epochs=2",
             "optimizer.lr=0.1", "prune.path=[0.5,0.9]", "prune.epochs=1",
             "hydra.sweeper.n_trials=1"],
    "frontier": ["prune=magnitude", "objective=pareto", "train.epochs=2", "optimizer.lr=0.1",
                 "prune.rounds=1", "prune.epochs=1", "hydra.sweeper.n_trials=2",
                 "prune.sparsity=interval(0.5, 0.95)"],
}  # fmt: skip


def sweep(out: Path, name: str, args: list[str]) -> tuple[float, float, pd.DataFrame]:
    """Run one sweep in out/name; returns its start (POSIX time), wall seconds and points."""
    cwd = out / name
    cwd.mkdir(parents=True)
    cmd = [sys.executable, "-m", "sweep.run", "-m", *args, *LAUNCH,
           f"hydra.sweeper.study_name={name}", f"hydra.sweeper.storage=sqlite:///{cwd}/o.db",
           f"hydra.sweep.dir={cwd}/sweep"]  # fmt: skip
    print(f"{name}: {' '.join(cmd[1:])}", flush=True)
    start, seconds = processes.timed(cmd, cwd, name=name)
    return start, seconds, pd.read_csv(cwd / "sweep" / points.NAME)


def curve(frame: pd.DataFrame, start: float) -> pd.DataFrame:
    """points.history with `wall_s`: seconds since the sweep's process started."""
    h = points.history(frame)
    h["wall_s"] = [t.timestamp() - start for t in h["finished"]]
    return h


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="digits, tiny sweeps")
    parser.add_argument("--data-root", type=Path, default=DEBIAN, help="Fashion-MNIST IDX dir")
    parser.add_argument(
        "--data",
        choices=("fashion_mnist", "digits"),
        default="fashion_mnist",
        help="digits: both presets as they are on 8x8 digits (a machine too busy for the full run)",
    )
    parser.add_argument("--out", type=Path, help="where the sweeps go (default: a temp dir)")
    parser.add_argument(
        "--path-trials",
        type=int,
        help="trials of the path sweep (default: the preset's); the frontier sweep keeps 30",
    )
    opts = parser.parse_args()
    out = opts.out or Path(tempfile.mkdtemp(prefix="frontier-speed-"))
    if opts.smoke:
        runs = SMOKE
    else:
        data = [f"data.root={out / 'data'}", f"data.fallback_dir={opts.data_root}"]
        if opts.data == "digits":
            data = ["data=digits"]
        runs = {name: args + data for name, args in FULL.items()}
        if opts.path_trials:
            runs["path"].append(f"hydra.sweeper.n_trials={opts.path_trials}")
    print(f"{datetime.now():%Y-%m-%d %H:%M} on {os.cpu_count()} CPUs; sweeps in {out}")
    results = {}
    for name, args in runs.items():
        start, seconds, frame = sweep(out, name, args)
        h = curve(frame, start)
        results[name] = (seconds, frame, h)
        print(f"{name}: {len(h)} trials, {len(frame)} points, {seconds:.1f} s wall")
        print(f"  {'trial':>5} {'wall_s':>8} {'points':>6} {'val_hv':>8} {'test_hv':>8}")
        for r in h.itertuples():
            print(f"  {r.trial:>5} {r.wall_s:>8.1f} {r.points:>6} {r.hypervolume:>8.4f} "
                  f"{r.test_hypervolume:>8.4f}")  # fmt: skip
    (f_s, f_pts, f_h), (p_s, p_pts, p_h) = results["frontier"], results["path"]
    target = f_h["hypervolume"].iloc[-1]
    reached = p_h[p_h["hypervolume"] >= target]
    reach_s = float(reached["wall_s"].iloc[0]) if len(reached) else float("nan")
    ratio = reach_s / f_s
    f_test, p_test = f_h["test_hypervolume"].iloc[-1], p_h["test_hypervolume"].iloc[-1]
    print(f"frontier: final validation hypervolume {target:.4f}, test {f_test:.4f}, {f_s:.1f} s")
    if len(reached):
        print(
            f"path: reaches {target:.4f} at trial {int(reached['trial'].iloc[0])}, "
            f"{reach_s:.1f} s = {ratio:.3f} of the frontier sweep's wall time "
            f"(target <= 0.333, stretch <= 0.25)"
        )
    else:
        print(f"path: never reaches {target:.4f} (its final: {p_h['hypervolume'].iloc[-1]:.4f})")
    print(
        f"path: final test hypervolume {p_test:.4f} vs the frontier's {f_test:.4f} "
        f"(target: not lower)"
    )
    # The same hypervolumes with x capped at the frontier front's sparsest point: the space
    # beyond it (where the path's last levels reach) is left out; a sparser point counts there.
    edge = kept_axis(max(f_pts.loc[points.front_figures(f_pts)["front"], "sparsity"]))
    common = {k: points.front_figures(v, x_max=edge)
              for k, v in (("frontier", f_pts), ("path", p_pts))}  # fmt: skip
    print(f"x capped at {edge:.3f} (the frontier front's sparsest point): validation "
          f"hypervolume frontier {common['frontier']['hypervolume']:.4f}, path "
          f"{common['path']['hypervolume']:.4f}; test {common['frontier']['test_hypervolume']:.4f}"
          f", path {common['path']['test_hypervolume']:.4f}")  # fmt: skip
    figures = {
        "frontier_s": f_s, "path_s": p_s, "frontier_hv": target,
        "path_hv": p_h["hypervolume"].iloc[-1], "reach_s": reach_s, "reach_ratio": ratio,
        "frontier_test_hv": f_test, "path_test_hv": p_test,
        "common_frontier_hv": common["frontier"]["hypervolume"],
        "common_path_hv": common["path"]["hypervolume"],
    }  # fmt: skip
    print(" ".join(f"{k}={v:.4f}" for k, v in figures.items()))


if __name__ == "__main__":
    main()
