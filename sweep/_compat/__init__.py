"""Every private API of another library that l1sweep uses, in one place, each with why: this
package (here: torch, Hydra, OmegaConf; in `rdb.py`: Optuna's RDB storage).

A private name can change in any release. Each one is used only through this package, and
`check()` (run by tests/test_compat.py) fails naming the one that the installed libraries no
longer have, so an upgrade breaks one test with a clear message instead of a sweep at run time.
The fast training steps (`train.fast`) turn themselves off, with one log line, where the names
they need are gone (`missing()`).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from sweep._compat import rdb
from sweep._compat.rdb import (
    BATCH_WRITES,
    BULK_ATTRS,
    SQLITE_WAL,
    batch_off,
    file_system,
    get_storage,
    one_transaction,
    set_trial_user_attrs,
    sqlite_wal,
)

if TYPE_CHECKING:
    # Each imported where it is used: the archive loader needs only torch and numpy, and the
    # sweeper (which Hydra imports for every command) parses a search space without torch,
    # so a mistaken override is refused before torch's seconds of import.
    import torch
    from omegaconf import DictConfig
    from torch import nn


# --- Hydra's Optuna sweeper -----------------------------------------------------------------
# The plugin turns Hydra's sweep overrides (choice, range, interval, tag(log)) into Optuna
# distributions in `create_params_from_overrides`, with care for ranges Optuna cannot hold
# (float steps, Hydra's exclusive stop). The function has no public home; using it keeps
# l1sweep's search space exactly the plugin's documented one.
def create_params_from_overrides(arguments: list[str]) -> tuple[dict, dict[str, Any], list[str]]:
    """(search space: Optuna distributions by key, fixed values by key, other overrides) of
    Hydra override strings, as the Optuna sweeper plugin parses them."""
    from hydra_plugins.hydra_optuna_sweeper._impl import create_params_from_overrides as parse

    return parse(arguments)


# --- Hydra's instantiate allow-list -----------------------------------------------------------
# hydra-core 1.4.0rc3 restricts which `_target_`s a call may run through the keyword
# `_execution_whitelist_`; Hydra's main branch spells it `_target_whitelist_`, and l1sweep's pin
# admits any 1.4. Every instantiate that runs a name from a config goes through `instantiate`
# here, which passes the spelling the installed Hydra takes (read from its signature).
ALLOW_LIST_KEYWORDS = ("_target_whitelist_", "_execution_whitelist_")
# Hydra's message for a nested `_target_` the allow-list refused (both spellings' releases).
REFUSED_TARGET = r"Target '([^']+)' is not in the Hydra (?:execution|target) whitelist"


@functools.cache
def allow_list_keyword() -> str:
    """The keyword `hydra.utils.instantiate` takes for its allow-list of `_target_`s.
    Raises RuntimeError where it takes neither spelling (l1sweep would run any target)."""
    import inspect

    from hydra.utils import instantiate as hydra_instantiate

    params = inspect.signature(hydra_instantiate).parameters
    for keyword in ALLOW_LIST_KEYWORDS:
        if keyword in params:
            return keyword
    raise RuntimeError(
        "hydra.utils.instantiate takes no allow-list of _target_s "
        f"(neither of {', '.join(ALLOW_LIST_KEYWORDS)}): install hydra-core 1.4.0rc3"
    )


def instantiate(config: Any, allowed: tuple[str, ...], **kwargs: Any) -> Any:
    """`hydra.utils.instantiate(config, **kwargs)` allowed to run only the `_target_`s in
    `allowed` (exact names, or `prefix.*`). Raises Hydra's InstantiationException for a
    refused or failing target, as Hydra does."""
    from hydra.utils import instantiate as hydra_instantiate

    return hydra_instantiate(config, **kwargs, **{allow_list_keyword(): tuple(allowed)})


# --- Hydra's global state and launchers --------------------------------------------------------
# A forkserver's child runs a job in a fresh process: it needs Hydra's ConfigStore and plugin
# registry as the sweep process has them. Hydra's joblib launcher sends them the same way
# (`Singleton.get_state()` / `set_state()`, hydra.core.singleton; not in Hydra's docs).
def hydra_global_state() -> Any:
    """Hydra's global singletons (ConfigStore, plugins) as one picklable object."""
    from hydra.core.singleton import Singleton

    return Singleton.get_state()


def set_hydra_global_state(state: Any) -> None:
    """Restore what `hydra_global_state` returned, in a fresh process."""
    from hydra.core.singleton import Singleton

    Singleton.set_state(state)


def joblib_launcher(**setup: Any) -> Any:
    """Hydra's joblib launcher with its documented defaults, set up with `setup`
    (hydra_context, task_function, config): the fork launcher hands its jobs to it where forking
    is unsafe. The class sits in the plugin's module, not a documented API."""
    import dataclasses

    from hydra_plugins.hydra_joblib_launcher.config import JobLibLauncherConf
    from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher

    options = dataclasses.asdict(JobLibLauncherConf())
    options.pop("_target_")
    launcher = JoblibLauncher(**options)
    launcher.setup(**setup)
    return launcher


# The loggers whose INFO lines announce each launched job: Hydra's launchers log under their
# (private) module names.
LAUNCH_LOGGERS = (
    "hydra._internal.core_plugins.basic_launcher",
    "hydra_plugins.hydra_joblib_launcher",
    "hydra_plugins.hydra_submitit_launcher",
)


__all__ = [
    "LAUNCH_LOGGERS",
    "REFUSED_TARGET",
    "BATCH_WRITES",
    "BULK_ATTRS",
    "SQLITE_WAL",
    "allow_list_keyword",
    "batch_off",
    "check",
    "config_root",
    "create_params_from_overrides",
    "file_system",
    "get_storage",
    "hydra_global_state",
    "instantiate",
    "joblib_launcher",
    "has_module_hooks",
    "has_optimizer_step_hooks",
    "log_softmax_backward",
    "missing",
    "one_transaction",
    "rdb",
    "set_trial_user_attrs",
    "set_hydra_global_state",
    "sqlite_wal",
]


# --- torch.nn.Module hooks -----------------------------------------------------------------
# The hand-written MLP step (sweep/training/fastmlp.py) bypasses module calls, so a hook would be
# skipped silently, and the compactor (sweep/models/compact.py) cannot carry a forward hook over to
# the smaller layers. torch registers hooks publicly but has no public way to ask whether a
# module has any.
def has_module_hooks(module: nn.Module, forward_only: bool = False) -> bool:
    """Whether `module` itself (not its children) has a forward, forward-pre or (unless
    `forward_only`) backward hook registered."""
    if module._forward_hooks or module._forward_pre_hooks:
        return True
    return not forward_only and bool(module._backward_hooks)


# --- torch.optim.Optimizer step hooks --------------------------------------------------------
# The flat SGD step (sweep/training/fastsgd.py) stands in for optimizer.step(), which runs the step
# hooks; it must step aside where any is registered, and torch has no public query for them.
def has_optimizer_step_hooks(optimizer: torch.optim.Optimizer) -> bool:
    """Whether a step pre/post hook is registered on `optimizer` or globally."""
    from torch.optim import optimizer as torch_optimizer

    return any(
        (
            optimizer._optimizer_step_pre_hooks,
            optimizer._optimizer_step_post_hooks,
            torch_optimizer._global_optimizer_pre_hooks,
            torch_optimizer._global_optimizer_post_hooks,
        )
    )


# --- ATen's log-softmax backward ---------------------------------------------------------------
# The kernel autograd runs for log_softmax's gradient; the same arithmetic in public ops
# (grad - exp(out) * grad.sum) differs in the last bits in about 9 batches of 10 (measured),
# and the fast MLP step promises autograd's bits.
@functools.cache
def _log_softmax_kernel() -> Any:
    import torch

    return getattr(torch, "_log_softmax_backward_data", None)


def log_softmax_backward(
    grad: torch.Tensor, output: torch.Tensor, dim: int, dtype: torch.dtype
) -> torch.Tensor:
    """d(loss)/d(logits) from d(loss)/d(log_softmax) `grad` and log_softmax's `output`, both
    (batch, classes): autograd's own kernel (torch._log_softmax_backward_data)."""
    return _log_softmax_kernel()(grad, output, dim, dtype)


# --- OmegaConf: a node's root ------------------------------------------------------------------
# `allow_targets` sits at the config's root, and a `_target_` is checked where it is built,
# from the node alone (`sweep.config.user_code.instantiate_checked`): OmegaConf has no public way
# from a node to its root.
def config_root(node: DictConfig) -> DictConfig:
    """The root config that `node` belongs to (itself, if it is one)."""
    return node._get_root()


@functools.cache
def missing() -> tuple[str, ...]:
    """The private names above that the installed torch lacks (empty: all present)."""
    import torch

    out = []
    probe = torch.nn.Linear(1, 1)
    try:
        has_module_hooks(probe)
    except AttributeError as e:
        out.append(f"torch.nn.Module hooks ({e})")
    try:
        has_optimizer_step_hooks(torch.optim.SGD(probe.parameters(), lr=0.1))
    except AttributeError as e:
        out.append(f"torch.optim step hooks ({e})")
    from omegaconf import OmegaConf

    try:
        config_root(OmegaConf.create({"a": {}}).a)
    except AttributeError as e:
        out.append(f"omegaconf's node root ({e})")
    if _log_softmax_kernel() is None:
        out.append("torch._log_softmax_backward_data")
    return tuple(out)


def check() -> None:
    """Raise RuntimeError naming every private API above that the installed libraries no
    longer have or that no longer behaves as l1sweep relies on."""
    gone = missing()
    try:
        allow_list_keyword()
    except RuntimeError as e:
        gone += (str(e),)
    if gone:
        raise RuntimeError(f"private API gone from the installed libraries: {', '.join(gone)}")
    space, fixed, rest = create_params_from_overrides(
        ["a=tag(log, interval(1e-5, 1e-3))", "b=choice(x,y)", "c=3", "~d"]
    )
    if (sorted(space), fixed, rest) != (["a", "b"], {"c": "3"}, ["~d"]):
        raise RuntimeError(
            "hydra_optuna_sweeper._impl.create_params_from_overrides changed: "
            f"got {space}, {fixed}, {rest}"
        )
    rdb._check_one_transaction()
    rdb._check_sqlite_wal()
    rdb._check_bulk_attrs()
