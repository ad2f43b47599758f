"""The Optuna sweeper's trial loop, one trial = one row.

hydra-optuna-sweeper's loop has no per-trial hook, so this subclass keeps its options,
sampler and search-space parsing but runs its own ask/launch/tell loop, which:
- names each trial's directory after its Optuna trial number (trial_<n>), so a resumed
  study never overwrites an earlier trial (Hydra's job numbering restarts at 0);
- keeps hydra.sweeper.n_jobs trials running (auto: chosen for the machine), starting the next
  as soon as any ends, with no batch barrier (sweep/parallel.py);
- seeds its sampler by seed + its first trial's number, runs enqueued parameter sets first;
- records each job's row in its trial and rewrites results.csv from the study after every
  trial, atomically (sweep/trials.py: what a job leaves in its trial; sweep/study.py: opening
  the study, its fingerprint, stale trials, the CSV);
- tells a job that its pruner stopped PRUNED, a diverged one FAIL, and goes on;
- turns bad input into one clear line and exit code 2.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import logging
import math
import os
import stat
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import (
    BaseDistribution,
)
from optuna.trial import TrialState

from sweep import _compat
from sweep.config import schema
from sweep.errors import UserError
from sweep.results import row as result_row
from sweep.search import console, interrupts, launcher, parallel, trials
from sweep.search import space as search
from sweep.search.storage import StorageUnavailable, retrying
from sweep.search.study import (
    check_owner,
    check_same_config,
    claim,
    claim_dir,
    drop_if_unused,
    fingerprint,
    heartbeat,
    open_study,
    recover_stale,
    resume_command,
    shown,
    write_csv,
)

log = logging.getLogger(__name__)

SAMPLERS = ("hydra_plugins.hydra_optuna_sweeper.*", "optuna.samplers.*")
BASELINE_ATTR = "baseline_val_acc"
# Optuna's samplers and pruners that need a package Optuna does not install, and what to
# install: checked before trial 0 (CmaEsSampler imports `cmaes` only at its second trial).
OPTIONAL = {
    "CmaEsSampler": ("cmaes",),
    "GPSampler": ("torch", "scipy"),
    "QMCSampler": ("scipy",),
    "BoTorchSampler": ("optuna_integration", "botorch"),
    "WilcoxonPruner": ("scipy",),
}


@dataclasses.dataclass(frozen=True)
class SweepPlan:
    """What `L1Sweeper.prepare` settles before the first trial: the search space (Optuna
    distributions by key), the fixed values and other overrides every trial gets, the study
    and its storage, where results.csv goes, how many trials, how many at a time
    (`parallel.Plan`), the extra overrides of every job, whether a pruner runs, the sampler's
    reseed base and the command that resumes the study."""

    space: dict[str, BaseDistribution]
    fixed: dict[str, Any]
    fixed_overrides: tuple[str, ...]
    directions: tuple[str, ...]
    study: optuna.Study
    storage: optuna.storages.BaseStorage
    csv_path: Path
    n_trials: int
    jobs: parallel.Plan
    extra: tuple[str, ...]
    pruning: bool
    reseed: int | None
    resume: str


class L1Sweeper(Sweeper):
    """`hydra/sweeper=l1sweep`: an Optuna study over the search space, run as Hydra jobs.

    A Hydra sweeper plugin on Hydra's and Optuna's public APIs. It takes the Optuna sweeper
    plugin's options (hydra.sweeper.*: sampler, direction, storage, study_name, n_trials,
    n_jobs, max_failure_rate, params, custom_search_space, with that plugin's search-space
    syntax) and its own (pruner, stale_after, storage_wait, enqueue), and runs in plain steps:
    `prepare` (checks, the study, the plan) → `run_trials` (ask, launch, tell) → `finish`.
    Bad input is one line and exit 2 (`sweep.errors.UserError`).
    """

    def __init__(self, **options: Any) -> None:
        """The options (hydra.sweeper.*), their ranges checked first, the pruner and sampler
        made. Exits 2 with one line on bad input."""
        try:
            for key, rule in schema.rules(schema.SweeperConfig).items():
                schema.check_value(f"hydra.sweeper.{key}", rule, options.get(key))
            pruner = options.pop("pruner")
            self.stale_after: float = options.pop("stale_after")
            self.storage_wait: float = options.pop("storage_wait")
            # checked against allow_targets once the task config is known (prepare)
            self.custom_search_space: str | None = options.pop("custom_search_space", None)
            self.extend_space: Callable[[DictConfig, optuna.Trial], None] | None = None
            self.enqueue: list = list(options.pop("enqueue") or [])
            self.n_jobs = options.pop("n_jobs")  # auto or a number: resolved once data is seen
            self.n_trials: int = options.pop("n_trials")
            self.max_failure_rate: float = options.pop("max_failure_rate")
            self.direction = options.pop("direction")
            self.storage = options.pop("storage")
            self.study_name: str | None = options.pop("study_name")
            self.params: DictConfig | None = options.pop("params", None)
            sampler = options.pop("sampler")
            schema.check(pruner, "hydra.sweeper.pruner.")
            _check_sampler_target(sampler)
            try:
                self.pruner = _compat.instantiate(pruner, ("optuna.pruners.*",))
            except Exception as e:  # Optuna's own check of the pruner's options
                reason = str(e).splitlines()[0]
                raise UserError(f"hydra.sweeper.pruner: {reason}") from e
            _check_optional_packages(self.pruner, "hydra/sweeper/pruner")
            try:
                self.sampler = _compat.instantiate(sampler, SAMPLERS)
            except Exception as e:  # the sampler's own check of its options (any exception type)
                reason = str(e).splitlines()[0]
                raise UserError(
                    f"cannot make the sampler: {reason}; check hydra.sweeper.sampler.* and seed "
                    "(the sampler's seed)"
                ) from e
            _check_optional_packages(self.sampler, "hydra/sweeper/sampler")
        except UserError as e:
            log.error(f"error: {e}")
            sys.exit(2)
        self.job_idx = 0
        self._grid: dict[str, list] | None = None
        self._resume: str | None = None  # the command that continues the study, once open
        self._sampler_extra: dict[str, Any] = {}

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        """Hydra's plugin call: the composed config and the launcher that runs the jobs."""
        self.config = config
        self.hydra_context = hydra_context
        # Resolved now, from the config itself: its ${now:} is then cached in the config, so
        # hydra.sweep.dir (which names the study) holds this name for the whole sweep.
        self.study_name = config.hydra.sweeper.study_name
        self.loader = hydra_context.config_loader
        try:
            self.launcher = Plugins.instance().instantiate_launcher(
                hydra_context=hydra_context, task_function=task_function, config=config
            )
        except Exception as e:  # the launcher's own check of its options
            reason = str(e.__cause__ or e).splitlines()[0]
            log.error(f"error: hydra.launcher: {reason}")
            sys.exit(2)

    def sweep(self, arguments: list[str]) -> None:
        """Hydra's plugin call: run the sweep; bad input exits 2, a stopped sweep 1 (130 on
        Ctrl-C), each with one line and, where it helps, the command that resumes it."""
        try:
            with interrupts.handled():
                plan = self.prepare(arguments)
                start = time.perf_counter()
                told = self.run_trials(plan)
                self.finish(plan, time.perf_counter() - start)
                _check_some_finished(told)
        except UserError as e:
            log.error(f"error: {e}")
            sys.exit(2)
        except (StorageUnavailable, SweepFailed, launcher.JobDied) as e:
            # the storage gone for longer than storage_wait, every trial failed, or a trial's
            # process died: one line, and how to go on where going on can help
            resume = self._resume and not isinstance(e, SweepFailed)
            again = f"; resume with: {self._resume}" if resume else ""
            if isinstance(e, StorageUnavailable):
                e = f"{e}: the sweep stops. Finished trials keep their rows; the next start "
                e += "records a trial whose job had finished from its files, not training it again"
            log.error(f"error: {e}{again}")
            sys.exit(1)
        except KeyboardInterrupt:  # the running trials are failed in the study by now
            again = f"; resume with: {self._resume}" if self._resume else ""
            log.error(f"interrupted: the trials that were running are failed{again}")
            sys.exit(130)

    def prepare(self, arguments: list[str]) -> SweepPlan:
        """Every check that can fail before a trial runs, then the study opened (made, or
        resumed) and the plan of the run: what run_trials and finish need."""
        cfg = self.config
        space, fixed, fixed_overrides = search.parse(self.params, arguments, self.loader, cfg)
        enqueue = search.check_enqueue(self.enqueue, space)
        directions = search.directions(self.direction)
        _check_directions(list(cfg.objective.metrics), directions)
        self._check_custom_search_space(cfg)
        search.check_composable(self.loader, cfg, space, fixed, fixed_overrides)
        pruning = not isinstance(self.pruner, optuna.pruners.NopPruner)
        if pruning and len(directions) > 1:
            raise UserError(
                f"early stopping needs a single objective, and objective.metrics has "
                f"{len(directions)} ({', '.join(cfg.objective.metrics)}): Optuna reports and "
                "prunes single-objective trials only. Use hydra/sweeper/pruner=none"
            )
        sweep_dir = Path(cfg.hydra.sweep.dir)
        csv_path = sweep_dir / "results.csv"
        owner = check_owner(sweep_dir, self.study_name, self.storage)  # before writing there
        if owner is None:  # the study's own directory: a resumed study, whose configuration and
            # directions are checked now, before the data, model and optimizer are built
            resumed, _, _ = open_study(self.study_name, self.storage, directions, None,
                                       create=False)  # fmt: skip
            if resumed is not None:
                self._db("checking the study's configuration", check_same_config, resumed,
                         fingerprint(cfg, space, directions))  # fmt: skip
        # the checks above read and need no torch; these build the data, model and optimizer
        # (seconds of imports), and the first write comes after them
        self._fork_or_not(cfg)
        data_bytes = _check_task_config(cfg)
        jobs = self._plan(cfg, data_bytes)
        joblib = self._joblib()
        if joblib is not None:
            # its pool holds every slot's job; with one slot joblib runs the job in-process
            joblib.joblib["n_jobs"] = jobs.jobs
        _check_writable(sweep_dir, csv_path)

        sampler = self._make_study_sampler(space, cfg, jobs.jobs)
        study, storage, created = open_study(
            self.study_name, self.storage, directions, sampler, self.pruner
        )
        n_trials = self.n_trials
        try:  # a start that fails before its first trial leaves no study it made behind
            self._prepare_study(study, storage, cfg, space, directions, enqueue, sweep_dir, owner)
            resume = self._resume = resume_command(cfg, study.study_name, arguments, self.storage)
            where = shown(self.storage)
            log.info(f"study {study.study_name} in {where} ({len(study.trials)} trials so far)")
            log.info(f"results: {csv_path}")
            log.info(f"resume or extend with: {resume}")

            self._db("writing results.csv", write_csv, study, csv_path)  # catch up after a crash
            if self._grid is not None:
                left = self._grid_left(study)
                if left < n_trials:
                    log.info(f"grid: {left} of its points not yet run in this study; running those")
                n_trials = min(n_trials, left)
            threads = jobs.threads if cfg.train.threads is None else None
            extra = [f"train.threads={threads}"] if threads is not None else []
            extra += self._baseline(cfg, study, fixed, fixed_overrides)
        except BaseException:
            if created:
                drop_if_unused(study, storage)
            raise
        # The sampler draws with seed + the number of the first trial this process asks: numbers
        # are unique in a study, so processes sharing one (even started at the same instant on
        # an empty study) draw differently; a lone process on a new study uses `seed` itself
        # (reproducible), and a resumed study does not replay its first draws.
        seed = cfg.hydra.sweeper.sampler.get("seed")
        reseed = seed is not None and not isinstance(self.sampler, functools.partial)
        if pruning:  # each job reaches its trial by name: the name resolved here, not ${now:}
            extra.append(f"hydra.sweeper.study_name={study.study_name}")
        log.info(
            f"{jobs.jobs} trial(s) at a time"
            + (f", train.threads={threads} each" if threads else "")
            + f" (n_jobs={self.n_jobs}: {jobs.why})"
            + (", TPE with constant_liar" if self._sampler_extra else "")
            + (", forked from a forkserver" if self._start_method() == "forkserver" else "")
        )
        self._console = console.SweepConsole(n_trials, cfg.hydra.verbose, cfg.hydra.overrides.task)
        return SweepPlan(
            space=space, fixed=fixed, fixed_overrides=tuple(fixed_overrides),
            directions=tuple(directions), study=study, storage=storage, csv_path=csv_path,
            n_trials=n_trials, jobs=jobs, extra=tuple(extra), pruning=pruning,
            reseed=seed if reseed else None, resume=resume,
        )  # fmt: skip

    def _prepare_study(
        self,
        study: optuna.Study,
        storage: optuna.storages.BaseStorage,
        cfg: DictConfig,
        space: dict,
        directions: list[str],
        enqueue: list[dict],
        sweep_dir: Path,
        owner: str | None,
    ) -> None:
        """The study's side of the start: its configuration checked (or recorded, on a new
        study), the sweep directory claimed, its metric names, lost trials recovered (from
        their files where they finished) and the enqueued parameter sets added."""
        self._db("checking the study's configuration", check_same_config, study,
                 fingerprint(cfg, space, directions))  # fmt: skip
        if owner is not None:  # before anything is written there
            claim_dir(sweep_dir, study, self.storage, owner)
        with warnings.catch_warnings():  # experimental since Optuna 3.2, and what dashboards show
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self._db("naming the metrics", study.set_metric_names, list(cfg.objective.metrics))
        # before any ask: their parameters run first
        self._db("recovering lost trials", recover_stale, study, self.stale_after, sweep_dir,
                 storage=storage)  # fmt: skip
        for params in enqueue:  # run before the sampler's own; not again in a resumed study
            self._db("enqueuing", study.enqueue_trial, params, skip_if_exists=True)

    def _db(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """fn(*args, **kwargs), a storage operation, retried while the storage fails for a
        while (sweep/storage.py); `what` names it in the log and the final line."""
        where = shown(self.storage)
        return retrying(what, lambda: fn(*args, **kwargs), self.storage_wait, where)

    def _check_custom_search_space(self, cfg: DictConfig) -> None:
        """hydra.sweeper.custom_search_space is outside code (unless it is l1sweep's): it runs
        only if allow_targets allows it, and is logged as other allowed targets are
        (sweep/user_code.py)."""
        name = self.custom_search_space
        if not name:
            return
        from sweep.config import (
            user_code,  # imports torch: a single run's bad override need not wait
        )

        key = "hydra.sweeper.custom_search_space"
        base = ("sweep.*",)
        user = user_code.allowed(cfg)
        if not user_code.is_allowed(name, base + user):
            raise user_code.refusal(key, name, target=False)
        if not user_code.is_allowed(name, base):
            log.info(f"{key}: running outside code {name} (allowed by allow_targets={list(user)})")
        try:
            self.extend_space = _compat.instantiate(
                {"_target_": name, "_partial_": True}, base + user
            )
        except Exception as e:
            reason = (str(e).splitlines() or [type(e).__name__])[0]
            raise UserError(f"{key}={name} cannot be imported ({reason})") from e

    def _fork_or_not(self, cfg: DictConfig) -> None:
        """The fork launcher (the default) forks its trials where that is safe, and keeps this
        process at one torch thread for it; elsewhere it hands them to joblib's launcher."""
        chosen = self.launcher
        if isinstance(chosen, launcher.ForkLauncher):
            why = launcher.unsafe(_device(cfg))
            if why is None:
                launcher.single_threaded()
            else:
                chosen.use_joblib(why)

    def _runner(self) -> Any:
        """The launcher that runs the trials: the fork launcher's joblib, where it handed
        them over."""
        used = self.launcher
        if isinstance(used, launcher.ForkLauncher) and used.fallback is not None:
            return used.fallback
        return used

    def _start_method(self) -> str | None:
        """How the fork launcher starts the trials' processes (None: another launcher runs them)."""
        return getattr(self._runner(), "start_method", None)

    def _launcher(self) -> str:
        """The class path of the launcher that runs the trials."""
        runner = type(self._runner())
        return f"{runner.__module__}.{runner.__name__}"

    def _joblib(self) -> Any:
        """The joblib launcher that runs the trials, if one does."""
        return self._runner() if "joblib" in self._launcher() else None

    def _plan(self, cfg: DictConfig, data_bytes: int) -> parallel.Plan:
        device = _device(cfg)
        return parallel.plan(
            self.n_jobs, launcher=self._launcher(), device=device,
            n_trials=self.n_trials, cores=parallel.cores(),
            memory=parallel.available_memory(), data_bytes=data_bytes, threads=cfg.train.threads,
            gpu_memory=parallel.gpu_memory() if device == "cuda" else None,
            shares_data=self._start_method() == "fork",
        )  # fmt: skip

    def run_trials(self, plan: SweepPlan) -> list[BaseException | None]:
        """Run plan.n_trials trials, plan.jobs.jobs at a time (sweep/parallel.py); each is told
        and its row written as it finishes. Returns each told trial's error (None: it did not
        fail).

        The rule for failures, Optuna's `catch` made a rate: a trial whose job raised (or whose
        process died) is a failed trial with its row; the sweep goes on while the failed share
        of the trials told so far is at most hydra.sweeper.max_failure_rate (0 by default: the
        first failure stops the asking). A diverged trial is a result, not a failure. A
        UserError always stops (bad input: every trial would fail so). The stopping error is
        raised once the running trials are told. A storage that stays unavailable
        (StorageUnavailable) stops at once, leaving the running trials RUNNING for the next
        start to settle from their files."""
        study = plan.study
        kind = parallel.launcher_kind(self._launcher())
        overrides: dict[int, tuple[str, ...]] = {}
        told: list[BaseException | None] = []
        stop: list[BaseException] = []
        reseed = plan.reseed

        def ask() -> optuna.Trial:
            nonlocal reseed
            with interrupts.deferred():  # a trial made but not yet listed is lost
                trial = self._db("asking for a trial", study.ask)
                running.append(trial)
            self._db(f"claiming trial {trial.number}", claim, trial)
            if reseed is not None and trial.number:  # before its parameters are drawn
                study.sampler = self._make_sampler(seed=reseed + trial.number)
            reseed = None
            subdir = f"hydra.sweep.subdir=trial_{trial.number}"
            overrides[trial.number] = (*self._draw(trial, plan), *plan.extra, subdir)
            return trial

        def launch(trial: optuna.Trial) -> Callable[[], JobReturn]:  # main thread
            idx, self.job_idx = self.job_idx, self.job_idx + 1
            job = overrides[trial.number]
            if kind == "fork":  # forked now, on the main thread (sweep/launcher.py)
                return self.launcher.start(job, idx)

            def wait() -> JobReturn:  # in a worker thread
                try:
                    return self.launcher.launch([job], initial_job_idx=idx)[0]
                except Exception as e:  # composing the job failed in its worker: a failed job
                    return launcher.failed_return(e, job)

            return wait

        def tell(trial: optuna.Trial, ret: JobReturn) -> bool:
            del overrides[trial.number]
            row, error = self._tell(plan, trial, ret)
            told.append(error)
            self._log_progress(plan, row, len(told))
            failed = sum(e is not None for e in told)
            if (
                error is not None
                and not stop
                and (isinstance(error, UserError) or failed / len(told) > self.max_failure_rate)
            ):
                stop.append(error)  # a UserError is bad input: every trial would fail so
            return not stop

        running: list[optuna.Trial] = []  # asked, not yet told
        try:
            # beats often enough that a live trial is never taken for a lost one
            with heartbeat(running, every=min(30.0, self.stale_after / 4)):
                parallel.run(plan.n_trials, plan.jobs.jobs, ask, launch, tell, running)
        except BaseException as e:  # Ctrl-C or a launcher error: leave no trial RUNNING for ever
            interrupts.clear()  # this one is handled here
            try:
                # a storage gone for good cannot be told: the running trials stay RUNNING, and
                # the next start records from its files the one whose job had finished
                if not isinstance(e, StorageUnavailable):
                    with interrupts.deferred():
                        for t in running:
                            # one told just before the interrupt, not yet off the list, is
                            # finished
                            with contextlib.suppress(ValueError, RuntimeError):
                                study.tell(t, state=TrialState.FAIL)
                        # a trial told just before the interrupt may not have its row written
                        write_csv(study, plan.csv_path)
            finally:  # a second Ctrl-C meanwhile still ends the trials' processes
                if kind == "process":
                    parallel.stop_workers()
                elif kind == "fork":
                    self.launcher.kill_children()
            raise
        if stop:
            raise stop[0]  # a programming error: stop with its traceback
        return told

    def _draw(self, trial: optuna.Trial, plan: SweepPlan) -> tuple[str, ...]:
        """Draw the trial's parameters (Optuna's public suggest API) and return its overrides:
        the searched values, the fixed ones, the other overrides; as the Optuna sweeper plugin
        makes them (fixed values as user attributes, the custom search space after)."""
        for name, dist in plan.space.items():
            search.suggest(trial, name, dist)
        for name, value in plan.fixed.items():
            trial.set_user_attr(name, value)
        if self.extend_space is not None:
            self.extend_space(self.config, trial)
        overlap = trial.params.keys() & plan.fixed.keys()
        if overlap:
            raise UserError(
                f"{', '.join(sorted(overlap))}: both searched (custom_search_space) and fixed"
            )
        params = {**trial.params, **plan.fixed}
        return (*(f"{name}={value}" for name, value in params.items()), *plan.fixed_overrides)

    def _make_sampler(self, **kwargs: Any) -> optuna.samplers.BaseSampler:
        """The configured sampler with `kwargs` and, for parallel trials, TPE's constant liar."""
        return _compat.instantiate(
            self.config.hydra.sweeper.sampler, SAMPLERS, **self._sampler_extra, **kwargs
        )

    def _make_study_sampler(
        self, space: dict, cfg: DictConfig, jobs: int
    ) -> optuna.samplers.BaseSampler:
        """The configured sampler; GridSampler (a partial) gets its grid, as the stock loop does.
        TPE with parallel trials gets constant_liar=True (Optuna's option for that: a running
        trial counts as a bad result, so concurrent asks do not all draw the same point),
        unless the command line sets hydra.sweeper.sampler.constant_liar."""
        chosen = any(
            o.startswith("hydra.sweeper.sampler.constant_liar=") for o in cfg.hydra.overrides.hydra
        )
        if jobs > 1 and isinstance(self.sampler, optuna.samplers.TPESampler) and not chosen:
            self._sampler_extra = {"constant_liar": True}
            self.sampler = self._make_sampler()
        if not isinstance(self.sampler, functools.partial):
            return self.sampler
        try:
            grid = {name: search.grid_choices(d) for name, d in space.items()}
        except ValueError as e:
            raise UserError(
                f"{e} Every searched key needs choice(...) or range(...) with the grid sampler, "
                f"e.g. 'l1_lambda=choice(1e-5,1e-4,1e-3)'; searched: {', '.join(space)}"
            ) from e
        self._grid = grid
        return self.sampler(grid)

    def _grid_left(self, study: optuna.Study) -> int:
        """Grid points no finished trial of the study has run. GridSampler re-runs a finished
        point once none is left; a rerun of a finished grid study must run nothing instead."""
        finished = (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)
        done = {
            tuple(t.params.get(k) for k in self._grid)
            for t in study.get_trials(deepcopy=False, states=finished)
        }
        return len(set(itertools.product(*self._grid.values())) - done)

    def _tell(
        self, plan: SweepPlan, trial: optuna.Trial, ret: JobReturn
    ) -> tuple[dict, BaseException | None]:
        """Record one finished job in the study and in results.csv; return its row, exception."""
        study, directions = plan.study, plan.directions
        error: BaseException | None = None
        try:
            metrics = dict(ret.return_value)
        except BaseException as e:  # the job raised: the row says 'failed', and why
            error, metrics = e, {"status": "failed", "error": one_line(e)}
            log.warning(f"trial {trial.number} failed: {metrics['error']}")
        curve = metrics.pop("val_acc_curve", [])  # metrics.json keeps it; the CSV row does not
        run_dir = ret.hydra_cfg.hydra.runtime.output_dir if ret.hydra_cfg else None
        row = result_row.of_trial(trial.number, metrics, ret.overrides or [], run_dir,
                                  len(directions) == 1)  # fmt: skip
        values = metrics.get("objective")
        if metrics["status"] == "complete" and values and all(map(math.isfinite, values)):
            state, told_values = TrialState.COMPLETE, values
        elif metrics["status"] == "pruned":
            state, told_values = TrialState.PRUNED, None
        else:
            state, told_values = TrialState.FAIL, None
        with interrupts.deferred():  # the row without its state would be a wrong row
            # a pruning job reported its curve itself, as it trained
            self._db(f"recording trial {trial.number}", trials.record, trial, row,
                     [] if plan.pruning else curve, len(directions) == 1)  # fmt: skip
            self._db(f"telling trial {trial.number}", _tell_once, study, trial, state, told_values)
        self._db("writing results.csv", write_csv, study, plan.csv_path)
        return row, error

    def _baseline(
        self,
        cfg: DictConfig,
        study: optuna.Study,
        fixed: dict[str, Any],
        fixed_overrides: list[str],
    ) -> list[str]:
        """For objectives relative to the dense model, train it once per study: the sweep's fixed
        overrides (as a trial gets them), the searched keys at their defaults, and no
        regularizer and no pruning (the same recipe otherwise)."""
        if "max_drop" not in cfg.objective:
            return []
        value = cfg.objective.baseline_val_acc
        if value is None:
            value = study.user_attrs.get(BASELINE_ATTR)
        if value is None:
            dense = ("regularizer", "prune")
            keep = [f"{k}={v}" for k, v in fixed.items()
                    if k.lstrip("+~").split(".")[0] not in dense]  # fmt: skip
            log.info("training the dense baseline (regularizer=none prune=none) for this study")
            dense_run = (*keep, *fixed_overrides, "regularizer=none", "prune=none")
            [ret] = self.launcher.launch(
                [(*dense_run, "hydra.sweep.subdir=baseline")], initial_job_idx=self.job_idx
            )
            self.job_idx += 1
            value = float(ret.return_value["val_acc"])
            study.set_user_attr(BASELINE_ATTR, value)
        log.info(f"baseline val_acc {value:.4f}; floor {value - cfg.objective.max_drop:.4f}")
        return [f"objective.baseline_val_acc={value!r}"]

    def _log_progress(self, plan: SweepPlan, row: dict, n_done: int) -> None:
        """The one line a finished trial gets (under the console's progress bar)."""
        best = self._db("reading the best trials", _best_so_far, plan.study, plan.directions)
        self._console.trial_done(
            f"trial {row['trial']} [{n_done}/{plan.n_trials}] {row['status']}"
            f"  l1_lambda={row.get('l1_lambda', math.nan):.3g}"
            f"  val_acc={row.get('val_acc', math.nan):.4f}"
            f"  sparsity={row.get('sparsity', math.nan):.4f}"
            f"  {row.get('train_seconds', math.nan):.1f}s  | {best}",
            n_done, best, log,
        )  # fmt: skip

    def finish(self, plan: SweepPlan, seconds: float) -> None:
        """After the last trial: optimization_results.yaml (Hydra's Optuna sweeper's file),
        the summary and the resume command in the log, the CSV's path on stdout."""
        self._console.close()
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
        summary.update(metrics=list(self.config.objective.metrics), directions=list(directions))
        OmegaConf.save(OmegaConf.create(summary), csv_path.parent / "optimization_results.yaml")
        pruned = study.get_trials(deepcopy=False, states=[TrialState.PRUNED])
        log.info(
            f"study {study.study_name}: {len(complete)} complete, {len(pruned)} pruned"
            f" of {len(study.trials)} trials"
        )
        log.info(f"sweep took {seconds:.1f}s; results: {csv_path}")
        log.info(f"resume or extend with: {plan.resume}")
        print(csv_path)


class SweepFailed(Exception):
    """Every trial this sweep ran failed: nothing was learnt, so the sweep ends non-zero."""


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


def _best_so_far(study: optuna.Study, directions: list[str]) -> str:
    if len(directions) > 1:
        return f"pareto front: {len(study.best_trials)} trials"
    if study.get_trials(deepcopy=False, states=[TrialState.COMPLETE]):
        return f"best: trial {study.best_trial.number} {study.best_value:.4f}"
    return "best: none yet"


def _check_directions(metrics: list[str], directions: list[str]) -> None:
    """One direction per metric (objective.metrics, objective.direction), before the study is
    made with those directions."""
    if len(metrics) != len(directions):
        example = ",".join(["maximize"] * len(metrics))
        raise UserError(
            f"objective.metrics has {len(metrics)} ({', '.join(metrics)}) but "
            f"objective.direction has {len(directions)} ({', '.join(directions)}): give one "
            f"direction per metric, e.g. 'objective.direction=[{example}]'"
        )


def _check_sampler_target(sampler: DictConfig) -> None:
    """Samplers Optuna no longer has, named as what replaces them."""
    if str(sampler.get("_target_", "")).endswith("raise_motpe_removed"):
        raise UserError(
            "hydra/sweeper/sampler=motpe: Optuna removed MOTPESampler in version 4.0; "
            "TPESampler handles several objectives: use hydra/sweeper/sampler=tpe (the default)"
        )


def _check_optional_packages(made: object, group: str) -> None:
    """A sampler or pruner that needs a package Optuna does not install: one line saying
    what to install, before any trial (some import it only at their second trial)."""
    import importlib.util

    for kind in type(made).__mro__:
        needs = OPTIONAL.get(kind.__name__)
        if needs and kind.__module__.startswith("optuna"):
            missing = [m for m in needs if importlib.util.find_spec(m) is None]
            if missing:
                option = group.rsplit("/", 1)[-1]
                raise UserError(
                    f"{group}: Optuna's {kind.__name__} needs the optional package(s) "
                    f"{', '.join(missing)}, not installed: pip install {' '.join(missing)}, or "
                    f"choose another {option}"
                )
            return


def _check_some_finished(told: list[BaseException | None]) -> None:
    """A sweep whose every trial failed (an exception in each job, tolerated by
    max_failure_rate) ends non-zero, as Hydra's Optuna sweeper does: its results are empty."""
    errors = [e for e in told if e is not None]
    if told and len(errors) == len(told):
        raise SweepFailed(
            f"every trial of this sweep failed ({len(told)} of {len(told)}); the first: "
            f"{one_line(errors[0])} (the rows' error column has each)"
        )


def _check_task_config(cfg: DictConfig) -> int:
    """Validate the task config, and load its data once, before any trial; returns the
    data's size in bytes (each parallel worker holds its own copy).

    Building the data, model and optimizer here also pays torch's lazy imports (seconds) once
    at start-up instead of inside the first trial; the data stays cached for the trials.
    """
    from sweep.config import user_code
    from sweep.task import job
    from sweep.training import train

    task = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    job.check(task)
    job.callbacks(task)
    train.resolve_device(task.device)
    data = train.build(task.data, seed=task.seed)
    model = train.build(task.model, n_inputs=data.n_inputs, n_classes=data.n_classes,
                        input_shape=data.image_shape)  # fmt: skip
    train.make_optimizer(task.optimizer, model)
    user_code.check_model(model, data)
    return sum(t.nbytes for t in (data.x_train, data.y_train, data.x_val, data.y_val,
                                  data.x_test, data.y_test))  # fmt: skip


def _read_only(path: Path) -> bool:
    # The mode bits count too: root may write anywhere, but a file marked read-only is a
    # user's "do not touch", and replacing it by rename would ignore that.
    return not os.access(path, os.W_OK) or not path.stat().st_mode & stat.S_IWUSR


def _check_writable(sweep_dir: Path, csv_path: Path) -> None:
    try:
        sweep_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create the sweep directory {sweep_dir}: {e.strerror}") from e
    if _read_only(sweep_dir):
        raise UserError(f"the sweep directory {sweep_dir} is read-only; make it writable")
    if csv_path.exists() and _read_only(csv_path):
        raise UserError(f"{csv_path} is read-only; make it writable or use a new study_name")


def _device(cfg: DictConfig) -> str:
    """The device type trials will train on (cpu, cuda, mps)."""
    from sweep.training import train

    return train.resolve_device(cfg.device).type
