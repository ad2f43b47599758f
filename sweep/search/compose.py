"""A trial's job config: composed by Hydra once a sweep, each later trial's values set in it.

Hydra composes every job's config afresh (`ConfigLoader.load_sweep_config`: the defaults tree,
every config file loaded and merged, the overrides applied), about 0.1 s of CPU a trial here and
0.25-0.3 s of wall time on a busy machine (benchmarks/trial_cost.py): more than a short
trial's training. A sweep's trials differ only in their overrides' values. `Composer` composes
the first job's config through Hydra (the template) and each later job's by setting its
overrides' values in the template itself, as Hydra applies a value override
(`OmegaConf.update(cfg, key, value, merge=True)`), with the job's override lists
(`hydra.overrides.task` and `.hydra`) as Hydra records them. Only where that is the same thing:
every override a plain `key=value` of an element (no config group's choice, no +, ~ or sweep
syntax), with the template's keys in the template's order. The first job composed so is also
composed by Hydra and the two compared (unresolved); where they differ, every job is composed
by Hydra from then on, said in one log line. `L1SWEEP_COMPOSE_ONCE=0` composes every job by
Hydra (benchmarks/trial_cost.py's "before").

The template is set in place, not copied (a deep copy of the config is ~8 ms a trial): the
config `config` returns is the job's until the next call, which is how the fork launcher
uses it (each job forked, with its own copy of the sweep's memory, before the next is
composed). Every job sets the same keys (else Hydra composes it), so no value of an earlier
job's is left in a later one's.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Sequence
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, OverrideType
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

log = logging.getLogger(__name__)
SCALARS = (str, int, float, bool, type(None))


class Composer:
    """Job configs for a sweep's launcher: `config(overrides)` is what Hydra's
    `config_loader.load_sweep_config(master, overrides)` returns for them (a copied one valid
    until the next call: see the module's doc).

    `loader` is the HydraContext's config loader, `master` the launcher's config (the sweep's);
    `checked` says whether the copy was compared with Hydra's composition (None: not yet), and
    `composed` counts the configs Hydra composed."""

    def __init__(self, loader: Any, master: DictConfig) -> None:
        self.loader, self.master = loader, master
        self.template: DictConfig | None = None
        self.keys: list[str] = []
        self.checked: bool | None = None if os.environ.get("L1SWEEP_COMPOSE_ONCE") != "0" else False
        self.composed = 0
        self.parser = OverridesParser.create()

    def full(self, overrides: Sequence[str]) -> DictConfig:
        """The job's config as Hydra composes it."""
        self.composed += 1
        return self.loader.load_sweep_config(self.master, list(overrides))

    def config(self, overrides: Sequence[str]) -> DictConfig:
        """The job's config for `overrides` (Hydra's composition errors raised as Hydra's)."""
        parsed = self._plain(overrides)
        if self.checked is False or parsed is None:
            return self.full(overrides)
        if self.template is None or [o.key_or_group for o in parsed] != self.keys:
            cfg = self.full(overrides)
            self.template, self.keys = copy.deepcopy(cfg), [o.key_or_group for o in parsed]
            return cfg
        try:
            copied = self._apply(parsed)
        except Exception as e:  # not as Hydra applies it: Hydra composes every job
            self.checked = False
            log.info(f"job configs: copying failed ({type(e).__name__}: {e}); every trial's "
                     "config is composed by Hydra")  # fmt: skip
            return self.full(overrides)
        if self.checked is None:
            composed = self.full(overrides)
            self.checked = _same(copied, composed)
            if not self.checked:
                log.info("job configs: a copy with the trial's values differs from Hydra's "
                         "composition here; every trial's config is composed by Hydra")  # fmt: skip
            return composed
        return copied

    def _plain(self, overrides: Sequence[str]) -> list[Override] | None:
        """The parsed overrides if each is a plain `key=value` of an element (not a config
        group's choice, nor a node the template holds a config in); else None."""
        try:
            parsed = self.parser.parse_overrides(list(overrides))
        except Exception:  # Hydra's own composition reports it as Hydra does
            return None
        groups = self.master.hydra.runtime.choices
        for o in parsed:
            plain = (
                o.type == OverrideType.CHANGE
                and o.package is None
                and not o.is_sweep_override()
                and isinstance(o.value(), SCALARS)
                and o.key_or_group not in groups
            )
            if plain and self.template is not None:
                node = OmegaConf.select(self.template, o.key_or_group, throw_on_missing=False)
                plain = not OmegaConf.is_config(node)
            if not plain:
                return None
        return parsed

    def _apply(self, parsed: list[Override]) -> DictConfig:
        """The template with `parsed`'s values and override lists set in it."""
        assert self.template is not None
        cfg = self.template
        hydra_lines = [o.input_line for o in parsed if o.is_hydra_override()]
        with read_write(cfg):
            for o in parsed:  # as Hydra applies a value override
                OmegaConf.update(cfg, o.key_or_group, o.value(), merge=True)
        recorded = cfg.hydra.overrides
        with read_write(recorded), open_dict(recorded):
            n_master = len(recorded.hydra) - len(hydra_lines)
            recorded.hydra = [*list(recorded.hydra)[:n_master], *hydra_lines]
            recorded.task = [o.input_line for o in parsed if not o.is_hydra_override()]
        return cfg


def _same(a: DictConfig, b: DictConfig) -> bool:
    return OmegaConf.to_container(a, resolve=False) == OmegaConf.to_container(b, resolve=False)
