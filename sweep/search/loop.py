"""The trial loop: ask -> launch -> tell, as Optuna's own `_optimize` reads
(`_optimize_sequential` -> `_run_trial`), one method each, `plan.jobs.jobs` trials at a time.

    TrialLoop(plan, launcher).run()   # parallel.run keeps the slots full (wait FIRST_COMPLETED)
      ask()                          # study.ask, the trial claimed, its parameters drawn
      launch(trial)                  # its job started (forked now, or in a worker thread)
      tell(trial, ret)               # its row recorded and told; results.csv rewritten

Everything that touches the study runs on the main thread, where Ctrl-C lands and is deferred
around the steps that must not be cut in half (sweep/search/interrupts.py); every storage call
is retried while the storage is briefly away (`Options.db`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import shlex
from collections.abc import Callable
from typing import Any

import optuna
from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from optuna.trial import TrialState

from sweep import _compat
from sweep.errors import UserError
from sweep.results import command, table
from sweep.results.row import JobResult
from sweep.search import interrupts, launcher, parallel, trials
from sweep.search import space as search
from sweep.search.plan import SweepPlan
from sweep.search.storage import StorageUnavailable
from sweep.search.study import ASK_LOCK, claim, heartbeat, told_from_files

log = logging.getLogger(__name__)


class TrialLoop:
    """Runs the plan's study with `chosen` (the configured launcher) until it holds
    `plan.n_trials` trials (`trials.tally`: those that count, with those running anywhere).

    The state the three steps share: `running` (asked, not yet told: for the heartbeat, and
    failed on an interrupt), `overrides` (each asked trial's job, until it is told), `told`
    (each told trial's error, None where it did not fail), `stop` (the error that stops the
    asking), the next Hydra job number and the sampler's reseed base (used by the first ask).
    """

    def __init__(self, plan: SweepPlan, chosen: Launcher) -> None:
        self.plan, self.launcher = plan, chosen
        self.kind = parallel.launcher_kind(launcher.class_path(chosen))
        self.db = plan.options.db
        self.running: list[optuna.Trial] = []
        self.overrides: dict[int, tuple[str, ...]] = {}
        self.told: list[BaseException | None] = []
        self.stop: BaseException | None = None
        self.job_idx = plan.first_job
        self.reseed = plan.reseed

    def run(self) -> list[BaseException | None]:
        """Run the trials, plan.jobs.jobs at a time (sweep/parallel.py); each is told and its
        row written as it finishes. Returns each told trial's error (None: it did not fail).

        The rule for failures, Optuna's `catch` made a rate: a trial whose job raised (or whose
        process died) is a failed trial with its row; the sweep goes on while the failed share
        of the trials told so far is at most hydra.sweeper.max_failure_rate (0 by default: the
        first failure stops the asking). A diverged trial is a result, not a failure. A
        UserError always stops (bad input: every trial would fail so). The stopping error is
        raised once the running trials are told. A storage that stays unavailable
        (StorageUnavailable) stops at once, leaving the running trials RUNNING for the next
        start to settle from their files."""
        plan = self.plan
        try:
            # beats often enough that a live trial is never taken for a lost one
            with heartbeat(self.running, every=min(30.0, plan.options.stale_after / 4)):
                parallel.run(plan.limit, plan.jobs.jobs, self.ask, self.launch, self.tell,
                             self.running, self._end_jobs)  # fmt: skip
        except BaseException as e:  # Ctrl-C or a launcher error: leave no trial RUNNING for ever
            interrupts.clear()  # this one is handled here
            self._fail_running(e)
            raise
        if self.stop is not None:
            raise self.stop  # a programming error: stop with its traceback
        return self.told

    def ask(self) -> optuna.Trial | None:
        """A new trial of the study, listed as running, claimed by this process, its
        parameters drawn and its job's overrides made (in trial_<number>); None once the
        study holds its hydra.sweeper.n_trials, those that count (`trials.tally`) and those
        running in any process sharing it. Processes sharing the study take turns here (a
        lock file beside results.csv), so none asks past the total, and a trial is claimed
        before the lock is let go (a start recovering lost trials under it takes an unclaimed
        one for a trial whose sweep died: study.py `recover_stale`)."""
        study = self.plan.study
        with table.locked(self.plan.csv_path.with_name(ASK_LOCK)):
            done, running = self.db("counting the study's trials", trials.tally, study)
            if done + running >= self.plan.n_trials:
                return None
            with interrupts.deferred():  # a trial made but not yet listed is lost
                trial = self.db("asking for a trial", study.ask)
                self.running.append(trial)
            drawn = self._draw_and_claim(trial)
        subdir = f"hydra.sweep.subdir=trial_{trial.number}"
        self.overrides[trial.number] = (*drawn, *self.plan.extra, subdir)
        return trial

    def _draw_and_claim(self, trial: optuna.Trial) -> tuple[str, ...]:
        """Draw the trial's parameters and claim it (`_draw`, `claim`), in one transaction
        (sweep/_compat/rdb.py); returns its overrides. A retry after a rollback draws on a fresh
        Trial (a Trial keeps what it has drawn)."""
        study = self.plan.study
        if self.reseed is not None and trial.number:  # before its parameters are drawn
            study.sampler = self.plan.sampler.reseeded(self.reseed + trial.number)
        self.reseed = None
        attempts = []

        def draw_and_claim() -> tuple[str, ...]:
            attempts.append(1)
            live = trial
            if len(attempts) > 1:
                live = trials.trial_by_number(study, self.plan.storage, trial.number)
            with _compat.one_transaction(live.storage):
                drawn = self._draw(live)
                claim(live)
            return drawn

        return self.db(f"drawing and claiming trial {trial.number}", draw_and_claim)

    def launch(self, trial: optuna.Trial) -> Callable[[], JobReturn]:
        """Start the trial's job (on the main thread); returns wait(), which blocks until its
        JobReturn: a forked job's result, or the launcher's call in a worker thread."""
        idx, self.job_idx = self.job_idx, self.job_idx + 1
        job = self.overrides[trial.number]
        if self.kind == "fork":  # forked now, on the main thread (sweep/launcher.py)
            return self.launcher.start(job, idx)

        def wait() -> JobReturn:  # in a worker thread
            try:
                return self.launcher.launch([job], initial_job_idx=idx)[0]
            except Exception as e:  # composing the job failed in its worker: a failed job
                return launcher.failed_return(e, job)

        return wait

    def tell(self, trial: optuna.Trial, ret: JobReturn) -> bool:
        """Record the trial's finished job (its row, its state, results.csv) and print its line;
        returns whether to ask for more. A trial told as Ctrl-C comes is printed too."""
        del self.overrides[trial.number]
        row, error, state, values, curve = self._outcome(trial, ret)
        told = printed = False
        try:
            with interrupts.deferred():  # the row without its state would be a wrong row
                self._record(trial, row, state, values, curve)
                told = True
            self.db("writing results.csv", self.plan.files.write, self.plan.study)
            with interrupts.deferred():  # a Ctrl-C now comes after the trial's line
                self.told.append(error)
                self._log_progress(row)
                printed = True
        except KeyboardInterrupt:
            if told and not printed:  # results.csv is rewritten on the way out (_fail_running)
                self._log_progress(row)
            raise
        failed = sum(e is not None for e in self.told)
        rate = failed / len(self.told)
        if error is not None and self.stop is None:
            if isinstance(error, UserError) or rate > self.plan.options.max_failure_rate:
                self.stop = error  # a UserError is bad input: every trial would fail so
        return self.stop is None

    def _draw(self, trial: optuna.Trial) -> tuple[str, ...]:
        """Draw the trial's parameters (Optuna's public suggest API) and return its overrides:
        the searched values, the fixed ones, the other overrides; as the Optuna sweeper plugin
        makes them (fixed values as user attributes, the custom search space after)."""
        plan = self.plan
        for name, dist in plan.space.items():
            search.suggest(trial, name, dist)
        trials.set_user_attrs(trial, plan.fixed)
        if plan.extend_space is not None:
            plan.extend_space(trial)
        overlap = trial.params.keys() & plan.fixed.keys()
        if overlap:
            raise UserError(
                f"{', '.join(sorted(overlap))}: both searched (custom_search_space) and fixed"
            )
        params = {**trial.params, **plan.fixed}
        return (*(f"{name}={value}" for name, value in params.items()), *plan.fixed_overrides)

    def _outcome(
        self, trial: optuna.Trial, ret: JobReturn
    ) -> tuple[dict[str, Any], BaseException | None, TrialState, list[float] | None, list]:
        """A finished job's row, its exception, the state and values to tell, and the curve to
        record (none where a pruning job reported its own)."""
        plan = self.plan
        error: BaseException | None = None
        try:
            result: JobResult = ret.return_value
        except BaseException as e:  # the job raised: the row says 'failed', and why
            error, result = e, JobResult.failed(one_line(e))
            log.warning(f"trial {trial.number} failed: {result.columns['error']}")
        run_dir = ret.hydra_cfg.hydra.runtime.output_dir if ret.hydra_cfg else None
        single = len(plan.directions) == 1
        row = result.to_row(trial.number, ret.overrides or [], run_dir, single, plan.flags)
        values = result.objective
        if result.status == "complete" and values and all(map(math.isfinite, values)):
            state, told_values = TrialState.COMPLETE, values
        elif result.status == "pruned":
            state, told_values = TrialState.PRUNED, None
        else:
            state, told_values = TrialState.FAIL, None
        curve = [] if plan.pruning else result.curve  # a pruning job reported it as it trained
        return row, error, state, told_values, curve

    def _record(
        self,
        trial: optuna.Trial,
        row: dict[str, Any],
        state: TrialState,
        values: list[float] | None,
        curve: list,
    ) -> None:
        """Record one finished job's row and curve in its trial, and tell its state: one
        storage transaction (`_compat.one_transaction`; an SQLite commit is an fsync), retried
        whole. The tell comes last in it: Optuna's cache keeps a trial it reads as finished,
        so nothing reads the trials between the tell and the commit."""
        plan = self.plan
        single = len(plan.directions) == 1

        attempts = []

        def record_and_tell() -> None:
            attempts.append(1)  # a retry reports the curve on a Trial fresh from the storage
            with _compat.one_transaction(trial.storage):
                trials.record(trial, row, curve, single, fresh=len(attempts) > 1)
                _tell_once(plan.study, trial, state, values)

        self.db(f"recording trial {trial.number}", record_and_tell)

    def _log_progress(self, row: dict[str, Any]) -> None:
        """The one line a finished trial gets (under the console's progress bar)."""
        plan = self.plan
        n_done, _ = self.db("counting the study's trials", trials.tally, plan.study)
        best = self.db("reading the best trials", _best_so_far, plan.study, plan.directions)
        plan.console.trial_done(
            f"trial {row['trial']} [{n_done}/{plan.n_trials}] {row['status']}"
            f"  {searched(row, tuple(plan.space) or ('l1_lambda',))}"
            f"  val_acc={row.get('val_acc', math.nan):.4f}"
            f"  sparsity={row.get('sparsity', math.nan):.4f}"
            f"  {row.get('train_seconds', math.nan):.1f}s  | {best}",
            n_done, best, log,
        )  # fmt: skip

    def _fail_running(self, error: BaseException) -> None:
        """After Ctrl-C or a launcher error: the running trials settled in the study (unless
        the storage is gone for good: then they stay RUNNING, and the next start records from
        its files the one whose job had finished): one whose job had finished is recorded
        from its files and printed, the others failed; results.csv rewritten, and the trials'
        processes ended (a second Ctrl-C meanwhile still ends them)."""
        study = self.plan.study
        try:
            if not isinstance(error, StorageUnavailable):
                with interrupts.deferred():
                    finished = self._settle_running()
                    # a trial told just before the interrupt may not have its row written
                    self.plan.files.write(study)
                for row in finished:
                    self._log_progress(row)
        finally:
            self._end_jobs()

    def _end_jobs(self) -> None:
        """End the running trials' processes: joblib's workers or the forked jobs (a cluster's
        jobs are the cluster's to end)."""
        if self.kind == "process":
            parallel.stop_workers()
        elif self.kind == "fork":
            self.launcher.kill_children()

    def _settle_running(self) -> list[dict[str, Any]]:
        """Tell each running trial what its job left: the result in its files where it had
        finished (returns those rows), FAIL otherwise. One told just before the interrupt, not
        yet off the list, is finished already and left alone."""
        plan, rows = self.plan, []
        running = plan.study.get_trials(deepcopy=False, states=[TrialState.RUNNING])
        unfinished = {t.number: t for t in running}
        for trial in self.running:
            frozen = unfinished.get(trial.number)
            if frozen is None:
                continue
            trial_dir = plan.csv_path.parent / f"{trials.SUBDIR}{trial.number}"
            row = told_from_files(plan.study, plan.storage, frozen, trial_dir)
            if row is not None:
                rows.append(row)
                continue
            with contextlib.suppress(ValueError, RuntimeError):  # settled meanwhile
                plan.study.tell(trial, state=TrialState.FAIL)
        return rows


def one_line(error: BaseException) -> str:
    """An exception as one line for the row's `error` column: its type and first line, and
    the first line of what it was raised from, if that says more."""
    first = (str(error).strip().splitlines() or [""])[0]
    text = f"{type(error).__name__}: {first}" if first else type(error).__name__
    cause = error.__cause__
    if cause is not None and str(cause).strip():
        text += f" ({(str(cause).strip().splitlines())[0]})"
    return text


def _tell_once(
    study: optuna.Study, trial: optuna.Trial, state: TrialState, values: list[float] | None
) -> None:
    """study.tell, safe to retry: a retry after a tell that reached the storage but whose
    answer was lost (a dropped connection) finds the trial finished, which is success."""
    try:
        study.tell(trial, values=values, state=state)
    except RuntimeError as e:
        # GridSampler calls Study.stop() once its grid is done, which ask/tell does not
        # allow; the trial is already recorded, as the stock sweeper also assumes.
        if "Study.stop" not in str(e):
            raise
    except ValueError:
        [now] = [t for t in study.get_trials(deepcopy=False) if t.number == trial.number]
        if now.state != state:
            raise


def _best_so_far(study: optuna.Study, directions: tuple[str, ...]) -> str:
    if len(directions) > 1:
        return f"pareto front: {len(study.best_trials)} trials"
    try:  # one query of the storage (best_value would ask again)
        best = study.best_trial
    except ValueError:  # no trial complete yet
        return "best: none yet"
    return f"best: trial {best.number} {best.value:.4f}"


def searched(row: dict[str, Any], keys: tuple[str, ...]) -> str:
    """The trial's values of the searched `keys`, as its line shows them (`l1_lambda=0.000125
    prune.sparsity=0.9`): from its overrides, else its row's column; numbers to 3 figures."""
    given = command.by_key(shlex.split(row.get("overrides") or ""))

    def shown(value: Any) -> str:
        try:
            return f"{float(value):.3g}"
        except (TypeError, ValueError):
            return str(value)

    return "  ".join(f"{k}={shown(given.get(k, row.get(k, math.nan)))}" for k in keys)
