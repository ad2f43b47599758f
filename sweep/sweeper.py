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
import gc
import itertools
import logging
import math
import os
import shlex
import stat
import sys
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from hydra.core.utils import JobReturn
from hydra.types import HydraContext, TaskFunction
from hydra.utils import instantiate
from hydra_plugins.hydra_optuna_sweeper._impl import create_params_from_overrides
from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper
from omegaconf import DictConfig, OmegaConf
from optuna.trial import TrialState

from sweep import interrupts, launcher, parallel, schema, trials
from sweep.compose import ComposeCache, value_keys
from sweep.errors import UserError
from sweep.study import (
    check_same_config,
    claim,
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


class L1Sweeper(OptunaSweeper):
    _grid: dict[str, list] | None = None
    _warming: threading.Thread | None = None  # joblib's workers starting (parallel.py)
    _resume: str | None = None  # the command that continues the study, once it is open

    def __init__(self, **options: Any) -> None:
        """The stock sweeper's options (hydra.sweeper.*), their ranges checked first: the stock
        one asserts some (a traceback) and loops for ever on n_jobs=0; then ours, which the
        stock one does not take: the pruner, stale_after and enqueue."""
        try:
            for key, rule in schema.rules(schema.SweeperConfig).items():
                schema.check_value(f"hydra.sweeper.{key}", rule, options.get(key))
            pruner = options.pop("pruner")
            self.stale_after: float = options.pop("stale_after")
            self.enqueue: list = list(options.pop("enqueue") or [])
            self.n_jobs = options["n_jobs"]  # auto or a number: resolved once the data is seen
            options["n_jobs"] = 1 if self.n_jobs == "auto" else self.n_jobs
            schema.check(pruner, "hydra.sweeper.pruner.")
            try:
                self.pruner = instantiate(pruner, _execution_whitelist_=("optuna.pruners.*",))
            except Exception as e:  # Optuna's own check of the pruner's options
                reason = str(e).splitlines()[0]
                raise UserError(f"hydra.sweeper.pruner: {reason}") from e
            try:
                super().__init__(**options)
            except Exception as e:  # the sampler's own check of its options (any exception type)
                reason = str(e).splitlines()[0]
                raise UserError(
                    f"cannot make the sampler: {reason}; check hydra.sweeper.sampler.* and seed "
                    "(the sampler's seed)"
                ) from e
        except UserError as e:
            log.error(f"error: {e}")
            sys.exit(2)

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        # The launcher composes trial configs through this cache (see sweep/compose.py).
        self._compose = ComposeCache(hydra_context.config_loader)
        context = dataclasses.replace(hydra_context, config_loader=self._compose)
        super().setup(hydra_context=context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> None:
        try:
            with interrupts.handled():
                self._sweep(arguments)
        except UserError as e:
            log.error(f"error: {e}")
            sys.exit(2)
        except KeyboardInterrupt:  # the running trials are failed in the study by now
            again = f"; resume with: {self._resume}" if self._resume else ""
            log.error(f"interrupted: the trials that were running are failed{again}")
            sys.exit(130)
        finally:
            gc.unfreeze()  # frozen objects are never freed; native extensions warn of leaks
            if self._warming is not None and self._warming.is_alive():
                # stopped before its workers were up (bad input): end them in order, as an
                # exit in the middle of joblib's start-up prints loky's tracebacks
                parallel.stop_workers()
                self._warming.join(timeout=10)

    def _sweep(self, arguments: list[str]) -> None:
        impl = self.sweeper  # the stock OptunaSweeperImpl: config, launcher, sampler, options
        cfg = impl.config
        impl._process_searchspace_config()
        try:
            space, fixed, fixed_overrides = create_params_from_overrides(
                impl._parse_sweeper_params_config() + list(arguments)
            )
        except ValueError as e:  # e.g. Optuna's "low must be larger than 0 for log"
            raise UserError(f"bad search space in hydra.sweeper.params: {e}") from e
        for name in fixed:
            space.pop(name, None)
        _check_space(space)
        enqueue = _check_enqueue(self.enqueue, space)
        self._compose.value_keys = value_keys(space)
        self._fork_or_not(cfg)
        self._warm(cfg)
        data_bytes = _check_task_config(cfg)
        self.plan = self._plan(cfg, data_bytes)
        joblib = self._joblib()
        if joblib is not None:
            # its pool holds every slot's job; with one slot joblib runs the job in-process
            joblib.joblib["n_jobs"] = self.plan.jobs
        directions = impl._get_directions()
        pruning = not isinstance(self.pruner, optuna.pruners.NopPruner)
        if pruning and len(directions) > 1:
            raise UserError(
                f"early stopping needs a single objective, and objective.metrics has "
                f"{len(directions)} ({', '.join(cfg.objective.metrics)}): Optuna reports and "
                "prunes single-objective trials only. Use hydra/sweeper/pruner=none"
            )
        sweep_dir = Path(cfg.hydra.sweep.dir)
        csv_path = sweep_dir / "results.csv"
        _check_writable(sweep_dir, csv_path)

        study = open_study(
            impl.study_name, impl.storage, directions, self._sampler(space, cfg), self.pruner
        )
        check_same_config(study, fingerprint(cfg, space, directions))
        with warnings.catch_warnings():  # experimental since Optuna 3.2, and what dashboards show
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(list(cfg.objective.metrics))
        # The sampler draws with seed + the number of the first trial this process asks: numbers
        # are unique in a study, so processes sharing one (even started at the same instant on
        # an empty study) draw differently; a lone process on a new study uses `seed` itself
        # (reproducible), and a resumed study does not replay its first draws.
        seed = cfg.hydra.sweeper.sampler.get("seed")
        reseed = seed is not None and not isinstance(impl.sampler, functools.partial)
        recover_stale(study, self.stale_after)  # before any ask: their parameters run first
        for params in enqueue:  # run before the sampler's own; not again in a resumed study
            study.enqueue_trial(params, skip_if_exists=True)
        resume = self._resume = resume_command(cfg, study.study_name, arguments, impl.storage)
        where = shown(impl.storage)
        log.info(f"study {study.study_name} in {where} ({len(study.trials)} trials so far)")
        log.info(f"results: {csv_path}")
        log.info(f"resume or extend with: {resume}")

        write_csv(study, csv_path)  # catch up with trials told just before a crash
        if self._grid is not None:
            left = self._grid_left(study)
            if left < impl.n_trials:
                log.info(f"grid: {left} of its points not yet run in this study; running those")
            impl.n_trials = min(impl.n_trials, left)
        threads = self.plan.threads if cfg.train.threads is None else None
        extra = [f"train.threads={threads}"] if threads is not None else []
        extra += self._baseline(cfg, study, fixed, fixed_overrides)
        if pruning:  # each job reaches its trial by name: the name resolved here, not ${now:}
            extra.append(f"hydra.sweeper.study_name={study.study_name}")
        # What is loaded by now (torch, the data, the study) lives until exit: frozen, the
        # collector stops re-scanning it in every full collection (~20 ms a trial here).
        gc.collect()
        gc.freeze()
        log.info(
            f"{self.plan.jobs} trial(s) at a time"
            + (f", train.threads={threads} each" if threads else "")
            + f" (n_jobs={self.n_jobs}: {self.plan.why})"
            + (", TPE with constant_liar" if self._sampler_extra else "")
        )
        start = time.perf_counter()
        self._run_trials(study, space, fixed, fixed_overrides, extra, directions, csv_path,
                         pruning, reseed=seed if reseed else None)  # fmt: skip
        self._finish(study, directions, csv_path, resume, time.perf_counter() - start)

    def _fork_or_not(self, cfg: DictConfig) -> None:
        """The fork launcher (the default) forks its trials where that is safe, and keeps this
        process at one torch thread for it; elsewhere it hands them to joblib's launcher."""
        chosen = self.sweeper.launcher
        if isinstance(chosen, launcher.ForkLauncher):
            why = launcher.unsafe(_device(cfg))
            if why is None:
                launcher.single_threaded()
            else:
                chosen.use_joblib(why)

    def _runner(self) -> Any:
        """The launcher that runs the trials: the fork launcher's joblib, where it handed
        them over."""
        used = self.sweeper.launcher
        if isinstance(used, launcher.ForkLauncher) and used.fallback is not None:
            return used.fallback
        return used

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
            n_trials=self.sweeper.n_trials, cores=parallel.cores(),
            memory=parallel.available_memory(), data_bytes=data_bytes, threads=cfg.train.threads,
            gpu_memory=parallel.gpu_memory() if device == "cuda" else None,
        )  # fmt: skip

    def _warm(self, cfg: DictConfig) -> None:
        """Under joblib with parallel trials, start its workers while this process starts."""
        if self.n_jobs == 1 or self._joblib() is None:
            return
        with contextlib.suppress(Exception):  # bad input is reported by the checks that follow
            jobs = self._plan(cfg, data_bytes=0).jobs
            task = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
            if jobs > 1:
                self._warming = parallel.warm_workers(
                    self._joblib().joblib, jobs, OmegaConf.to_container(task, resolve=True)
                )

    def _run_trials(
        self,
        study: optuna.Study,
        space: dict,
        fixed: dict,
        fixed_overrides: list[str],
        extra: list[str],
        directions: list[str],
        csv_path: Path,
        pruning: bool,
        reseed: int | None,
    ) -> None:
        """Run n_trials trials, plan.jobs at a time (sweep/parallel.py); each is told and its
        row written as it finishes. The first failure not tolerated stops the asking; it is
        raised once the running trials are told."""
        impl = self.sweeper
        kind = parallel.launcher_kind(self._launcher())
        overrides: dict[int, tuple[str, ...]] = {}
        told: list[BaseException | None] = []
        stop: list[BaseException] = []

        def ask() -> optuna.Trial:
            nonlocal reseed
            with interrupts.deferred():  # a trial made but not yet listed is lost
                trial = study.ask()
                claim(trial)
                running.append(trial)
            if reseed is not None and trial.number:  # before its parameters are drawn
                study.sampler = self._make_sampler(seed=reseed + trial.number)
            reseed = None
            [o] = impl._configure_trials([trial], space, fixed, fixed_overrides)
            overrides[trial.number] = (*o, *extra, f"hydra.sweep.subdir=trial_{trial.number}")
            if kind in ("fork", "process") and not told and len(overrides) == 1:
                # workers compose from a copy of the cache: let it hold this shape's template
                self._compose.load_sweep_config(impl.config, list(overrides[trial.number]))
            return trial

        def launch(trial: optuna.Trial) -> Callable[[], JobReturn]:  # main thread
            idx, impl.job_idx = impl.job_idx, impl.job_idx + 1
            job = overrides[trial.number]
            if kind == "fork":  # forked now, on the main thread (sweep/launcher.py)
                return impl.launcher.start(job, idx)
            return lambda: impl.launcher.launch([job], initial_job_idx=idx)[0]  # in a slot

        def tell(trial: optuna.Trial, ret: JobReturn) -> bool:
            del overrides[trial.number]
            row, error = self._tell(study, trial, ret, directions, csv_path, pruning)
            told.append(error)
            self._log_progress(study, row, len(told), directions)
            failed = sum(e is not None for e in told)
            if (
                error is not None
                and not stop
                and (isinstance(error, UserError) or failed / len(told) > impl.max_failure_rate)
            ):
                stop.append(error)  # a UserError is bad input: every trial would fail so
            return not stop

        running: list[optuna.Trial] = []  # asked, not yet told
        try:
            # beats often enough that a live trial is never taken for a lost one
            with heartbeat(running, every=min(30.0, self.stale_after / 4)):
                parallel.run(impl.n_trials, self.plan.jobs, ask, launch, tell, running)
        except BaseException:  # Ctrl-C or a launcher error: leave no trial RUNNING for ever
            interrupts.clear()  # this one is handled here
            try:
                with interrupts.deferred():
                    for t in running:
                        # one told just before the interrupt, not yet off the list, is finished
                        with contextlib.suppress(ValueError, RuntimeError):
                            study.tell(t, state=TrialState.FAIL)
                    # a trial told just before the interrupt may not have its row written yet
                    write_csv(study, csv_path)
            finally:  # a second Ctrl-C meanwhile still ends the trials' processes
                if kind == "process":
                    parallel.stop_workers()
                elif kind == "fork":
                    impl.launcher.kill_children()
            raise
        if stop:
            raise stop[0]  # a programming error: stop with its traceback

    def _make_sampler(self, **kwargs: Any) -> optuna.samplers.BaseSampler:
        """The configured sampler with `kwargs` and, for parallel trials, TPE's constant liar."""
        return instantiate(
            self.sweeper.config.hydra.sweeper.sampler,
            **self._sampler_extra,
            **kwargs,
            _execution_whitelist_=SAMPLERS,
        )

    def _sampler(self, space: dict, cfg: DictConfig) -> optuna.samplers.BaseSampler:
        """The configured sampler; GridSampler (a partial) gets its grid, as the stock loop does.
        TPE with parallel trials gets constant_liar=True (Optuna's option for that: a running
        trial counts as a bad result, so concurrent asks do not all draw the same point),
        unless the command line sets hydra.sweeper.sampler.constant_liar."""
        impl = self.sweeper
        self._sampler_extra: dict[str, Any] = {}
        chosen = any(
            o.startswith("hydra.sweeper.sampler.constant_liar=") for o in cfg.hydra.overrides.hydra
        )
        if self.plan.jobs > 1 and isinstance(impl.sampler, optuna.samplers.TPESampler):
            if not chosen:
                self._sampler_extra = {"constant_liar": True}
                impl.sampler = self._make_sampler()
        if not isinstance(impl.sampler, functools.partial):
            return impl.sampler
        try:
            grid = {name: impl._to_grid_sampler_choices(d) for name, d in space.items()}
        except ValueError as e:
            raise UserError(
                f"{e} Every searched key needs choice(...) or range(...) with the grid sampler, "
                f"e.g. 'l1_lambda=choice(1e-5,1e-4,1e-3)'; searched: {', '.join(space)}"
            ) from e
        self._grid = grid
        return impl.sampler(grid)

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
        self,
        study: optuna.Study,
        trial: optuna.Trial,
        ret: JobReturn,
        directions: list[str],
        csv_path: Path,
        pruning: bool = False,
    ) -> tuple[dict, BaseException | None]:
        """Record one finished job in the study and in results.csv; return its row, exception."""
        error: BaseException | None = None
        try:
            metrics = dict(ret.return_value)
        except BaseException as e:  # the job raised: the row says 'failed'
            error, metrics = e, {"status": "failed"}
        curve = metrics.pop("val_acc_curve", [])  # metrics.json keeps it; the CSV row does not
        task_overrides = [o for o in ret.overrides or [] if not o.startswith("hydra.")]
        row = {
            "trial": trial.number,
            **{k: v for k, v in metrics.items() if k != "objective"},
            "overrides": shlex.join(task_overrides),
            "run_dir": ret.hydra_cfg.hydra.runtime.output_dir if ret.hydra_cfg else None,
        }
        if len(directions) == 1:
            row["objective"] = metrics.get("objective", [math.nan])[0]
        values = metrics.get("objective")
        try:
            with interrupts.deferred():  # the row without its state would be a wrong row
                # a pruning job reported its curve itself, as it trained
                trials.record(trial, row, [] if pruning else curve, len(directions) == 1)
                if metrics["status"] == "complete" and values and all(map(math.isfinite, values)):
                    study.tell(trial, values=values)
                elif metrics["status"] == "pruned":
                    study.tell(trial, state=TrialState.PRUNED)
                else:
                    study.tell(trial, state=TrialState.FAIL)
        except RuntimeError as e:
            # GridSampler calls Study.stop() once its grid is done, which ask/tell does not
            # allow; the trial is already recorded, as the stock sweeper also assumes.
            if "Study.stop" not in str(e):
                raise
        write_csv(study, csv_path)
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
            [ret] = self.sweeper.launcher.launch(
                [(*dense_run, "hydra.sweep.subdir=baseline")],
                initial_job_idx=self.sweeper.job_idx,
            )
            self.sweeper.job_idx += 1
            value = float(ret.return_value["val_acc"])
            study.set_user_attr(BASELINE_ATTR, value)
        log.info(f"baseline val_acc {value:.4f}; floor {value - cfg.objective.max_drop:.4f}")
        return [f"objective.baseline_val_acc={value!r}"]

    def _log_progress(
        self, study: optuna.Study, row: dict, n_done: int, directions: list[str]
    ) -> None:
        if len(directions) > 1:
            best = f"pareto front: {len(study.best_trials)} trials"
        elif study.get_trials(states=[TrialState.COMPLETE]):
            best = f"best: trial {study.best_trial.number} {study.best_value:.4f}"
        else:
            best = "best: none yet"
        log.info(
            f"trial {row['trial']} [{n_done}/{self.sweeper.n_trials}] {row['status']}"
            f"  l1_lambda={row.get('l1_lambda', math.nan):.3g}"
            f"  val_acc={row.get('val_acc', math.nan):.4f}"
            f"  sparsity={row.get('sparsity', math.nan):.4f}"
            f"  {row.get('train_seconds', math.nan):.1f}s  | {best}"
        )

    def _finish(
        self,
        study: optuna.Study,
        directions: list[str],
        csv_path: Path,
        resume: str,
        seconds: float,
    ) -> None:
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
        summary.update(metrics=list(self.sweeper.config.objective.metrics), directions=directions)
        OmegaConf.save(OmegaConf.create(summary), csv_path.parent / "optimization_results.yaml")
        pruned = study.get_trials(deepcopy=False, states=[TrialState.PRUNED])
        log.info(
            f"study {study.study_name}: {len(complete)} complete, {len(pruned)} pruned"
            f" of {len(study.trials)} trials"
        )
        log.info(f"sweep took {seconds:.1f}s; results: {csv_path}")
        log.info(f"resume or extend with: {resume}")
        print(csv_path)


def _check_space(space: dict) -> None:
    for name, dist in space.items():
        low = getattr(dist, "low", None)
        if name.endswith("_lambda") and low is not None and not (low > 0 and dist.high < math.inf):
            raise UserError(
                f"search interval for {name} must lie in (0, inf), got [{low}, {dist.high}]"
            )


def _check_enqueue(sets: list, space: dict) -> list[dict]:
    """hydra.sweeper.enqueue as plain dicts, each naming searched keys with values in range."""
    out = []
    for params in sets:
        params = OmegaConf.to_container(params) if isinstance(params, DictConfig) else params
        if not isinstance(params, dict) or not params:
            raise UserError(
                f"hydra.sweeper.enqueue holds parameter sets like {{l1_lambda: 1e-4}}, "
                f"got {params!r}"
            )
        for key, value in params.items():
            dist = space.get(key)
            if dist is None:
                raise UserError(
                    f"hydra.sweeper.enqueue: {key} is not searched; searched: {', '.join(space)}"
                )
            try:
                inside = dist._contains(dist.to_internal_repr(value))
            except (ValueError, TypeError):
                inside = False
            if not inside:
                raise UserError(f"hydra.sweeper.enqueue: {key}={value!r} is outside {dist}")
        out.append(params)
    return out


def _check_task_config(cfg: DictConfig) -> int:
    """Validate the task config, and load its data once, before any trial; returns the
    data's size in bytes (each parallel worker holds its own copy).

    Building the data, model and optimizer here also pays torch's lazy imports (seconds) once
    at start-up instead of inside the first trial; the data stays cached for the trials.
    """
    from sweep import train, user_code

    task = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    train.check(task)
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
    from sweep import train

    return train.resolve_device(cfg.device).type
