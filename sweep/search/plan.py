"""Before a sweep's first trial: its options checked (`Options.of`), then every check that can
fail before a trial runs, the study opened (made, or resumed) and the run planned
(`Planner.prepare`), in one frozen `SweepPlan` that the trial loop (sweep/search/loop.py) and
the sweep's end read.

    Options.of(hydra.sweeper.*)      # ranges, the pruner and the sampler made
    Planner.prepare(arguments)       # the search space, checks, the one pre-flight check of the
      -> SweepPlan                   #   task config (job.preflight), parallelism, the study
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import shutil
import stat
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from hydra.core.config_loader import ConfigLoader
from hydra.plugins.launcher import Launcher
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import BaseDistribution

from sweep import _compat
from sweep.config import schema
from sweep.errors import UserError
from sweep.results import command, table
from sweep.search import console, front, launcher, parallel, sampling, trials
from sweep.search import space as search
from sweep.search.storage import retrying
from sweep.search.study import (
    ASK_LOCK,
    ResultFiles,
    check_owner,
    check_same_config,
    claim_dir,
    drop_if_unused,
    fingerprint,
    hydra_value,
    open_study,
    recover_stale,
    resume_command,
    shown,
)

log = logging.getLogger(__name__)
BASELINE_ATTR = "baseline_val_acc"


@dataclasses.dataclass(frozen=True)
class Options:
    """hydra.sweeper.*, checked and made (`Options.of`): the Optuna sweeper plugin's options
    (n_trials, n_jobs: `auto` or a number, max_failure_rate, direction, storage, study_name,
    params, custom_search_space) and l1sweep's (enqueue, stale_after and storage_wait in
    seconds), with the pruner and the sampler made (the sampler may be GridSampler's partial,
    which gets its grid with the search space)."""

    n_trials: int
    n_jobs: int | str
    max_failure_rate: float
    direction: Any
    storage: Any
    study_name: str | None
    params: DictConfig | None
    enqueue: tuple[Any, ...]
    custom_search_space: str | None
    stale_after: float
    storage_wait: float
    pruner: optuna.pruners.BasePruner
    sampler: Any

    @classmethod
    def of(cls, options: dict[str, Any]) -> Options:
        """The options as Hydra hands them to the sweeper. Raises UserError (one line) for a
        value out of range, a sampler Optuna removed, a pruner's or sampler's options Optuna
        refuses, or one whose optional package is not installed."""
        for key, rule in schema.rules(schema.SweeperConfig).items():
            schema.check_value(f"hydra.sweeper.{key}", rule, options.get(key))
        schema.check(options["pruner"], "hydra.sweeper.pruner.")
        sampling.check_sampler_target(options["sampler"])
        pruner = sampling.make_pruner(options["pruner"])
        return cls(
            n_trials=options["n_trials"], n_jobs=options["n_jobs"],
            max_failure_rate=options["max_failure_rate"], direction=options["direction"],
            storage=options["storage"], study_name=options["study_name"],
            params=options.get("params"), enqueue=tuple(options["enqueue"] or ()),
            # checked against allow_targets once the task config is known (prepare)
            custom_search_space=options.get("custom_search_space"),
            stale_after=options["stale_after"], storage_wait=options["storage_wait"],
            pruner=pruner, sampler=sampling.make_sampler(options["sampler"]),
        )  # fmt: skip

    def db(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """fn(*args, **kwargs), a storage operation, retried while the storage fails for a
        while (sweep/search/storage.py); `what` names it in the log and the final line."""
        return retrying(what, lambda: fn(*args, **kwargs), self.storage_wait, shown(self.storage))


@dataclasses.dataclass(frozen=True)
class SweepPlan:
    """What `Planner.prepare` settles before the first trial: the search space (Optuna
    distributions by key), the fixed values and other overrides every trial gets, the
    objective's metrics and directions, the study and its storage, where results.csv goes, how
    many trials the study holds when done (`n_trials`: those that count, `trials.tally`, in
    every process sharing it), the most this start asks (`limit`: a grid's points left), how
    many at a time (`parallel.Plan`), the extra overrides of every job, whether
    a pruner runs, the sampler (`reseed`: its seed base, None where it keeps its own), the
    custom search space, Hydra's number for the first trial's job, the console, the
    command that resumes the study and the flags that chose its configuration."""

    options: Options
    space: dict[str, BaseDistribution]
    fixed: dict[str, Any]
    fixed_overrides: tuple[str, ...]
    metrics: tuple[str, ...]
    directions: tuple[str, ...]
    study: optuna.Study
    storage: optuna.storages.BaseStorage
    files: ResultFiles  # results.csv and points.csv: the start's catch-up built their rows
    n_trials: int
    limit: int
    jobs: parallel.Plan
    extra: tuple[str, ...]
    pruning: bool
    sampler: sampling.StudySampler
    reseed: int | None
    extend_space: Callable[[optuna.Trial], None] | None
    first_job: int
    console: console.SweepConsole
    resume: str
    flags: tuple[str, ...]  # how the configuration was chosen (results/command.py)

    @property
    def csv_path(self) -> Path:
        """results.csv (`files`' path)."""
        return self.files.csv_path


def resume_hint(n_trials: int) -> str:
    """What follows the resume command: n_trials is the study's total."""
    return (
        f" (hydra.sweeper.n_trials={n_trials} is the study's total of finished trials: the "
        "same command finishes the study, a larger n_trials extends it)"
    )


@dataclasses.dataclass(frozen=True)
class _Space:
    """The search space as `search.parse` reads it, and what the study optimizes."""

    space: dict[str, BaseDistribution]
    fixed: dict[str, Any]
    fixed_overrides: list[str]
    directions: list[str]
    enqueue: list[dict]
    extend_space: Callable[[optuna.Trial], None] | None
    pruning: bool


class Planner:
    """Prepares one sweep of the composed `config` with `options`, its jobs run by `chosen`
    (the configured launcher) and composed by `loader`. `resume` is the command that
    continues the study once it is open: the error line of a sweep stopped before its plan is
    done names it. `job_idx` counts the Hydra jobs launched so far (the dense baseline's)."""

    def __init__(
        self, options: Options, config: DictConfig, chosen: Launcher, loader: ConfigLoader
    ) -> None:
        self.options, self.config, self.launcher, self.loader = options, config, chosen, loader
        self.resume: str | None = None
        self.job_idx = 0

    def prepare(self, arguments: list[str]) -> SweepPlan:
        """Every check that can fail before a trial runs, then the study opened (made, or
        resumed) and the plan of the run: what the trial loop and the sweep's end need.
        Raises UserError (bad input), StorageUnavailable, or the baseline job's error."""
        cfg, options = self.config, self.options
        searched = self._search_space(cfg, arguments)
        sweep_dir = Path(cfg.hydra.sweep.dir)
        csv_path = sweep_dir / "results.csv"
        owner = check_owner(sweep_dir, options.study_name, options.storage)  # before writing
        left = self._resumed(searched) if owner is None else options.n_trials
        # the checks above read and need no torch; these build the data, model and optimizer
        # (seconds of imports), and the first write comes after them
        jobs = self._parallel(cfg, left)
        sampler = sampling.for_study(options.sampler, cfg, searched.space, jobs.jobs)
        made = _check_writable(sweep_dir, csv_path)  # a start that fails before trial 0 removes it
        created = False
        try:  # a start that fails before its first trial leaves no study it made behind
            study, storage, created = open_study(options.study_name, options.storage,
                                                 searched.directions, sampler.sampler,
                                                 options.pruner)  # fmt: skip
            self._prepare_study(study, storage, searched, sweep_dir, owner)
            files = ResultFiles(csv_path)  # kept for the loop: each row built once a process
            limit, done = self._announce(study, arguments, files, sampler)
            threads = jobs.threads if cfg.train.threads is None else None
            extra = [f"train.threads={threads}"] if threads is not None else []
            extra += self._baseline(cfg, study, searched.fixed, searched.fixed_overrides)
        except BaseException:
            if created:
                drop_if_unused(study, storage)
            if made:  # its owner record, results.csv, baseline/: unless a worker beside it ran
                _unmake(sweep_dir)
            raise
        if searched.pruning:  # each job reaches its trial by name: the name resolved, not ${now:}
            extra.append(f"hydra.sweeper.study_name={hydra_value(study.study_name)}")
        # The sampler draws with seed + the number of the first trial this process asks: numbers
        # are unique in a study, so processes sharing one (even started at the same instant on
        # an empty study) draw differently; a lone process on a new study uses `seed` itself
        # (reproducible), and a resumed study does not replay its first draws.
        seed = cfg.hydra.sweeper.sampler.get("seed")
        self._log_parallel(cfg, jobs, sampler)
        assert self.resume is not None
        return SweepPlan(
            options=options, space=searched.space, fixed=searched.fixed,
            fixed_overrides=tuple(searched.fixed_overrides),
            metrics=tuple(cfg.objective.metrics), directions=tuple(searched.directions),
            study=study, storage=storage, files=files, n_trials=options.n_trials,
            limit=limit, jobs=jobs, extra=tuple(extra), pruning=searched.pruning, sampler=sampler,
            reseed=seed if seed is not None and sampler.grid is None else None,
            extend_space=searched.extend_space, first_job=self.job_idx,
            console=console.SweepConsole(options.n_trials, cfg.hydra.verbose,
                                         cfg.hydra.overrides.task, done=done),
            resume=self.resume, flags=tuple(command.config_flags(self.config.hydra)),
        )  # fmt: skip

    def _search_space(self, cfg: DictConfig, arguments: list[str]) -> _Space:
        """The search space (hydra.sweeper.params and the command line's sweep overrides),
        the enqueued points, the directions and the custom search space, checked against each
        other and against every configuration the search can compose."""
        options = self.options
        space, fixed, fixed_overrides = search.parse(options.params, arguments, self.loader, cfg)
        enqueue = search.check_enqueue(list(options.enqueue), space)
        directions = search.directions(options.direction)
        _check_directions(list(cfg.objective.metrics), directions)
        extend_space = self._custom_search_space(cfg)
        search.check_composable(self.loader, cfg, space, fixed, fixed_overrides)
        pruning = not isinstance(options.pruner, optuna.pruners.NopPruner)
        front.check_pruner(options.pruner, list(cfg.objective.metrics))
        return _Space(space, fixed, fixed_overrides, directions, enqueue, extend_space, pruning)

    def _resumed(self, searched: _Space) -> int:
        """In the study's own directory: a resumed study's configuration and directions
        checked now, before the data, model and optimizer are built. Returns the trials left
        to run (at least 1: how many run at once follows from it)."""
        options = self.options
        resumed, _, _ = open_study(options.study_name, options.storage, searched.directions,
                                   None, create=False)  # fmt: skip
        if resumed is None:
            return options.n_trials
        options.db("checking the study's configuration", check_same_config, resumed,
                   fingerprint(self.config, searched.space, searched.directions))  # fmt: skip
        done, _ = options.db("counting the study's trials", trials.tally, resumed)
        return max(1, options.n_trials - done)

    def _parallel(self, cfg: DictConfig, left: int) -> parallel.Plan:
        """Whether the trials are forked, the task config's one pre-flight check (its data
        loaded once, its trackers reached), and how many trials run at once (for the `left`
        trials to run), with how many threads each."""
        if isinstance(self.launcher, launcher.ForkLauncher):
            launcher.fork_or_not(self.launcher, _device(cfg))
        data_bytes = _check_task_config(cfg)
        device = _device(cfg)
        jobs = parallel.plan(
            self.options.n_jobs, launcher=launcher.class_path(self.launcher), device=device,
            n_trials=left, cores=parallel.cores(),
            memory=parallel.available_memory(), data_bytes=data_bytes, threads=cfg.train.threads,
            gpu_memory=parallel.gpu_memory() if device == "cuda" else None,
            shares_data=launcher.start_method(self.launcher) == "fork",
        )  # fmt: skip
        joblib = launcher.joblib_of(self.launcher)
        if joblib is not None:
            # its pool holds every slot's job; with one slot joblib runs the job in-process
            joblib.joblib["n_jobs"] = jobs.jobs
        return jobs

    def _prepare_study(
        self,
        study: optuna.Study,
        storage: optuna.storages.BaseStorage,
        searched: _Space,
        sweep_dir: Path,
        owner: str | None,
    ) -> None:
        """The study's side of the start: its configuration checked (or recorded, on a new
        study), the sweep directory claimed, its metric names, lost trials recovered (from
        their files where they finished) and the enqueued parameter sets added."""
        cfg, db = self.config, self.options.db
        db("checking the study's configuration", check_same_config, study,
           fingerprint(cfg, searched.space, searched.directions))  # fmt: skip
        if owner is not None:  # before anything is written there
            claim_dir(sweep_dir, study, self.options.storage, owner)
        with warnings.catch_warnings():  # experimental since Optuna 3.2, and what dashboards show
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            db("naming the metrics", study.set_metric_names, list(cfg.objective.metrics))
        # before any ask: their parameters run first; under the ask lock, so that a trial
        # another process is claiming now is not taken for a lost one
        with table.locked(sweep_dir / ASK_LOCK):
            db("recovering lost trials", recover_stale, study, self.options.stale_after,
               sweep_dir, storage=storage, unclaimed_are_lost=True)  # fmt: skip
        for params in searched.enqueue:  # run before the sampler's own; not again when resumed
            db("enqueuing", study.enqueue_trial, params, skip_if_exists=True)

    def _announce(
        self,
        study: optuna.Study,
        arguments: list[str],
        files: ResultFiles,
        sampler: sampling.StudySampler,
    ) -> tuple[int, int]:
        """The resume command known (`self.resume`) and logged with the study and the CSV's
        path; results.csv caught up with the study. Returns the most trials this start may ask
        (fewer where a grid has fewer points left) and the trials of the study that count
        toward hydra.sweeper.n_trials (`trials.tally`); says so in one line where the study
        holds them all already."""
        options, n_trials = self.options, self.options.n_trials
        resume = self.resume = resume_command(self.config, study.study_name, arguments,
                                              options.storage)  # fmt: skip
        where = shown(options.storage)
        log.info(f"study {study.study_name} in {where} ({len(study.trials)} trials so far)")
        log.info(f"results: {files.csv_path}")
        log.info(f"resume or extend with: {resume}{resume_hint(n_trials)}")
        options.db("writing results.csv", files.write, study)  # catch up after a crash
        done, running = options.db("counting the study's trials", trials.tally, study)
        if done >= n_trials:
            log.info(
                f"study {study.study_name} has {done} finished trials, hydra.sweeper.n_trials="
                f"{n_trials}: nothing to run. To extend it, raise hydra.sweeper.n_trials"
            )
        elif done + running >= n_trials:
            log.info(f"study {study.study_name}: {done} trials finished and {running} running "
                     f"in other processes make hydra.sweeper.n_trials={n_trials}: nothing to "
                     "start here")  # fmt: skip
        limit = n_trials
        if sampler.grid is not None:
            left = sampler.grid_left(study)
            if left < n_trials - done:
                log.info(f"grid: {left} of its points not yet run in this study; running those")
            limit = min(limit, left)
        return limit, done

    def _log_parallel(
        self, cfg: DictConfig, jobs: parallel.Plan, sampler: sampling.StudySampler
    ) -> None:
        """The line that says how many trials run at once, and how."""
        threads = jobs.threads if cfg.train.threads is None else None
        forkserver = launcher.start_method(self.launcher) == "forkserver"
        log.info(
            f"{jobs.jobs} trial(s) at a time"
            + (f", train.threads={threads} each" if threads else "")
            + f" (n_jobs={self.options.n_jobs}: {jobs.why})"
            + (_liar(sampler) if jobs.jobs > 1 else "")
            + (", forked from a forkserver" if forkserver else "")
        )

    def _custom_search_space(self, cfg: DictConfig) -> Callable[[optuna.Trial], None] | None:
        """hydra.sweeper.custom_search_space is outside code (unless it is l1sweep's): it runs
        only if allow_targets allows it, and is logged as other allowed targets are
        (sweep/user_code.py)."""
        name = self.options.custom_search_space
        if not name:
            return None
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
            extend = _compat.instantiate({"_target_": name, "_partial_": True}, base + user)
        except Exception as e:
            reason = (str(e).splitlines() or [type(e).__name__])[0]
            raise UserError(f"{key}={name} cannot be imported ({reason})") from e
        return functools.partial(extend, cfg)  # called as extend(config, trial)

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
            value = float(ret.return_value.columns["val_acc"])
            study.set_user_attr(BASELINE_ATTR, value)
        log.info(f"baseline val_acc {value:.4f}; floor {value - cfg.objective.max_drop:.4f}")
        return [f"objective.baseline_val_acc={value!r}"]


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


def _check_task_config(cfg: DictConfig) -> int:
    """The task config through the one pre-flight check (`job.preflight`, as each trial's job
    runs it) before any trial, its data loaded once; returns the data's size in bytes (each
    parallel worker holds its own copy).

    Building the data, model and optimizer here also pays torch's lazy imports (seconds) once
    at start-up instead of inside the first trial; the data stays cached for the trials.
    """
    from sweep.task import job, loggers

    task = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    parts = job.preflight(task)
    loggers.check_reachable(parts.callbacks)  # a tracker that cannot be reached: one line
    data = parts.data
    return sum(t.nbytes for t in (data.x_train, data.y_train, data.x_val, data.y_val,
                                  data.x_test, data.y_test))  # fmt: skip


def _read_only(path: Path) -> bool:
    # The mode bits count too: root may write anywhere, but a file marked read-only is a
    # user's "do not touch", and replacing it by rename would ignore that.
    return not os.access(path, os.W_OK) or not path.stat().st_mode & stat.S_IWUSR


def _check_writable(sweep_dir: Path, csv_path: Path) -> bool:
    """Make the sweep directory if it is not there and check it and results.csv can be
    written (UserError, one line, if not); True where this call made the directory (an atomic
    mkdir: of several workers started at once, one)."""
    made = True
    try:
        try:
            sweep_dir.mkdir(parents=True)
        except FileExistsError:
            made = False
    except OSError as e:
        raise UserError(f"cannot create the sweep directory {sweep_dir}: {e.strerror}") from e
    if _read_only(sweep_dir):
        raise UserError(f"the sweep directory {sweep_dir} is read-only; make it writable")
    if csv_path.exists() and _read_only(csv_path):
        raise UserError(f"{csv_path} is read-only; make it writable or use a new study_name")
    return made


def _unmake(sweep_dir: Path) -> None:
    """Remove the sweep directory a start that failed before its first trial made, unless a
    trial ran there (a worker started beside it, sharing the study, keeps it)."""
    if not any(sweep_dir.glob("trial_*")):
        shutil.rmtree(sweep_dir, ignore_errors=True)


def _device(cfg: DictConfig) -> str:
    """The device type trials will train on (cpu, cuda, mps)."""
    from sweep.training import train

    return train.resolve_device(cfg.device).type


def _liar(sampler: sampling.StudySampler) -> str:
    """What the plan line says of TPE's constant_liar with parallel trials: on by default, or
    the user's setting (nothing for other samplers)."""
    if not isinstance(sampler.sampler, optuna.samplers.TPESampler):
        return ""
    if sampler.extra.get("constant_liar", sampler.config.get("constant_liar")):
        return ", TPE with constant_liar"
    return ", TPE without constant_liar (as configured: parallel asks may draw the same point)"
