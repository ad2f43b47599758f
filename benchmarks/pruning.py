"""What early stopping saves: one digits sweep run twice, without a pruner and with Optuna's
median pruner, from the same seed in fresh directories; wall time and best validation accuracy.

    python benchmarks/pruning.py                         # 20 trials of 40 epochs each side
    python benchmarks/pruning.py --trials 8 --epochs 10  # quicker

The sweeps run as a user runs them (`python -m sweep.run -m ...`), one trial at a time
(`hydra.sweeper.n_jobs=1`), so that the pruner's saving is not mixed with parallel trials'.
The last line is machine-readable: key=value pairs.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]


def sweep(cwd: Path, pruner: str, trials: int, epochs: int) -> tuple[float, pd.DataFrame]:
    args = [sys.executable, "-m", "sweep.run", "-m", f"hydra/sweeper/pruner={pruner}",
            f"hydra.sweeper.n_trials={trials}", f"train.epochs={epochs}", "hydra.sweeper.n_jobs=1",
            "hydra.sweeper.study_name=bench", f"hydra.sweeper.storage=sqlite:///{cwd}/o.db",
            f"hydra.sweep.dir={cwd}/sweep"]  # fmt: skip
    start = time.perf_counter()
    subprocess.run(args, cwd=REPO, check=True, capture_output=True)
    return time.perf_counter() - start, pd.read_csv(cwd / "sweep" / "results.csv")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=40)
    a = parser.parse_args()
    figures = {}
    for pruner in ("none", "median"):
        with tempfile.TemporaryDirectory() as tmp:
            seconds, df = sweep(Path(tmp), pruner, a.trials, a.epochs)
        complete = df[df["status"] == "complete"]
        best = complete.loc[complete["val_acc"].idxmax()]
        print(
            f"pruner={pruner:7s} wall {seconds:6.1f} s  trials {len(df)} "
            f"(complete {len(complete)}, pruned {(df['status'] == 'pruned').sum()})  "
            f"epochs trained {int(df['epochs'].sum())}  best val_acc {best['val_acc']:.4f} "
            f"(trial {int(best['trial'])}, l1_lambda {best['l1_lambda']:.3g}, "
            f"test_acc {best['test_acc']:.4f})"
        )
        figures[pruner] = (seconds, best["val_acc"], int(df["epochs"].sum()))
    (t0, v0, e0), (t1, v1, e1) = figures["none"], figures["median"]
    print(
        f"trials={a.trials} epochs={a.epochs} wall_none={t0:.1f} wall_median={t1:.1f} "
        f"speedup={t0 / t1:.2f} best_none={v0:.4f} best_median={v1:.4f} "
        f"epochs_none={e0} epochs_median={e1}"
    )


if __name__ == "__main__":
    main()
