"""Old module names, kept importable: `sweep.train` is `sweep.training.train`, and so on.

Sweeps, archives and configs written before the modules moved into subpackages name their
`_target_`s by the old paths (`sweep.regularizers.Regularizer`, `sweep.callbacks.Archive`,
`sweep.sweeper.L1Sweeper` in a sweep's `.hydra/hydra.yaml`). A meta-path finder answers for
those names with the moved module itself (one module object under two names, so `isinstance`
and module state agree). It imports nothing until an old name is asked for.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from types import ModuleType

# old module -> where it lives now. `sweep.models` and `sweep.data` are packages whose
# __init__ exports the old public names (`sweep.models.mlp`, `sweep.data.load_digits`).
MOVED = {
    "sweep.callbacks": "sweep.task.callbacks",
    "sweep.loggers": "sweep.task.loggers",
    "sweep.job": "sweep.task.job",
    "sweep.objectives": "sweep.task.objectives",
    "sweep.train": "sweep.training.train",
    "sweep.fastmlp": "sweep.training.fastmlp",
    "sweep.fastsgd": "sweep.training.fastsgd",
    "sweep.schedules": "sweep.training.schedules",
    "sweep.regularizers": "sweep.sparsity.regularizers",
    "sweep.pruning": "sweep.sparsity.pruning",
    "sweep.features": "sweep.sparsity.features",
    "sweep.compact": "sweep.models.compact",
    "sweep.tables": "sweep.data.tables",
    "sweep.searched": "sweep.config.searched",
    "sweep.schema": "sweep.config.schema",
    "sweep.targets": "sweep.config.targets",
    "sweep.user_code": "sweep.config.user_code",
    "sweep.row": "sweep.results.row",
    "sweep.points": "sweep.results.points",
    "sweep.hypervolume": "sweep.results.hypervolume",
    "sweep.archive": "sweep.deploy.archive",
    "sweep.latency": "sweep.deploy.latency",
    "sweep.speed_plots": "sweep.analysis.speed",
    "sweep.sweeper": "sweep.search.sweeper",
    "sweep.space": "sweep.search.space",
    "sweep.study": "sweep.search.study",
    "sweep.storage": "sweep.search.storage",
    "sweep.launcher": "sweep.search.launcher",
    "sweep.parallel": "sweep.search.parallel",
    "sweep.console": "sweep.search.console",
    "sweep.interrupts": "sweep.search.interrupts",
    "sweep.trials": "sweep.search.trials",
}


class MovedFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old module name in `MOVED` and loads it as the module it moved to.

    `sweep.results`, `sweep.sparsity`, `sweep.models` and `sweep.data` were modules and are
    packages now: a package is found first, so those names are not aliased (the last two
    export their old public names)."""

    def find_spec(self, fullname: str, path: object = None, target: object = None):
        """A spec for an old name (`sweep.train`), None for every other name."""
        if fullname not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def __init__(self) -> None:
        self.specs: dict[str, object] = {}  # new name -> the module's own spec

    def create_module(self, spec) -> ModuleType:
        """The moved module itself, imported under its new name."""
        module = importlib.import_module(MOVED[spec.name])
        self.specs[module.__name__] = module.__spec__
        return module

    def get_code(self, fullname: str) -> object:
        """The moved module's code, so that `python -m <old name>` (runpy) runs it."""
        new = MOVED[fullname]
        return importlib.util.find_spec(new).loader.get_code(new)

    def exec_module(self, module: ModuleType) -> None:
        """Nothing to run: the module ran under its new name. Python's import machinery set
        `__spec__` to the alias's spec on the way here; give the module back its own."""
        module.__spec__ = self.specs[module.__name__]


def current(name: str) -> str:
    """A dotted name (`sweep.regularizers.Regularizer`) with its module's old path replaced by
    where the module lives now (`sweep.sparsity.regularizers.Regularizer`); other names as
    they are. For comparing what a study recorded before the move with what it records now."""
    parts = name.split(".")
    for i in range(len(parts), 1, -1):
        new = MOVED.get(".".join(parts[:i]))
        if new is not None:
            return ".".join([new, *parts[i:]])
    return name


def install() -> None:
    """Put the finder on `sys.meta_path` once (after the standard finders: a real module of
    an old name, should one come back, wins)."""
    if not any(isinstance(f, MovedFinder) for f in sys.meta_path):
        sys.meta_path.append(MovedFinder())
