"""Every private API of another library that l1sweep uses, in one place, each with why.

A private name can change in any release. Each one is used only through this module, and
`check()` (run by tests/test_compat.py) fails naming the one that the installed libraries no
longer have, so an upgrade breaks one test with a clear message instead of a sweep at run time.
The fast training steps (`train.fast`) turn themselves off, with one log line, where the names
they need are gone (`missing()`).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

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


__all__ = [
    "check",
    "config_root",
    "create_params_from_overrides",
    "has_module_hooks",
    "has_optimizer_step_hooks",
    "log_softmax_backward",
    "missing",
]


# --- torch.nn.Module hooks -----------------------------------------------------------------
# The hand-written MLP step (sweep/fastmlp.py) bypasses module calls, so a hook would be
# skipped silently, and the compactor (sweep/compact.py) cannot carry a forward hook over to
# the smaller layers. torch registers hooks publicly but has no public way to ask whether a
# module has any.
def has_module_hooks(module: nn.Module, forward_only: bool = False) -> bool:
    """Whether `module` itself (not its children) has a forward, forward-pre or (unless
    `forward_only`) backward hook registered."""
    if module._forward_hooks or module._forward_pre_hooks:
        return True
    return not forward_only and bool(module._backward_hooks)


# --- torch.optim.Optimizer step hooks --------------------------------------------------------
# The flat SGD step (sweep/fastsgd.py) stands in for optimizer.step(), which runs the step
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
