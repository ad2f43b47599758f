"""The one maker of the commands l1sweep prints or stores (the resume line, the row's `command`
column, the analysis's reproduce line, the trackers' record): `python -m sweep.run`, the flags
that chose the configuration, then overrides.

A command must give the same result run from the directory the sweep was started in. Overrides
alone do not: a sweep started with `--config-dir conf --config-name own_model` composes another
primary config, and its overrides run on the default one would train another model on other
data without an error. So the flags come from Hydra's record of how the configuration was found
(`hydra.runtime.config_sources`, `hydra.job.config_name`): `--config-path` where the primary
config directory is not sweep.run's own, `--config-dir` for a directory added on the command
line, `--config-name` where the primary config is not `config`. A directory inside the one the
command was started in (`hydra.runtime.cwd`) is written relative to it, as a user types it.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

PROGRAM = ("python", "-m", "sweep.run")
DEFAULT_NAME = "config"  # sweep/run.py's @hydra.main(config_name=...)
# sweep/run.py's @hydra.main(config_path="../conf"): the repository's conf/
DEFAULT_PATH = (Path(__file__).resolve().parents[2] / "conf").as_posix()


def config_flags(hydra: Any) -> list[str]:
    """The command-line flags that chose the configuration of the run whose Hydra config node
    is `hydra` (`cfg.hydra` of a composed config, or `.hydra/hydra.yaml`'s `hydra`): a list of
    strings such as ['--config-dir', 'conf', '--config-name', 'own_model'], empty for the
    default configuration. A node without runtime sources (a config composed outside a run)
    gives only what it has."""
    flags: list[str] = []
    runtime = hydra.get("runtime") or {}
    cwd = Path(str(runtime.get("cwd") or "."))
    for source in runtime.get("config_sources") or []:
        if source.get("schema") != "file":
            continue
        path = Path(str(source.get("path")))
        if source.get("provider") == "main" and path.resolve().as_posix() != DEFAULT_PATH:
            flags += ["--config-path", path.resolve().as_posix()]  # Hydra: absolute, or the app's
        elif source.get("provider") == "command-line":
            flags += ["--config-dir", _as_typed(path, cwd)]
    name = (hydra.get("job") or {}).get("config_name")
    if name and name != DEFAULT_NAME:
        flags += ["--config-name", str(name)]
    return flags


def _as_typed(path: Path, cwd: Path) -> str:
    """`path` relative to `cwd` where it lies inside it, else absolute."""
    try:
        return path.resolve().relative_to(cwd.resolve()).as_posix() or "."
    except ValueError:
        return path.resolve().as_posix()


def command(flags: Sequence[str], overrides: Iterable[str], multirun: bool = False) -> str:
    """The shell command `python -m sweep.run [-m] <flags> <overrides>`, each word quoted for a
    POSIX shell (shlex.join). `overrides` are Hydra overrides as Hydra recorded them."""
    return shlex.join([*PROGRAM, *(["-m"] if multirun else []), *flags, *overrides])


def by_key(overrides: Iterable[str]) -> dict[str, str]:
    """Hydra overrides `key=value` as {key: value}, the value as written; `+key` / `++key` /
    `~key` read as `key`; an override without `=` (a bare `~key`) is left out."""
    return dict(o.lstrip("+~").split("=", 1) for o in overrides if "=" in o)
