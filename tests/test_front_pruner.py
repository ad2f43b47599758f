"""hydra/sweeper/pruner=front: a multi-objective sweep stops the trials whose point, with what
finished trials still gained from the same step, stays dominated by the front
(sweep/search/front.py); the rule on its own, then real digits sweeps with and without it."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pandas as pd
import pytest
from optuna.study import StudyDirection
from optuna.trial import TrialState

from conftest import run_cli
from sweep.search import front
from sweep.search.front import Finished, stops

MAX = [StudyDirection.MAXIMIZE, StudyDirection.MAXIMIZE]
# three finished trials: (val_acc, sparsity) at the end, and where each was at step 10
DONE = [
    Finished((0.96, 0.50), {10: (0.90, 0.30)}),  # gained (0.06, 0.20)
    Finished((0.95, 0.80), {10: (0.93, 0.40)}),  # gained (0.02, 0.40)
    Finished((0.97, 0.20), {10: (0.95, 0.10)}),  # gained (0.02, 0.10)
]


def test_a_point_no_finished_gain_lifts_onto_the_front_stops():
    # (0.80, 0.10) + any gain above is at most (0.86, 0.30), (0.82, 0.50), (0.82, 0.20):
    # each dominated by (0.96, 0.50) or (0.95, 0.80)
    assert stops(10, (0.80, 0.10), DONE, MAX, n_startup_trials=3, margin=0.0)


def test_one_finished_trials_gain_that_reaches_the_front_keeps_it_running():
    # (0.94, 0.45) + (0.02, 0.40) = (0.96, 0.85): no front point dominates it
    assert not stops(10, (0.94, 0.45), DONE, MAX, n_startup_trials=3, margin=0.0)


def test_gains_count_whole_not_as_a_per_objective_maximum():
    # one trial gained accuracy (0.05, 0), one sparsity (0, 0.40), one nothing; (0.91, 0.46)
    # lifted by each is dominated, by both at once (0.96, 0.86) it would not be: no one did both
    done = [Finished((0.97, 0.50), {10: (0.92, 0.50)}),
            Finished((0.92, 0.90), {10: (0.92, 0.50)}),
            Finished((0.95, 0.85), {10: (0.95, 0.85)})]  # fmt: skip
    assert stops(10, (0.91, 0.46), done, MAX, n_startup_trials=3, margin=0.0)


def test_the_margin_is_a_fraction_of_each_objectives_spread():
    # spread: val_acc 0.02, sparsity 0.60. margin 0.5 adds (0.01, 0.30): (0.80, 0.10) lifted
    # by (0.02, 0.40) reaches (0.83, 0.80), still dominated by (0.95, 0.80); margin 0.6 adds
    # (0.012, 0.36): (0.832, 0.86) is sparser than any front point, so the trial runs on
    assert stops(10, (0.80, 0.10), DONE, MAX, n_startup_trials=3, margin=0.5)
    assert not stops(10, (0.80, 0.10), DONE, MAX, n_startup_trials=3, margin=0.6)


def test_nothing_stops_before_enough_finished_trials_checked_the_step():
    assert not stops(10, (0.80, 0.10), DONE, MAX, n_startup_trials=4, margin=0.0)
    assert not stops(20, (0.80, 0.10), DONE, MAX, n_startup_trials=1, margin=0.0)  # no one at 20
    assert not stops(10, (float("nan"), 0.10), DONE, MAX, n_startup_trials=1, margin=0.0)


def test_a_minimized_objective_is_turned_round():
    # (val_acc, bytes): 2000 bytes and 0.96 at the end from 0.90 and 3000 at step 10
    done = [Finished((0.96, 2000.0), {10: (0.90, 3000.0)}),
            Finished((0.90, 1000.0), {10: (0.85, 1500.0)})]  # fmt: skip
    directions = [StudyDirection.MAXIMIZE, StudyDirection.MINIMIZE]
    # (0.80, 4000) + gains: at best (0.86, 3000) or (0.85, 3500): dominated by (0.96, 2000)
    assert stops(10, (0.80, 4000.0), done, directions, n_startup_trials=2, margin=0.0)
    # (0.80, 1000) + (0.05, -500) = (0.85, 500): fewer bytes than any front point
    assert not stops(10, (0.80, 1000.0), done, directions, n_startup_trials=2, margin=0.0)


def test_with_neighbors_only_the_nearest_trials_lend_their_gains():
    # trial 2 (far: sparsity target 0.9) gained 0.40 of sparsity; the near ones (targets 0.5,
    # 0.55) gained 0.05-0.10. (0.85, 0.40) lifted by 0.40 of sparsity would pass the front's
    # sparsest point (0.95, 0.80); by a near trial's gain it reaches at most (0.91, 0.50)
    done = [Finished((0.96, 0.50), {10: (0.90, 0.45)}, {"prune.sparsity": 0.0}),
            Finished((0.95, 0.80), {10: (0.93, 0.40)}, {"prune.sparsity": 1.0}),
            Finished((0.93, 0.55), {10: (0.87, 0.45)}, {"prune.sparsity": 0.1})]  # fmt: skip
    here = {"prune.sparsity": 0.05}
    opts = {"n_startup_trials": 3, "margin": 0.0}
    assert not stops(10, (0.85, 0.40), done, MAX, **opts)  # all three: the far one's gain
    assert not stops(10, (0.85, 0.40), done, MAX, **opts, neighbors=3, place=here)
    assert stops(10, (0.85, 0.40), done, MAX, **opts, neighbors=2, place=here)
    assert not stops(10, (0.85, 0.40), done, MAX, **opts, neighbors=2,
                     place={"prune.sparsity": 0.9})  # fmt: skip  # near the far one


def test_a_trials_place_is_its_parameters_scaled_over_their_searched_ranges():
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    lam = FloatDistribution(1e-5, 1e-3, log=True)
    dists = {"l1_lambda": lam, "prune.sparsity": FloatDistribution(0.5, 0.99),
             "prune.scope": CategoricalDistribution(["layer", "global", "neuron"])}  # fmt: skip
    place = front.coordinates(
        {"l1_lambda": 1e-4, "prune.sparsity": 0.99, "prune.scope": "neuron", "seed": 3}, dists
    )
    assert place == {"l1_lambda": pytest.approx(0.5), "prune.sparsity": 1.0,
                     "prune.scope": "'neuron'"}  # fmt: skip
    assert front.distance(place, {"l1_lambda": 0.5, "prune.sparsity": 0.0}) == pytest.approx(1.0)
    # another choice is 1 apart, whichever: (0.5^2 + 0 + 1)^0.5
    other = {"l1_lambda": 1.0, "prune.sparsity": 1.0, "prune.scope": "'layer'"}
    assert front.distance(place, other) == pytest.approx(1.25**0.5)
    assert front.distance(place, {}) == 0.0


def test_checked_steps_follow_warmup_and_interval():
    pruner = front.FrontPruner(n_warmup_steps=5, interval_steps=10)
    assert [s for s in range(1, 40) if pruner.checks(s)] == [15, 25, 35]
    with pytest.raises(ValueError, match="margin must be a finite number >= 0"):
        front.FrontPruner(margin=-0.1)
    with pytest.raises(ValueError, match="neighbors must be an integer >= 0, got 2.5"):
        front.FrontPruner(neighbors=2.5)  # type: ignore[arg-type]


# A small digits sweep with a fixed order of trials: the front's four first, then trials that
# end dominated (low l1_lambda: no sparser than the front's and no more accurate).
FRONT_FIRST = [7.04e-5, 1.25e-4, 1.6e-4, 8.46e-4]
DOMINATED = [5.85e-5, 3.46e-5, 1.1e-5]
SWEEP = ["objective=pareto", "hydra.sweeper.n_jobs=1", f"hydra.sweeper.n_trials={7}",
         "hydra.sweeper.enqueue=[" + ",".join(f"{{l1_lambda:{v}}}"
                                             for v in FRONT_FIRST + DOMINATED) + "]"]  # fmt: skip
# the shipped options (3 neighbours, checks at 10, 15, ...) but for 4 start-up trials: the front's
FRONT = ["hydra/sweeper/pruner=front", "hydra.sweeper.pruner.n_startup_trials=4"]


def _sweep(cwd: Path, name: str, *args: str) -> tuple[pd.DataFrame, optuna.Study]:
    run_cli(cwd, "-m", f"hydra.sweeper.study_name={name}", *SWEEP, *args)
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{cwd}/outputs/optuna.db")
    return pd.read_csv(cwd / "outputs" / "sweeps" / name / "results.csv"), study


@pytest.mark.slow
def test_the_front_pruner_stops_dominated_trials_and_none_on_the_front(tmp_path):
    full, _ = _sweep(tmp_path, "full")
    cut, study = _sweep(tmp_path, "cut", *FRONT)
    on_front = set(full.loc[full["pareto"].astype(bool), "l1_lambda"])
    pruned = cut[cut["status"] == "pruned"]
    # every trial that the full sweep shows dominated is stopped, none of the front's
    assert set(pruned["l1_lambda"]) == set(DOMINATED), cut[["trial", "status", "epochs"]]
    assert not set(pruned["l1_lambda"]) & on_front
    assert set(cut.loc[cut["pareto"].astype(bool), "l1_lambda"]) == on_front  # the same front
    states = {t.number: t.state for t in study.trials}
    for row in pruned.itertuples():
        # a PRUNED trial whose row is the model where it stopped, at a checked step
        assert states[row.trial] == TrialState.PRUNED
        assert row.epochs == row.stopped_at and 10 <= row.stopped_at < 200
        assert row.stopped_at % 5 == 0
        points = study.trials[row.trial].user_attrs[front.POINTS_ATTR]
        assert points[-1] == [row.stopped_at, row.val_acc, row.sparsity]
        metrics = json.loads((Path(row.run_dir) / "metrics.json").read_text())
        assert metrics["status"] == "pruned" and metrics["stopped_at"] == row.stopped_at
    complete = cut[cut["status"] == "complete"]
    assert complete["stopped_at"].isna().all() and (complete["epochs"] == 200).all()
    # a complete trial's stored points end before its last step: the last is no check
    assert max(p[0] for p in study.trials[0].user_attrs[front.POINTS_ATTR]) == 195


@pytest.mark.slow
def test_the_front_pruner_in_joblibs_workers_with_repeats(tmp_path):
    # fresh interpreters (as submitit's jobs are) that reach the study by its storage; two
    # seeds a trial, 200 epochs each, checked back to back: seed 1's epoch e is step 200 + e
    df, study = _sweep(tmp_path, "rj", *FRONT, "hydra/launcher=joblib", "repeats=2",
                       "hydra.sweeper.pruner.n_startup_trials=2")  # fmt: skip
    pruned = df[df["status"] == "pruned"]
    assert len(pruned) >= 1, df[["trial", "status", "stopped_at"]]
    for row in pruned.itertuples():
        points = study.trials[row.trial].user_attrs[front.POINTS_ATTR]
        assert points[-1][0] == row.stopped_at and row.stopped_at % 5 == 0
        assert 0 < row.stopped_at < 400
        seeds = json.loads((Path(row.run_dir) / "metrics.json").read_text())["seeds"]
        assert len(seeds) == (1 if row.stopped_at <= 200 else 2)  # no seed after the stop
    for t in study.trials:
        if t.state == TrialState.COMPLETE:  # both seeds' steps checked, never the last (400)
            assert [p[0] for p in t.user_attrs[front.POINTS_ATTR]] == list(range(10, 400, 5))


class Recorder:
    """A PointReporter (sweep.task.job) that wants every step once, keeps what it was given,
    and says stop at `stop_at`; `closed` once the run returned."""

    def __init__(self, metrics: tuple[str, ...], stop_at: int | None = None) -> None:
        self.metrics, self.stop_at = metrics, stop_at
        self.points: list[tuple[int, dict]] = []
        self.closed = False

    def wants(self, step: int) -> bool:
        return all(s != step for s, _ in self.points)

    def __call__(self, step: int, point: dict) -> bool:
        self.points.append((step, dict(point)))
        return step == self.stop_at

    def close(self) -> None:
        self.closed = True


def _job(tmp_path: Path, report: Recorder, *overrides: str) -> dict:
    from hydra import compose, initialize_config_dir

    from conftest import REPO
    from sweep.task import job

    with initialize_config_dir(str(REPO / "conf"), version_base=None):
        cfg = compose("config", overrides=["train.log_every=1", *overrides])
    return job.run(cfg, tmp_path, {}, report)


def test_a_job_hands_its_points_back_to_back_over_seeds_never_its_last_step(tmp_path):
    report = Recorder(("val_acc", "sparsity"))
    metrics = _job(tmp_path, report, "train.epochs=3", "repeats=2")
    assert [s for s, _ in report.points] == [1, 2, 3, 4, 5]  # seed 1's epoch e is 3 + e; not 6
    assert all(set(p) == {"val_acc", "sparsity"} for _, p in report.points)
    seeds = json.loads((tmp_path / "metrics.json").read_text())["seeds"]
    assert report.points[2][1]["val_acc"] == seeds[0]["val_acc"]  # seed 0's last epoch
    assert metrics["status"] == "complete" and metrics["stopped_at"] is None and report.closed


def test_a_job_told_to_stop_is_pruned_at_that_step(tmp_path):
    report = Recorder(("val_acc", "sparsity"), stop_at=5)
    metrics = _job(tmp_path, report, "train.epochs=3", "repeats=2")
    assert metrics["status"] == "pruned" and metrics["stopped_at"] == 5
    assert metrics["repeats"] == 2 and metrics["epochs"] == 2  # seed 1 stopped at its epoch 2


def test_a_prune_paths_points_carry_the_compact_flops_and_its_levels_end_it(tmp_path):
    # 2 training epochs, then levels 0.5 and 0.8 with one fine-tuning epoch each: steps 1-4;
    # level 1 ends at step 3 (its epoch's step, given once), level 2 at 4, the last: not asked
    report = Recorder(("val_acc", "flops"), stop_at=3)
    metrics = _job(tmp_path, report, "train.epochs=2", "prune=magnitude", "prune.path=[0.5,0.8]",
                   "prune.epochs=1", "objective=pareto_flops")  # fmt: skip
    assert [s for s, _ in report.points] == [1, 2, 3]
    assert all(isinstance(p["flops"], int) and p["flops"] > 0 for _, p in report.points)
    assert metrics["status"] == "pruned" and metrics["stopped_at"] == 3
