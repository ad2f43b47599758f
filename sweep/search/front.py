"""Front-aware early stopping for multi-objective sweeps (hydra/sweeper/pruner=front).

Optuna's pruners are single-objective: `Trial.report` and `Trial.should_prune` raise in a study
with several objectives (optuna#3450). This is the rule l1sweep uses there instead, in the
objective space the sweep searches (`objective.metrics`, e.g. val_acc and sparsity):

- At a checked step s (an epoch, or a prune level's end; every `interval_steps` steps from
  `n_warmup_steps` on) a trial's point p(s) is its objective values measured there (its
  validation accuracy, and the sparsity, compact FLOPs or archive bytes the objective uses).
  The job stores its points in its trial (user attribute `front_points`: [[step, v1, v2], ...]).
- Every complete trial c that checked step s says how much its remaining steps changed it:
  its gain g_c = final_c - p_c(s), each objective oriented so that larger is better.
- The trial is optimistic about its own future: it may still gain what any one of those trials
  gained, plus a margin, `margin` times the spread (max - min) of the complete trials' final
  values in each objective. It is stopped when every such optimistic point p(s) + g_c + margin
  is dominated by the front of the complete trials' final values: no remaining steps that any
  finished trial took from the same step would bring it onto the front.
- `neighbors` k > 0: only the k complete trials that checked step s nearest the trial in the
  search space lend it their gains (its parameters, each scaled to [0, 1] over its searched
  range, on a log scale where it is searched on one; Euclidean distance; a categorical
  differs by 1 or 0): a trial at a low `l1_lambda`, or a low `prune.sparsity` target, is
  judged by what trials like it still gained, not by the sparsest finished trial's gain.
  0: all of them. What a trial's options fix in advance (its pruning target) reaches the rule
  this way, learned from the trials that share it, not assumed.
- Nothing is stopped at a step fewer than `n_startup_trials` complete trials checked.

Gains are taken whole, one finished trial at a time, not as a per-objective maximum: a trial
that gained sparsity and one that gained accuracy do not add up to one that gained both. A
stopped trial is PRUNED: its row holds what was measured when it stopped (`stopped_at` the
step), and it never counts as a finished model on a front (docs/long_sweeps.md).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import optuna
from optuna.distributions import BaseDistribution, FloatDistribution, IntDistribution
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from sweep.errors import UserError

POINTS_ATTR = "front_points"  # a trial's checked points: [[step, value per objective], ...]
READ_SHARE = 0.1  # at most this share of a job's time goes to reading the study (FrontReporter)


class FrontPruner(optuna.pruners.BasePruner):
    """hydra/sweeper/pruner=front: the options of the rule above. Optuna never asks it (its
    `should_prune` raises for several objectives); the trial's job applies it (`stops`).

    n_startup_trials: complete trials that checked a step before any trial stops there (>= 1).
    n_warmup_steps: steps (epochs) before the first check. interval_steps: steps between checks
    (a check may read the study: FrontReporter). margin: the extra gain allowed in each
    objective, as a fraction of the spread (max - min) of the complete trials' final values in
    it (>= 0). neighbors: how many of the complete trials nearest in the search space lend
    their gains (0: all; >= 0). Raises ValueError for options out of those ranges (the
    schema's rules refuse them first, in one line, from the command line)."""

    def __init__(
        self,
        n_startup_trials: int = 5,
        n_warmup_steps: int = 5,
        interval_steps: int = 5,
        margin: float = 0.02,
        neighbors: int = 3,
    ) -> None:
        if n_startup_trials < 1 or n_warmup_steps < 0 or interval_steps < 1:
            raise ValueError(
                "n_startup_trials and interval_steps must be >= 1, n_warmup_steps >= 0"
            )
        if not (margin >= 0 and math.isfinite(margin)):
            raise ValueError(f"margin must be a finite number >= 0, got {margin}")
        if neighbors < 0 or neighbors != int(neighbors):
            raise ValueError(f"neighbors must be an integer >= 0, got {neighbors}")
        self.n_startup_trials = n_startup_trials
        self.n_warmup_steps = n_warmup_steps
        self.interval_steps = interval_steps
        self.margin = margin
        self.neighbors = int(neighbors)

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        """Never stops a trial through Optuna's own path: the job applies `stops`."""
        return False

    def checks(self, step: int) -> bool:
        """Whether step `step` (1-based, on the job's axis) is a checked one."""
        return (
            step > self.n_warmup_steps and (step - self.n_warmup_steps) % self.interval_steps == 0
        )


def check_pruner(pruner: optuna.pruners.BasePruner, metrics: list[str]) -> None:
    """Optuna's pruners for one objective, pruner=front (sweep/search/front.py) for several:
    UserError (one line) for the other pairings."""
    if isinstance(pruner, optuna.pruners.NopPruner):
        return
    if isinstance(pruner, FrontPruner) and len(metrics) == 1:
        raise UserError(
            f"hydra/sweeper/pruner=front stops trials dominated by a front of several "
            f"objectives, and objective.metrics has one ({metrics[0]}): use "
            "hydra/sweeper/pruner=median, successive_halving or hyperband"
        )
    if not isinstance(pruner, FrontPruner) and len(metrics) > 1:
        raise UserError(
            f"Optuna's pruners need a single objective, and objective.metrics has "
            f"{len(metrics)} ({', '.join(metrics)}): Optuna reports and prunes single-objective "
            "trials only. Use hydra/sweeper/pruner=front (stops trials dominated by the front) "
            "or none"
        )


def unit(value: object, distribution: BaseDistribution) -> float | str:
    """`value` of a parameter searched over `distribution`, scaled to [0, 1] over its range:
    log-scaled where the range is searched on a log scale (Optuna's `log=True`), 0 for a range
    of one value; a categorical's choice as its repr (`distance`: 0 apart or 1)."""
    if isinstance(distribution, (FloatDistribution, IntDistribution)):
        low, high, v = float(distribution.low), float(distribution.high), float(value)  # type: ignore[arg-type]
        if distribution.log:
            low, high, v = math.log(low), math.log(high), math.log(v)
        return 0.0 if high == low else (v - low) / (high - low)
    return repr(value)  # CategoricalDistribution: unordered choices


def coordinates(
    params: Mapping[str, object], distributions: Mapping[str, BaseDistribution]
) -> dict[str, float | str]:
    """A trial's place in the search space: each searched parameter scaled by `unit`."""
    return {k: unit(v, distributions[k]) for k, v in params.items() if k in distributions}


def distance(a: Mapping[str, float | str], b: Mapping[str, float | str]) -> float:
    """Euclidean distance over the parameters both trials have (`coordinates`): a scaled
    number's difference, a categorical's 0 (the same choice) or 1; 0 where they share none:
    trials of unknown place are all alike."""

    def apart(x: float | str, y: float | str) -> float:
        if isinstance(x, str) or isinstance(y, str):
            return float(x != y)
        return x - y

    return math.sqrt(sum(apart(a[k], b[k]) ** 2 for k in a.keys() & b.keys()))


@dataclass(frozen=True)
class Finished:
    """One complete trial, as the rule sees it: its final objective `values`, its checked
    `points` {step: values at that step} and its place in the search space (`coordinates`)."""

    values: tuple[float, ...]
    points: dict[int, tuple[float, ...]]
    place: dict[str, float | str] = field(default_factory=dict)

    @classmethod
    def of(cls, trial: FrozenTrial) -> Finished:
        """From a complete trial of the study (its values, POINTS_ATTR and parameters)."""
        pts = {int(p[0]): tuple(map(float, p[1:])) for p in trial.user_attrs.get(POINTS_ATTR, [])}
        place = coordinates(trial.params, trial.distributions)
        return cls(tuple(map(float, trial.values)), pts, place)


def finished(study: optuna.Study) -> list[Finished]:
    """The study's complete trials, for `stops`."""
    return [Finished.of(t) for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]


def _dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """a dominates b, both oriented larger-is-better: no worse in each, better in one."""
    return all(x >= y for x, y in zip(a, b)) and any(x > y for x, y in zip(a, b))


def stops(
    step: int,
    point: Sequence[float],
    done: Sequence[Finished],
    directions: Sequence[StudyDirection],
    *,
    n_startup_trials: int,
    margin: float,
    neighbors: int = 0,
    place: Mapping[str, float | str] | None = None,
) -> bool:
    """Whether a trial whose objective values at `step` are `point` (one per direction) is
    stopped, by the rule of this module's docstring, given the complete trials `done`; with
    `neighbors` k > 0, only the k of those that checked `step` nearest the trial's `place`
    (`coordinates`; ties in `done`'s order) lend their gains. False where `point` has a NaN,
    or fewer than n_startup_trials of `done` checked `step`."""
    if len(done) == 0 or any(map(math.isnan, point)):
        return False
    sign = [1.0 if d == StudyDirection.MAXIMIZE else -1.0 for d in directions]

    def oriented(values: Sequence[float]) -> list[float]:
        return [s * v for s, v in zip(sign, values)]

    checked = [f for f in done if step in f.points]
    if len(checked) < n_startup_trials:
        return False
    if neighbors > 0:
        here = place or {}
        checked = sorted(checked, key=lambda f: distance(f.place, here))[:neighbors]
    at_step = [(oriented(f.values), oriented(f.points[step])) for f in checked]
    finals = [oriented(f.values) for f in done]
    front = [f for f in finals if not any(_dominates(g, f) for g in finals)]
    slack = [margin * (max(col) - min(col)) for col in zip(*finals)]
    p = oriented(point)
    for final, then in at_step:
        hope = [pi + fi - ti + si for pi, fi, ti, si in zip(p, final, then, slack)]
        if not any(_dominates(f, hope) for f in front):
            return False  # some finished trial's remaining steps would put it on the front
    return True


class FrontReporter:
    """The job's side of the rule (a sweep.task.job.PointReporter): at each checked step it asks
    `stops` against the study's complete trials, read from the storage in the job's own process
    (any launcher; Optuna's cached storage reads only what changed). Its points are stored in
    the trial (POINTS_ATTR) once, when it stops the trial or the job ends (`close`): only
    complete trials' points are read, so a write per check would cost time for nothing."""

    def __init__(self, study: optuna.Study, trial: optuna.Trial, pruner: FrontPruner) -> None:
        self.study, self.trial, self.pruner = study, trial, pruner
        self.metrics: tuple[str, ...] = tuple(study.metric_names or ())
        self.points: list[list[float]] = []
        self.stored = 0  # points already in the trial
        self.done: list[Finished] = []
        self.read_at, self.read_cost = -math.inf, 0.0  # perf_counter seconds
        # its parameters are suggested before the job starts: its place is fixed
        self.place = coordinates(trial.params, trial.distributions)

    def finished(self) -> list[Finished]:
        """The study's complete trials, read again only once READ_SHARE of the time since the
        last read has gone by: a read costs tens of milliseconds (SQLite, the running trials
        read whole each time), a digits epoch five, so reading at every check would cost more
        than it saves. Between reads the trial is judged against the study as last read: a
        front and gains of complete trials all the same, only fewer of them."""
        now = time.perf_counter()
        if now - self.read_at >= self.read_cost / READ_SHARE:
            self.done = finished(self.study)
            self.read_at = time.perf_counter()
            self.read_cost = self.read_at - now
        return self.done

    def wants(self, step: int) -> bool:
        """A checked step not reported yet (a level's end may share its last epoch's step)."""
        return self.pruner.checks(step) and all(p[0] != step for p in self.points)

    def __call__(self, step: int, point: Mapping[str, float | None]) -> bool:
        """Keep the point at `step` and say whether the trial stops there (its points stored
        then); a point missing a figure (None: archive bytes at an epoch) is not a check."""
        values = [point.get(m) for m in self.metrics]
        if not self.wants(step) or any(v is None for v in values):
            return False
        self.points.append([step, *map(float, values)])  # type: ignore[arg-type]
        stop = stops(step, self.points[-1][1:], self.finished(), self.study.directions,
                     n_startup_trials=self.pruner.n_startup_trials,
                     margin=self.pruner.margin, neighbors=self.pruner.neighbors,
                     place=self.place)  # fmt: skip
        if stop:
            self.close()
        return stop

    def close(self) -> None:
        """Store the points in the trial, where there are new ones."""
        if len(self.points) > self.stored:
            self.trial.set_user_attr(POINTS_ATTR, self.points)
            self.stored = len(self.points)
