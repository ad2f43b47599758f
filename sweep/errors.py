"""Bad input, reported as one line: `UserError`, and `config_error` (Hydra's or OmegaConf's
multi-line report of a bad override as one line). The lowest module of l1sweep with
`sweep._compat`: the entry points and the sweep's search space both report through it."""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user: reported as one line, never as a traceback."""


def config_error(e: Exception) -> str:
    """Hydra's or OmegaConf's multi-line report of a bad override or config, as one line."""
    # imported here: the archive loader (sweep.export.load) imports this module and needs
    # only torch and numpy
    from omegaconf.errors import OmegaConfBaseException

    lines = [ln.strip() for ln in str(e).splitlines()]
    if "Config search path:" in lines:  # an unknown group option: keep the options it lists
        lines = lines[: lines.index("Config search path:")]
        heads = [i for i, ln in enumerate(lines) if ln.startswith("Available options")]
        if heads:
            options = ", ".join(ln for ln in lines[heads[0] + 1 :] if ln)
            lines = [*lines[: heads[0]], f"{lines[heads[0]]} {options}"]
    lines = [ln for ln in lines if ln and not ln.startswith(("object_type", "reference"))]
    cause = e.__cause__ if isinstance(e.__cause__, OmegaConfBaseException) else None
    if cause is not None:  # "Error merging override seed=abc" + OmegaConf's own reason
        reason = str(cause).splitlines()[0]
        if " not in " in reason:  # a key the schema lacks: Hydra's "use +key" would fail too
            lines = [ln for ln in lines if not ln.startswith("To append")]
        lines[-1] = f"{lines[-1].rstrip('.')}: {reason}"
    what = ". ".join(ln.rstrip(".") for ln in lines)
    what += "" if what.endswith("?") else "."
    return f"{what} Fix it; `python -m sweep.run --cfg job` prints every key and value."
