"""Code a config names by `_target_`: which targets may run, what a model factory is given,
and what it must return.

A config is data, and Hydra's `_target_` turns data into a call. l1sweep runs its own code
(`sweep.*`) and torch's layers and optimizers; anything else runs only when the user lists it
in `allow_targets` (the command line or their own config), and every run logs the outside
targets it calls. docs/own_model_and_data.md is the user-facing page for all of this.
"""

from __future__ import annotations

import inspect
import logging
import re
from typing import TYPE_CHECKING

import torch
import torch.nn as nn
from hydra.errors import InstantiationException
from omegaconf import DictConfig, ListConfig, OmegaConf

from sweep import _compat
from sweep.config import targets
from sweep.errors import UserError

if TYPE_CHECKING:  # config sits below data (docs/architecture.md): the type only
    from sweep.data.datasets import Dataset

log = logging.getLogger(__name__)

ALLOW_KEY = "allow_targets"
DOCS = "docs/own_model_and_data.md"
_PATTERN = targets.PATTERN
_REFUSED = re.compile(_compat.REFUSED_TARGET)


def allowed(node: DictConfig) -> tuple[str, ...]:
    """The user's `allow_targets` patterns, from the root of the config `node` belongs to."""
    root = _compat.config_root(node)
    value = root.get(ALLOW_KEY) if isinstance(root, DictConfig) else None
    if value is None:
        return ()
    if isinstance(value, str) or not isinstance(value, (list, tuple, ListConfig)):
        value = [value]  # allow_targets=mypkg.* on the command line: one pattern
    patterns = tuple(str(v) for v in value)
    for p in patterns:
        if not _PATTERN.fullmatch(p):
            raise UserError(
                f"{ALLOW_KEY} entries name a module or a target, e.g. [mypkg.*] or "
                f"[mypkg.models.tiny]; got {p!r}"
            )
    return patterns


is_allowed = targets.is_allowed  # one rule for configs and archives (sweep/config/targets.py)


def refusal(key: str, name: str, target: bool = True) -> UserError:
    """The one line for outside code `name` that `allow_targets` does not allow, at config key
    `key` (its `_target_`, or the key itself where `target` is False)."""
    package = name.split(".")[0]
    where = f"{key}._target_" if target else key
    return UserError(
        f"{where}={name} is code outside l1sweep, which runs only if you allow it: "
        f"add {ALLOW_KEY}=[{package}.*] to the command line or to your config (see {DOCS})"
    )


# Shared with the archive loader (sweep/export.py), which must not import Hydra.
locate = targets.locate
accepted = targets.accepted


def _check_arguments(
    key: str,
    name: str,
    target: object,
    node: DictConfig,
    offered: dict[str, object],
    names: list[str],
) -> None:
    """The config's keys and the offered arguments must fit the target's signature; torch's
    TypeError from inside the call would not say which config key is wrong."""
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):
        return
    given = {k: None for k in node if not (k.startswith("_") and k.endswith("_"))}
    try:
        if node.get("_partial_"):
            signature.bind_partial(**given, **offered)
        else:
            signature.bind(**given, **offered)
    except TypeError as e:
        keys = ", ".join(given) or "none"
        raise UserError(
            f"{key}: {name}{signature} cannot take its arguments ({e}); it is called with the "
            f"{key}.* keys (here: {keys}) and those of {', '.join(names) or 'no others'} "
            f"it accepts (see {DOCS})"
        ) from None


def key_of(node: DictConfig) -> str:
    """The dotted key of `node` in its config ("model", "callbacks.archive"), found from the
    root by identity through public lookups; "config" for the root itself or a node the walk
    does not reach."""
    stack: list[tuple[str, DictConfig | ListConfig]] = [("", _compat.config_root(node))]
    while stack:
        prefix, parent = stack.pop()
        keys = parent.keys() if isinstance(parent, DictConfig) else range(len(parent))
        for k in keys:
            try:
                child = parent[k]
            except Exception:  # an interpolation that does not resolve here: not the node
                continue
            if child is node:
                return f"{prefix}{k}"
            if isinstance(child, (DictConfig, ListConfig)):
                stack.append((f"{prefix}{k}.", child))
    return "config"


def instantiate_checked(node: DictConfig, base: tuple[str, ...], **offered: object) -> object:
    """hydra.utils.instantiate of `node` with the allow-list `base` plus the user's
    `allow_targets`, given those of `offered` its target accepts. A refused target, or a
    UserError the target raises, becomes one UserError line."""
    key = key_of(node)
    name = node.get("_target_")
    user = allowed(node)
    whitelist = base + user
    if isinstance(name, str):
        if not is_allowed(name, whitelist):
            raise refusal(key, name)  # before anything is imported: importing runs code
        try:
            target = locate(name)
        except (ImportError, AttributeError) as e:
            reason = (str(e).splitlines() or [type(e).__name__])[0]
            raise UserError(
                f"{key}._target_={name} cannot be imported ({reason}); is its package "
                "installed or in the directory you run from?"
            ) from e
        names = list(offered)
        offered = accepted(target, offered)
        _check_arguments(key, name, target, node, offered, names)
        if not is_allowed(name, base):
            log.info(f"{key}: running outside code {name} (allowed by {ALLOW_KEY}={list(user)})")
    try:
        # The node resolved into a plain copy, not the node itself: Hydra's instantiate of a
        # node inside a config guards the whole config read-only (a walk of every node) and
        # deep-copies it for the offered arguments, 2-5 ms a build and several builds a
        # trial (issue 33). No target can reach the config through a copy, and the
        # allow-list applies to it the same; a nested target's key is prefixed below.
        made = _compat.instantiate(OmegaConf.to_container(node, resolve=True), whitelist,
                                   **offered)  # fmt: skip
    except InstantiationException as e:
        if isinstance(e.__cause__, UserError):
            raise e.__cause__ from None
        refused = _REFUSED.search(str(e))
        if refused:  # a nested _target_ inside the node
            nested = re.search(r"full_key: (\S+)", str(e))
            where = f"{key}.{nested.group(1)}" if nested else key
            raise refusal(where, refused.group(1)) from None
        raise
    if "n_classes" in offered and not isinstance(made, nn.Module):  # a model factory
        raise UserError(
            f"{key}._target_={name} returned a {type(made).__name__}, not a torch.nn.Module; "
            "the factory must return the model"
        )
    return made


def check_model(model: object, data: Dataset, key: str = "model") -> None:
    """The model factory's contract: it returns an nn.Module with parameters that maps a batch
    of inputs, shape (batch, *data.image_shape), to logits of shape (batch, n_classes)."""
    if not isinstance(model, nn.Module):
        raise UserError(
            f"{key}._target_ returned a {type(model).__name__}, not a torch.nn.Module; "
            "the factory must return the model"
        )
    if not any(True for _ in model.parameters()):
        raise UserError(f"{key} has no parameters: there is nothing to train or regularize")
    x = data.x_train[:2]
    shape = tuple(data.image_shape)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(x)
    except RuntimeError as e:  # torch's shape errors: the factory ignored the input size
        reason = (str(e).splitlines() or [type(e).__name__])[0]
        raise UserError(
            f"{key} fails on a batch of inputs of shape (2, {', '.join(map(str, shape))}) "
            f"({reason}); build it from the n_inputs / input_shape it is given (see {DOCS})"
        ) from e
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (len(x), data.n_classes):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise UserError(
            f"{key} returns {got} for a batch of 2; it must return logits of shape "
            f"(batch, n_classes) = (2, {data.n_classes})"
        )
