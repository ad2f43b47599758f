"""The search space: Hydra's sweep overrides as Optuna distributions, checked before any trial.

`parse` reads hydra.sweeper.params and the command line in the Optuna sweeper plugin's syntax
(`choice`, `range`, `interval`, `tag(log, ...)`, and Hydra's `glob` over a config group), with
the plugin's own parser (sweep/_compat/__init__.py); `check_composable` composes every config group
option the search can choose; `suggest` draws a trial's values through Optuna's public API;
`grid_choices` lists GridSampler's points.
"""

from __future__ import annotations

import math
from typing import Any

import optuna
from hydra.core.config_loader import ConfigLoader
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import FloatRange, Glob
from hydra_plugins.hydra_optuna_sweeper.config import Direction
from omegaconf import DictConfig, ListConfig, OmegaConf
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from sweep import _compat
from sweep.errors import UserError, config_error

_ABSENT = object()


def parse(
    params: DictConfig | None, arguments: list[str], loader: ConfigLoader, config: DictConfig
) -> tuple[dict[str, BaseDistribution], dict[str, Any], list[str]]:
    """hydra.sweeper.params plus the command line's sweep overrides as Optuna
    distributions (the Optuna sweeper plugin's syntax and its parser), the fixed values
    and the other overrides (e.g. deletions); `glob(...)` over a config group is expanded
    through `loader` (the sweep's config loader) and `config` (its composed config). Bad
    syntax or ranges: UserError."""
    given = [f"{k!s}={v}" for k, v in (params or {}).items()] + list(arguments)
    try:
        space, fixed, fixed_overrides = _compat.create_params_from_overrides(
            expand_globs(given, loader, config)
        )
    except (ValueError, AssertionError, NotImplementedError) as e:
        # e.g. Optuna's "low must be larger than 0 for log"; the plugin asserts the types
        # of choice values and raises NotImplementedError for sweeps it has no
        # distribution for
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(
            f"bad search space in hydra.sweeper.params or the command line: {reason}; "
            "Optuna searches choice(...), range(...) and interval(...)"
        ) from e
    for name in fixed:
        space.pop(name, None)
    check_space(space)
    return space, fixed, fixed_overrides


def expand_globs(arguments: list[str], loader: ConfigLoader, config: DictConfig) -> list[str]:
    """`group=glob(...)` as the choice of the group's options it matches (Hydra's glob
    sweep, which the Optuna plugin has no distribution for). A glob over a key that is no
    config group, or one that matches no option, is a UserError."""
    out = []
    parsed = OverridesParser.create().parse_overrides(arguments)
    for argument, override in zip(arguments, parsed):
        if not override.is_sweep_override() or not isinstance(override.value(), Glob):
            out.append(argument)
            continue
        key = override.get_key_element()
        group = key.lstrip("+~")
        options = loader.get_group_options(
            group, config_name=config.hydra.job.config_name, overrides=[]
        )
        if not options:
            raise UserError(
                f"{argument}: glob(...) chooses among a config group's options, as in "
                f"'optimizer=glob(*)', and {group} is no config group; use "
                f"choice(...) for a key's values"
            )
        chosen = override.value().filter(options)
        if not chosen:
            raise UserError(f"{argument} matches none of {group}'s options ({', '.join(options)})")
        out.append(f"{key}=choice({','.join(chosen)})")
    return out


def check_composable(
    loader: ConfigLoader, cfg: DictConfig, space: dict, fixed: dict, fixed_overrides: list[str]
) -> None:
    """Every configuration the search can choose must have every searched key, before any
    trial: compose each option of each searched config group once (the others at their
    defaults; no group searched: the fixed configuration once) and look each searched value
    key up in it. A key that `+key` adds needs no such check."""
    choices = cfg.hydra.runtime.choices
    groups = {
        name: dist.choices
        for name, dist in space.items()
        if isinstance(dist, CategoricalDistribution) and name.lstrip("+~") in choices
    }
    keys = [k for k in space if k not in groups and (k.startswith("++") or k[0] not in "+~")]
    base = [f"{k}={v}" for k, v in fixed.items()] + list(fixed_overrides)
    options = [(f"{g}={c}", [*base, f"{g}={c}"]) for g, cs in groups.items() for c in cs]
    if not options:
        if not keys:
            return
        options = [("the configuration", base)]
    lacking: dict[str, list[str]] = {}
    for what, overrides in options:
        try:
            composed = loader.load_sweep_config(cfg, overrides)
        except Exception as e:  # an option that does not compose at all
            raise UserError(f"searched {what}: {config_error(e)}") from None
        for key in keys:
            if OmegaConf.select(composed, key.lstrip("+"), default=_ABSENT) is _ABSENT:
                lacking.setdefault(key, []).append(what)
    for key, where in lacking.items():
        raise UserError(
            f"{key} is searched, but {', '.join(where)} has no {key}: every configuration "
            "the search can choose needs each searched key (search it in a sweep of its "
            "own with only the options that have it, or leave those options out)"
        )


def suggest(trial: optuna.Trial, name: str, dist: BaseDistribution) -> Any:
    """Draw `name` from `dist` for `trial` through Optuna's public suggest API."""
    if isinstance(dist, FloatDistribution):
        return trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(name, dist.choices)
    raise TypeError(f"{name}: no suggest for {type(dist).__name__}")


def grid_choices(dist: BaseDistribution) -> list:
    """The points GridSampler runs for `dist`, as the Optuna sweeper plugin lists them: a
    choice's values, an int range's every step, a stepped float range's points with its high
    end. ValueError for a continuous interval, which has no grid."""
    if isinstance(dist, CategoricalDistribution):
        return list(dist.choices)
    if isinstance(dist, IntDistribution):
        return list(range(dist.low, dist.high + 1, dist.step))
    if isinstance(dist, FloatDistribution) and dist.step is not None:
        points = list(FloatRange(dist.low, dist.high, dist.step))
        if not points or points[-1] != dist.high:
            points.append(dist.high)
        return points
    raise ValueError("GridSampler only supports discrete distributions.")


def directions(direction: Any) -> list[str]:
    """hydra.sweeper.direction (one, or a list; names or the plugin's Direction enum) as
    Optuna's direction names."""
    given = list(direction) if isinstance(direction, (list, tuple, ListConfig)) else [direction]
    return [d.name if isinstance(d, Direction) else str(d) for d in given]


def inside(dist: BaseDistribution, value: Any) -> bool:
    """Whether `value` is a point of `dist` (within its bounds and on its step; one of its
    choices)."""
    if isinstance(dist, CategoricalDistribution):
        return value in dist.choices
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if not dist.low <= value <= dist.high:
        return False
    step = getattr(dist, "step", None)
    return step is None or math.isclose((value - dist.low) / step, round((value - dist.low) / step))


def check_space(space: dict) -> None:
    """UserError where a searched `*_lambda` interval is not inside (0, inf)."""
    for name, dist in space.items():
        low = getattr(dist, "low", None)
        if name.endswith("_lambda") and low is not None and not (low > 0 and dist.high < math.inf):
            raise UserError(
                f"search interval for {name} must lie in (0, inf), got [{low}, {dist.high}]"
            )


def check_enqueue(sets: list, space: dict) -> list[dict]:
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
            ok = inside(dist, value)
            if not ok:
                raise UserError(f"hydra.sweeper.enqueue: {key}={value!r} is outside {dist}")
        out.append(params)
    return out
