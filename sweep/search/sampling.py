"""The sweep's sampler and pruner: made from hydra.sweeper.sampler and .pruner (Optuna's own
classes only, and l1sweep's FrontPruner), checked for the optional packages they need before
trial 0, and the sampler as the study gets it (`for_study`): TPE with constant_liar for
parallel trials, GridSampler with its grid (and the grid's points a study has not run),
reseeded per process (`reseeded`)."""

from __future__ import annotations

import functools
import importlib.util
import itertools
from dataclasses import dataclass
from typing import Any

import optuna
from omegaconf import DictConfig
from optuna.trial import TrialState

from sweep import _compat
from sweep.errors import UserError
from sweep.search import space as search

SAMPLERS = ("hydra_plugins.hydra_optuna_sweeper.*", "optuna.samplers.*")
# Optuna's, and l1sweep's own for several objectives (pruner=front: sweep/search/front.py)
PRUNERS = ("optuna.pruners.*", "sweep.search.front.FrontPruner")
# Optuna's samplers and pruners that need a package Optuna does not install, and what to
# install: checked before trial 0 (CmaEsSampler imports `cmaes` only at its second trial).
OPTIONAL = {
    "CmaEsSampler": ("cmaes",),
    "GPSampler": ("torch", "scipy"),
    "QMCSampler": ("scipy",),
    "BoTorchSampler": ("optuna_integration", "botorch"),
    "WilcoxonPruner": ("scipy",),
}


def make_pruner(pruner: DictConfig) -> optuna.pruners.BasePruner:
    """hydra.sweeper.pruner made; UserError (one line) for options Optuna refuses or a pruner
    whose optional package is not installed."""
    try:
        made = _compat.instantiate(pruner, PRUNERS)
    except Exception as e:  # Optuna's own check of the pruner's options
        reason = str(e).splitlines()[0]
        raise UserError(f"hydra.sweeper.pruner: {reason}") from e
    check_optional_packages(made, "hydra/sweeper/pruner")
    return made


def check_sampler_target(sampler: DictConfig) -> None:
    """Samplers Optuna no longer has, named as what replaces them (UserError)."""
    if str(sampler.get("_target_", "")).endswith("raise_motpe_removed"):
        raise UserError(
            "hydra/sweeper/sampler=motpe: Optuna removed MOTPESampler in version 4.0; "
            "TPESampler handles several objectives: use hydra/sweeper/sampler=tpe (the default)"
        )


def make_sampler(sampler: DictConfig) -> Any:
    """hydra.sweeper.sampler made: a sampler, or GridSampler's partial (its grid comes with the
    search space). UserError (one line) for options the sampler refuses, or a sampler whose
    optional package is not installed."""
    try:
        made = _compat.instantiate(sampler, SAMPLERS)
    except Exception as e:  # the sampler's own check of its options (any exception type)
        reason = str(e).splitlines()[0]
        raise UserError(
            f"cannot make the sampler: {reason}; check hydra.sweeper.sampler.* and seed "
            "(the sampler's seed)"
        ) from e
    check_optional_packages(made, "hydra/sweeper/sampler")
    return made


def check_optional_packages(made: object, group: str) -> None:
    """A sampler or pruner that needs a package Optuna does not install: one line saying
    what to install, before any trial (some import it only at their second trial)."""
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


@dataclass(frozen=True)
class StudySampler:
    """The sampler as the study gets it: `sampler` itself, the options added to the
    configured ones (`extra`: constant_liar for parallel TPE) and, for GridSampler, its `grid`
    (the searched keys' values). `config` is hydra.sweeper.sampler."""

    sampler: optuna.samplers.BaseSampler
    config: DictConfig
    extra: dict[str, Any]
    grid: dict[str, list] | None

    def reseeded(self, seed: int) -> optuna.samplers.BaseSampler:
        """The configured sampler, with `extra`, drawing from `seed`."""
        return _compat.instantiate(self.config, SAMPLERS, **self.extra, seed=seed)

    def grid_left(self, study: optuna.Study) -> int:
        """Grid points no finished trial of the study has run. GridSampler re-runs a finished
        point once none is left; a rerun of a finished grid study must run nothing instead."""
        assert self.grid is not None
        finished = (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)
        done = {
            tuple(t.params.get(k) for k in self.grid)
            for t in study.get_trials(deepcopy=False, states=finished)
        }
        return len(set(itertools.product(*self.grid.values())) - done)


def for_study(made: Any, cfg: DictConfig, space: dict, jobs: int) -> StudySampler:
    """The configured sampler (`made`, from `make_sampler`) for a study of `space` with `jobs`
    trials at a time. GridSampler (a partial) gets its grid, as the stock loop does. TPE whose
    `constant_liar` is left null (the default, config/schema.py TPEConfig) gets it on for
    parallel trials (Optuna's option for that: a running trial counts as a bad result, so
    concurrent asks do not all draw the same point) and off for one at a time; a value the
    user set is kept. UserError where the grid sampler meets a searched key with no finite
    choices."""
    config = cfg.hydra.sweeper.sampler
    extra: dict[str, Any] = {}
    if isinstance(made, optuna.samplers.TPESampler) and config.get("constant_liar") is None:
        extra = {"constant_liar": jobs > 1}
        made = _compat.instantiate(config, SAMPLERS, **extra)
    if not isinstance(made, functools.partial):
        return StudySampler(made, config, extra, None)
    try:
        grid = {name: search.grid_choices(d) for name, d in space.items()}
    except ValueError as e:
        raise UserError(
            f"{e} Every searched key needs choice(...) or range(...) with the grid sampler, "
            f"e.g. 'l1_lambda=choice(1e-5,1e-4,1e-3)'; searched: {', '.join(space)}"
        ) from e
    return StudySampler(made(grid), config, extra, grid)
