"""A configuration's own rules, the first step of the pre-flight check (`job.preflight`): every
key in its range (the schemas' rules) and the keys that must agree (an objective of a path
needs a path). Nothing is built and torch is not imported here, so a single run
(`sweep.run.main`) checks these first and refuses a mistaken override in a second, before
torch's seconds of imports."""

from __future__ import annotations

from omegaconf import DictConfig

from sweep.config import schema
from sweep.errors import UserError


def check(cfg: DictConfig) -> None:
    """Raise UserError naming the first key out of range (the schema's rules, the lambdas too:
    a regularizer that ignores one never sees it) or an objective of a path without a path."""
    schema.check(cfg)
    if "path_hypervolume" in cfg.objective.metrics and (
        cfg.prune.method == "none" or cfg.prune.get("path") is None
    ):
        raise UserError(
            "objective=path_hypervolume needs a path to measure: set prune=magnitude (or "
            "neurons) and prune.path=[...], e.g. 'prune.path=[0.5,0.8,0.9,0.95]'; or, for a model "
            "without a path (prune=none, e.g. experiment=fashion_path's dense baseline), another "
            "objective such as objective=accuracy"
        )
