"""Which dotted `_target_` names may run, and how to find and call them: the `allow_targets`
rule of sweep/config/user_code.py, with the standard library alone, so the archive loader
(sweep/export.py `load`) applies the same rule without importing Hydra."""

from __future__ import annotations

import importlib
import inspect
import re

# A module or a target, optionally with a trailing `.*` (everything below it): "mypkg.*",
# "mypkg.models.tiny". A bare "*" would allow any importable code, so it is not a pattern.
PATTERN = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*(\.\*)?")


def is_allowed(name: str, whitelist: tuple[str, ...]) -> bool:
    """Hydra's rule: an exact entry, or `prefix.*` for everything below `prefix`."""
    return any(name == w or (w.endswith(".*") and name.startswith(w[:-1])) for w in whitelist)


def locate(name: str) -> object:
    """The object a dotted path names: the longest importable module prefix, then attributes.
    Call it only on an allowed name: importing a module runs its code."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        module = ".".join(parts[:i])
        try:
            obj = importlib.import_module(module)
            break
        except ModuleNotFoundError as e:
            if e.name is None or not module.startswith(e.name):
                raise  # the module exists but imports something missing: say so
    else:
        raise ImportError(f"no module named {parts[0]!r}")
    for attr in parts[i:]:
        obj = getattr(obj, attr)
    return obj


def accepted(target: object, offered: dict[str, object]) -> dict[str, object]:
    """The keyword arguments of `offered` that `target`'s signature takes (all of them if it
    takes **kwargs): a factory or nn.Module class declares only what it needs."""
    try:
        params = inspect.signature(target).parameters.values()
    except (TypeError, ValueError):  # no signature to read (some builtins): offer everything
        return offered
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return offered
    names = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return {k: v for k, v in offered.items() if k in names}
