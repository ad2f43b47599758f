"""Which front-pruner options would have stopped what, on a sweep recorded at every step.

benchmarks/front_pruner.py measures the wall time of real sweeps, one option set at a time
(minutes each). This replays the rule of sweep/search/front.py (`stops`, the same function the
jobs call) over the trials of one sweep that recorded its point at every step and stopped
nothing, for many option sets in seconds:

    python -m sweep.run -m objective=pareto hydra/sweeper/pruner=front \\
        hydra.sweeper.pruner.n_startup_trials=100000 hydra.sweeper.pruner.interval_steps=1 \\
        hydra.sweeper.study_name=rec hydra.sweeper.storage=sqlite:///rec.db hydra.sweep.dir=rec
    python benchmarks/front_replay.py rec sqlite:///rec.db rec

For each option set it prints the trials stopped and where, the share of the sweep's epochs
they would not have trained, the base front's trials among the stopped (must be none), and
the final front's hypervolumes on validation and test without the stopped trials
(sweep/results/points.py front_figures) against all trials'. What it assumes: trial t is
judged against the trials that completed before t started in the recording (and were not
stopped in the replay): fewer than a live sweep, whose stopped trials end sooner, would have;
and the sampler draws the same trials, which a live sweep's TPE, told of stopped trials, need
not. A replay ranks option sets; the wall time comes from front_pruner.py. It is optimistic
for a setting that stops many trials early: live, the trials after them start sooner, against
fewer complete ones (two such settings kept the front here and lost 30% of its hypervolume
live: docs/long_sweeps.md, "Where the replay misleads"). `--oracle`: instead
of the rule, stop every trial off the final front at its first check once n_startup_trials
had completed: the most any rule with those options could save here.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import optuna
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sweep.results import points  # noqa: E402
from sweep.search import front  # noqa: E402


def replay(trials: list, pruner: front.FrontPruner, directions: list) -> dict[int, int]:
    """{trial number: step it would stop at} under `pruner`'s options, for the recorded
    complete `trials` (FrozenTrial, each with its POINTS_ATTR at every step)."""
    stopped: dict[int, int] = {}
    for t in trials:
        done = [front.Finished.of(c) for c in trials
                if c.datetime_complete <= t.datetime_start and c.number not in stopped]  # fmt: skip
        place = front.coordinates(t.params, t.distributions)
        for p in t.user_attrs.get(front.POINTS_ATTR, []):
            step = int(p[0])
            if pruner.checks(step) and front.stops(
                step, p[1:], done, directions, n_startup_trials=pruner.n_startup_trials,
                margin=pruner.margin, neighbors=pruner.neighbors, place=place,
            ):  # fmt: skip
                stopped[t.number] = step
                break
    return stopped


def oracle(trials: list, on_front: set[int], pruner: front.FrontPruner) -> dict[int, int]:
    """What a rule that knew the final front would stop: every trial not on it, at its first
    checked step, once `pruner.n_startup_trials` trials had completed before it started. The
    most any rule with those options could save on this recording."""
    first = next(s for s in range(1, 10**6) if pruner.checks(s))
    return {t.number: first for t in trials if t.number not in on_front
            and sum(c.datetime_complete <= t.datetime_start for c in trials)
            >= pruner.n_startup_trials}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path, help="the recorded sweep's hydra.sweep.dir")
    parser.add_argument("storage", help="its study's storage URL")
    parser.add_argument("study_name")
    parser.add_argument("--neighbors", default="0,3,5", help="values to try, comma-separated")
    parser.add_argument("--margin", default="0.02,0.05")
    parser.add_argument("--interval", default="10,5")
    parser.add_argument("--startup", default="5,3")
    parser.add_argument("--warmup", default="0")
    parser.add_argument(
        "--oracle", action="store_true", help="stop what is not on the final front (a bound)"
    )
    opts = parser.parse_args()
    study = optuna.load_study(study_name=opts.study_name, storage=opts.storage)
    trials = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    steps = {t.number: max(int(p[0]) for p in t.user_attrs[front.POINTS_ATTR]) + 1
             for t in trials}  # fmt: skip  # the last step is never recorded: nothing after it
    pts = pd.read_csv(opts.sweep_dir / points.NAME)
    whole = points.front_figures(pts)
    on_front = set(pts.loc[whole["front"], "trial"])
    hv, test_hv = whole["hypervolume"], whole["test_hypervolume"]
    print(f"{len(trials)} trials, {sum(steps.values())} steps; front trials {sorted(on_front)}; "
          f"hypervolume val {hv:.4f} test {test_hv:.4f}")  # fmt: skip
    head = ("k", "margin", "every", "start", "warm", "stopped", "saved", "front lost", "val_hv")
    print(" ".join(f"{h:>{max(len(h), 3)}}" for h in head), "test_hv  stops (trial@step)")
    names = ("neighbors", "margin", "interval", "startup", "warmup")
    grid = itertools.product(*(map(float, getattr(opts, k).split(",")) for k in names))
    for k, margin, every, start, warm in grid:
        pruner = front.FrontPruner(int(start), int(warm), int(every), margin, int(k))
        stopped = replay(trials, pruner, list(study.directions))
        if opts.oracle:
            stopped = oracle(trials, on_front, pruner)
        saved = sum(steps[n] - s for n, s in stopped.items()) / sum(steps.values())
        kept = points.front_figures(pts[~pts["trial"].isin(stopped)])
        lost = sorted(on_front & set(stopped))
        print(f"{int(k):>3} {margin:>6.3f} {int(every):>5} {int(start):>5} {int(warm):>4} "
              f"{len(stopped):>7} {saved:>6.1%} {str(lost):>10} "
              f"{kept['hypervolume'] / hv - 1:>+6.2%} "
              f"{kept['test_hypervolume'] / test_hv - 1:>+7.2%}  "
              + " ".join(f"{n}@{s}" for n, s in sorted(stopped.items())))  # fmt: skip


if __name__ == "__main__":
    main()
