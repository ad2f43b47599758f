"""The Optuna sweeper's trial loop, one trial = one row.

hydra-optuna-sweeper's loop has no per-trial hook, so this subclass keeps its options,
sampler and search-space parsing but runs its own ask/launch/tell loop, which:
- names each trial's directory after its Optuna trial number (trial_<n>), so a resumed
  study never overwrites an earlier trial (Hydra's job numbering restarts at 0);
- keeps hydra.sweeper.n_jobs trials running (auto: chosen for the machine), starting the next
  as soon as any ends, with no batch barrier (sweep/parallel.py);
- asks until the study holds hydra.sweeper.n_trials finished trials (the study's total, as
  Optuna's MaxTrialsCallback counts): the same command started again finishes the sweep, and
  processes sharing a study stop together (sweep/search/trials.py `tally`, loop.py `ask`);
- seeds its sampler by seed + its first trial's number, runs enqueued parameter sets first;
- records each job's row in its trial and rewrites results.csv from the study after every
  trial, atomically (sweep/trials.py: what a job leaves in its trial; sweep/study.py: opening
  the study, its fingerprint, stale trials, the CSV);
- tells a job that its pruner stopped PRUNED, a diverged one FAIL, and goes on;
- turns bad input into one clear line and exit code 2.

In Hydra's plugin shape: `L1Sweeper` (setup, sweep) here; the options and the plan of a run,
every check before trial 0 (sweep/search/plan.py: `Options`, `Planner.prepare` -> `SweepPlan`);
the trial loop (sweep/search/loop.py: `TrialLoop.run` -> ask, launch, tell); `finish` here.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import time
from typing import Any

from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf
from optuna.trial import TrialState

from sweep.errors import UserError
from sweep.search import interrupts, launcher
from sweep.search.loop import TrialLoop, one_line
from sweep.search.plan import Options, Planner, SweepPlan, resume_hint
from sweep.search.storage import StorageUnavailable

log = logging.getLogger(__name__)


class L1Sweeper(Sweeper):
    """`hydra/sweeper=l1sweep`: an Optuna study over the search space, run as Hydra jobs.

    A Hydra sweeper plugin on Hydra's and Optuna's public APIs. It takes the Optuna sweeper
    plugin's options (hydra.sweeper.*: sampler, direction, storage, study_name, n_trials,
    n_jobs, max_failure_rate, params, custom_search_space, with that plugin's search-space
    syntax) and its own (pruner, stale_after, storage_wait, enqueue), and runs in plain steps:
    `Planner.prepare` (checks, the study, the plan) -> `TrialLoop.run` (ask, launch, tell) ->
    `finish`. Bad input is one line and exit 2 (`sweep.errors.UserError`).
    """

    def __init__(self, **options: Any) -> None:
        """The options (hydra.sweeper.*), their ranges checked first, the pruner and sampler
        made (`Options.of`). Exits 2 with one line on bad input."""
        try:
            self.options = Options.of(options)
        except UserError as e:
            log.error(f"error: {e}")
            sys.exit(2)
        self.planner: Planner | None = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        """Hydra's plugin call: the composed config and the launcher that runs the jobs."""
        self.config = config
        self.hydra_context = hydra_context
        # Resolved now, from the config itself: its ${now:} is then cached in the config, so
        # hydra.sweep.dir (which names the study) holds this name for the whole sweep.
        self.options = dataclasses.replace(self.options, study_name=config.hydra.sweeper.study_name)
        try:
            self.launcher = Plugins.instance().instantiate_launcher(
                hydra_context=hydra_context, task_function=task_function, config=config
            )
        except Exception as e:  # the launcher's own check of its options
            reason = str(e.__cause__ or e).splitlines()[0]
            log.error(f"error: hydra.launcher: {reason}")
            sys.exit(2)
        self.planner = Planner(self.options, config, self.launcher, hydra_context.config_loader)

    def sweep(self, arguments: list[str]) -> None:
        """Hydra's plugin call: run the sweep; bad input exits 2, a stopped sweep 1 (130 on
        Ctrl-C), each with one line and, where it helps, the command that resumes it."""
        assert self.planner is not None
        try:
            with interrupts.handled():
                plan = self.planner.prepare(arguments)
                start = time.perf_counter()
                told = TrialLoop(plan, self.launcher).run()
                finish(plan, time.perf_counter() - start)
                _check_some_finished(told)
        except UserError as e:
            log.error(f"error: {e}")
            sys.exit(2)
        except (StorageUnavailable, SweepFailed, launcher.JobDied) as e:
            # the storage gone for longer than storage_wait, every trial failed, or a trial's
            # process died: one line, and how to go on where going on can help
            resume = self.planner.resume
            again = f"; resume with: {resume}" if resume and not isinstance(e, SweepFailed) else ""
            if isinstance(e, StorageUnavailable):
                e = f"{e}: the sweep stops. Finished trials keep their rows; the next start "
                e += "records a trial whose job had finished from its files, not training it again"
            log.error(f"error: {e}{again}")
            sys.exit(1)
        except KeyboardInterrupt:  # the running trials are failed in the study by now
            resume = self.planner.resume
            again = f"; resume with: {resume}" if resume else ""
            log.error(f"interrupted: the trials that were running are failed{again}")
            sys.exit(130)


def finish(plan: SweepPlan, seconds: float) -> None:
    """After the last trial: optimization_results.yaml (Hydra's Optuna sweeper's file),
    the summary and the resume command in the log, the CSV's path on stdout."""
    plan.console.close()
    study, directions, csv_path = plan.study, plan.directions, plan.csv_path
    complete = study.get_trials(states=[TrialState.COMPLETE])
    if len(directions) == 1:
        summary: dict[str, Any] = {"name": "optuna", "best_params": {}, "best_value": None}
        if complete:
            summary.update(best_params=study.best_trial.params, best_value=study.best_value)
    else:
        summary = {
            "name": "optuna",
            "solutions": [{"params": t.params, "values": t.values} for t in study.best_trials],
        }
    # what the study optimized, for sweep.analyze: its best trial, front and knee follow these
    summary.update(metrics=list(plan.metrics), directions=list(directions))
    OmegaConf.save(OmegaConf.create(summary), csv_path.parent / "optimization_results.yaml")
    pruned = study.get_trials(deepcopy=False, states=[TrialState.PRUNED])
    log.info(
        f"study {study.study_name}: {len(complete)} complete, {len(pruned)} pruned"
        f" of {len(study.trials)} trials"
    )
    log.info(f"sweep took {seconds:.1f}s; results: {csv_path}")
    log.info(f"resume or extend with: {plan.resume}{resume_hint(plan.n_trials)}")
    print(csv_path)


class SweepFailed(Exception):
    """Every trial this sweep ran failed: nothing was learnt, so the sweep ends non-zero."""


def _check_some_finished(told: list[BaseException | None]) -> None:
    """A sweep whose every trial failed (an exception in each job, tolerated by
    max_failure_rate) ends non-zero, as Hydra's Optuna sweeper does: its results are empty."""
    errors = [e for e in told if e is not None]
    if told and len(errors) == len(told):
        raise SweepFailed(
            f"every trial of this sweep failed ({len(told)} of {len(told)}); the first: "
            f"{one_line(errors[0])} (the rows' error column has each)"
        )
