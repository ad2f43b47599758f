"""The bridge from a job to its Optuna trial: what a finished job leaves in the study.

A row is stored whole (user attribute `row`, what results.csv is rebuilt from) and, for tools
such as optuna-dashboard that sort and plot only numeric user attributes, each of its numeric
figures again as a float attribute of its own name. The job's validation accuracies per epoch
become the trial's intermediate values (its learning curve). The sweeper records them after
the job returns, so a job never writes to the study, whatever launcher ran it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from numbers import Real

import optuna
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig
from optuna.trial import TrialState

from sweep import _compat
from sweep.config.paths import url_started_in
from sweep.search import front, sampling

ROW_ATTR = "row"
SUBDIR = "trial_"  # a trial's job runs in hydra.sweep.subdir=trial_<number>


def figures(row: dict) -> dict[str, float]:
    """The row's finite numbers (not booleans), as floats."""
    return {
        k: float(v)
        for k, v in row.items()
        if isinstance(v, Real) and not isinstance(v, bool) and math.isfinite(v)
    }


def record(
    trial: optuna.Trial, row: dict, curve: list, single_objective: bool, fresh: bool = True
) -> None:
    """Store the row and its figures in the trial, and `curve` ([epoch, val_acc], ...) as its
    intermediate values (Optuna keeps those for single-objective studies only), unless the job
    reported them itself (`job_reporter`): pass curve=[] then. One storage transaction
    (`_compat.one_transaction`): all of it is stored, or none, and a retry stores it again.
    fresh=False: `trial` has reported nothing (the sweep loop's first attempt with the Trial
    it asked for), so it is used as it is, not looked up again (two queries, issue 33)."""
    if curve and single_objective and fresh:
        # a fresh Trial: its record of reported steps is the storage's, so a retry after a
        # rolled-back attempt reports the curve again (Trial.report skips steps it has seen)
        trial = trial_by_number(trial.study, trial.storage, trial.number)
    with _compat.one_transaction(trial.storage):
        _compat.set_trial_user_attrs(trial, {**figures(row), ROW_ATTR: row})
        if single_objective:
            for step, value in curve:
                trial.report(float(value), int(step))


def set_user_attrs(trial: optuna.Trial, attrs: dict) -> None:
    """trial.set_user_attr for each of `attrs`, in one storage transaction."""
    if not attrs:
        return
    with _compat.one_transaction(trial.storage):
        for key, value in attrs.items():
            trial.set_user_attr(key, value)


# hydra.sweeper.n_trials is the study's total, as Optuna's MaxTrialsCallback counts (optuna#2638):
# the same command run again finishes the same sweep, and processes sharing a study stop together.
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def tally(study: optuna.Study) -> tuple[int, int]:
    """(trials that count toward hydra.sweeper.n_trials, trials running now in any process).

    A trial counts once it finished with a result: complete, pruned, or failed with its row
    (diverged, raised, its process died). A trial cut off by Ctrl-C, a kill or a storage lost
    for good is failed with no row and does not count: its place is run again (a killed one's
    parameters first, sweep/search/study.py `recover_stale`)."""
    trials = study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.RUNNING))
    running = sum(t.state == TrialState.RUNNING for t in trials)
    done = sum(t.state != TrialState.RUNNING and t.user_attrs.get(ROW_ATTR) is not None
               for t in trials)  # fmt: skip
    return done, running


# The job's own side, for early stopping: a job in any process reaches its trial through the
# study's storage, reports each epoch's validation accuracy and asks the pruner whether to stop.
# Optuna does not store the pruner with the study, so the job makes the sweep's own from
# hydra.sweeper.pruner. It never tells the trial: the sweeper does, from the job's row.

Reporter = Callable[[int, float], bool]


def trial_by_number(
    study: optuna.Study, storage: optuna.storages.BaseStorage, number: int
) -> optuna.Trial:
    """Trial `number` of `study` (held in `storage`) as an `optuna.Trial` to record into or
    report to. Optuna's public lookup by number is the storage's; a Study does not expose its
    storage, so the caller passes the one it opened the study with."""
    study_id = storage.get_study_id_from_name(study.study_name)
    return optuna.Trial(study, storage.get_trial_id_from_study_id_trial_number(study_id, number))


def job_reporter() -> Reporter | front.FrontReporter | None:
    """report(step, val_acc) -> stop?, for the trial this job runs (hydra/sweeper/pruner=front:
    a FrontReporter, sweep/search/front.py); None outside a sweep, for the baseline job and
    when hydra.sweeper.pruner is NopPruner."""
    if not HydraConfig.initialized():
        return None
    hc = HydraConfig.get()
    if hc.mode != RunMode.MULTIRUN or not hc.sweep.subdir.startswith(SUBDIR):
        return None
    if hc.sweeper.pruner._target_ == "optuna.pruners.NopPruner":
        return None
    storage = hc.sweeper.storage
    if isinstance(storage, DictConfig):
        storage = _compat.instantiate(storage, ("optuna.storages.*",))
    elif isinstance(storage, str):  # under hydra.job.chdir=true this job runs elsewhere
        storage = url_started_in(storage)
    storage = _compat.get_storage(storage)  # held: the lookup by number is its
    pruner = _compat.instantiate(hc.sweeper.pruner, sampling.PRUNERS)
    study = optuna.load_study(
        study_name=hc.sweeper.study_name,
        storage=storage,
        pruner=pruner,
        sampler=optuna.samplers.RandomSampler(),  # never asked: no TPE set-up for nothing
    )
    number = int(hc.sweep.subdir.removeprefix(SUBDIR))
    trial = trial_by_number(study, storage, number)
    if isinstance(pruner, front.FrontPruner):  # several objectives: l1sweep's own rule
        return front.FrontReporter(study, trial, pruner)

    def report(step: int, value: float) -> bool:
        trial.report(value, step)
        return trial.should_prune()

    return report
