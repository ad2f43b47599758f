"""Keys that one command line gives several values under `-m`, where the code needs one.

Under `-m` Hydra reads a comma in a value as a list of values to sweep (`data.path=a,b.csv`
is the two paths `a` and `b.csv`), and choice(), range(), interval() and glob() as a search
space. The sweep process checks its task config before the first trial with every searched
key at its default, so a key that must be given (`data.path`, `data.target`, ...) is missing
there although the user typed it. `required` says that instead of "needs data.path=...",
and how to quote a value that holds a comma.
"""

from __future__ import annotations

import shlex

from sweep.errors import UserError


def searched(key: str) -> str | None:
    """The override of this Hydra run that makes `key` a sweep list or a search space (from
    the command line or hydra.sweeper.params), as typed; None if there is none, or outside
    a Hydra run."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.override_parser.overrides_parser import OverridesParser

    if not HydraConfig.initialized():
        return None
    hc = HydraConfig.get()
    lines = list(hc.overrides.task)
    params = hc.sweeper.get("params") or {}
    lines += [f"{k}={v}" for k, v in params.items()]
    parser = OverridesParser.create()
    for line in reversed(lines):  # the last one given wins, as in Hydra
        try:
            [override] = parser.parse_overrides([line])
        except Exception:  # not Hydra's grammar: Hydra itself reports it
            continue
        if override.key_or_group.lstrip("+~") == key:
            return line if override.is_sweep_override() else None
    return None


def required(key: str, message: str) -> UserError:
    """The error for a key that has no value: `message` ("data=csv needs data.path=..."),
    unless this run searches the key, where it says so and how to give one value."""
    line = searched(key)
    if line is None:
        return UserError(message)
    value = line.split("=", 1)[1]
    if value.startswith(("choice(", "range(", "interval(", "glob(", "tag(")):
        what = "a search space"
        fix = f"give one value, {key}=VALUE"
    else:
        what = f"a sweep list of {len(value.split(','))} values (under -m a comma separates values)"
        quoted = shlex.quote(f'{key}="{value}"')
        fix = f"for one value with a comma, quote it: {quoted} (or {key}='\"{value}\"')"
    return UserError(
        f"{line} is {what}, but {key} must have one value, known before the first trial: {fix}; "
        "to compare several, run one sweep for each"
    )
