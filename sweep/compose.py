"""Trial configs: composed by Hydra once per sweep, then derived by value for each trial.

Hydra's launchers compose every job's config from the YAML files again: 50-75 ms a trial on
this project's machines, 3% of a default trial. A sweep's trials differ only in the values
of the searched keys (and their output subdir), and Hydra applies such value overrides to
the config only after composing it, so composing once and applying each trial's values to a
copy gives the config Hydra would build (tests/test_compose.py checks it is equal, key for
key). Anything else that differs, a config group choice say, is composed from scratch.
The saving is the basic launcher's: joblib and submitit compose each job in its worker, from
a copy of the cache as it was at launch.
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Sequence
from typing import Any

from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra.core.config_loader import ConfigLoader
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import BaseDistribution, CategoricalDistribution

SUBDIR = "hydra.sweep.subdir"


def value_keys(space: dict[str, BaseDistribution]) -> frozenset[str]:
    """The keys whose trial values are plain numbers, which no config group choice can be;
    the trial's output subdir too. Not `+key`: adding a key the template already has fails."""
    numeric = {
        name
        for name, dist in space.items()
        if (name.startswith("++") or not name.startswith("+"))
        and (
            not isinstance(dist, CategoricalDistribution)
            or all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in dist.choices)
        )
    }
    return frozenset(numeric | {SUBDIR})


class ComposeCache:
    """A Hydra ConfigLoader for a sweep's launcher: `load_sweep_config` composes the first job
    of each shape (its overrides with the values of `value_keys` blanked) and derives the
    rest from it; everything else is the wrapped loader's."""

    def __init__(self, loader: ConfigLoader, keys: frozenset[str] = frozenset()) -> None:
        self.loader = loader
        self.value_keys = keys
        self._composed: dict[tuple[str, ...], tuple[DictConfig, list[str]]] = {}

    def __getattr__(self, name: str) -> Any:
        if name == "loader":  # not set yet: an instance being unpickled in a launcher's worker
            raise AttributeError(name)
        return getattr(self.loader, name)

    def load_sweep_config(self, master_config: DictConfig, sweep_overrides: list[str]) -> Any:
        shape = self._shape(sweep_overrides)
        if shape in self._composed:
            return self._derive(master_config, *self._composed[shape], sweep_overrides)
        config = self.loader.load_sweep_config(master_config, sweep_overrides)
        if shape is not None:  # launchers change the config they get: keep a clean copy
            self._composed[shape] = (copy.deepcopy(config), list(sweep_overrides))
        return config

    def _shape(self, overrides: Sequence[str]) -> tuple[str, ...] | None:
        keys = [o.split("=", 1)[0] for o in overrides]
        counts = Counter(keys)
        if any(counts[k] > 1 for k in self.value_keys):  # the later would win: not a plain swap
            return None
        return tuple(f"{k}=" if k in self.value_keys else o for k, o in zip(keys, overrides))

    @staticmethod
    def _derive(
        master_config: DictConfig,
        template: DictConfig,
        template_overrides: list[str],
        overrides: list[str],
    ) -> DictConfig:
        config = copy.deepcopy(template)
        changed = [(old, new) for old, new in zip(template_overrides, overrides) if old != new]
        parsed = OverridesParser.create().parse_overrides([new for _, new in changed])
        ConfigLoaderImpl._apply_overrides_to_config(parsed, config)  # Hydra's own last step
        for (old, new), override in zip(changed, parsed):  # the job's record of its overrides
            recorded = config.hydra.overrides
            kept = recorded.hydra if override.is_hydra_override() else recorded.task
            kept[list(kept).index(old)] = new
        OmegaConf.copy_cache(from_config=master_config, to_config=config)  # as Hydra does
        return config
