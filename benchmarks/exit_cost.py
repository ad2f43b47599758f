"""What a sweep process spends after its last trial: its teardown, with and without the freeze
at exit (sweep/run.py `FREEZE_AT_EXIT`, issue 33).

The README's digits sweep with two objectives (`python -m sweep.run -m objective=pareto`: 20
trials of 200 epochs, two at a time) runs --repeats times each way, the ways in turn: as it is
(the objects alive at exit frozen, so Python's final garbage collections skip them; the
storages' connections closed first) and with `L1SWEEP_FREEZE_AT_EXIT=0`. For each run: its
wall time, and the seconds from its "sweep took" log line (the loop's end) to the process's
exit; then the medians, and the share of the sweep's wall time the freeze saves.

    python benchmarks/exit_cost.py               # 2 runs a way
    python benchmarks/exit_cost.py --repeats 3 -- hydra.sweeper.n_trials=10

The last line is key=value pairs.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import tempfile
from pathlib import Path

import processes

WAYS = {"freeze": {}, "plain": {"L1SWEEP_FREEZE_AT_EXIT": "0"}}


def after_loop(log: Path, start: float, wall: float) -> float:
    """Seconds from the log's 'sweep took' line to the process's end."""
    [line] = [x for x in log.read_text().splitlines() if "] sweep took " in x]
    stamp = datetime.datetime.strptime(line[1:24], "%Y-%m-%d %H:%M:%S,%f").timestamp()
    return start + wall - stamp


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2, help="runs a way, the ways in turn")
    parser.add_argument("overrides", nargs="*", help="more overrides, after --")
    a = parser.parse_args()
    args = [sys.executable, "-m", "sweep.run", "-m", "objective=pareto", *a.overrides]
    runs: dict[str, list[tuple[float, float]]] = {k: [] for k in WAYS}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(a.repeats):
            for way in WAYS if r % 2 == 0 else list(WAYS)[::-1]:
                cwd = Path(tmp) / f"{way}_{r}"
                start, wall = processes.timed(args, cwd, WAYS[way])
                runs[way].append((wall, after_loop(cwd / "log.txt", start, wall)))
                print(f"{way:6s} run {r}: {wall:5.1f} s wall, {runs[way][-1][1]:.2f} s after the "
                      "loop", flush=True)  # fmt: skip
    med = {k: (statistics.median(w for w, _ in v), statistics.median(e for _, e in v))
           for k, v in runs.items()}  # fmt: skip
    saved = med["plain"][1] - med["freeze"][1]
    print(f"after the loop: {med['freeze'][1]:.2f} s frozen, {med['plain'][1]:.2f} s plain; "
          f"saved {saved:.2f} s = {saved / med['plain'][0]:.1%} of the sweep's "
          f"{med['plain'][0]:.1f} s")  # fmt: skip
    print(f"freeze_wall_s={med['freeze'][0]:.2f} plain_wall_s={med['plain'][0]:.2f} "
          f"freeze_exit_s={med['freeze'][1]:.2f} plain_exit_s={med['plain'][1]:.2f} "
          f"saved_share={saved / med['plain'][0]:.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
