"""Range rules: what a config value must be beyond its type (config/schema.py puts them on
the fields they constrain with `ruled`, and checks a composed config against them)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING


@dataclass(frozen=True)
class Rule:
    """A range a value must lie in; `text` completes '<key> ...' in the error line. A `number`
    rule first says "must be a number" of a value that is none (a Python caller's, e.g. a
    Regularizer built in code: a config's values are typed before the rules run)."""

    text: str
    test: Callable[[Any], bool]
    number: bool = False


def is_number(v: Any) -> bool:
    """A real number: an int or float, not a bool, not NaN."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v)


NONNEGATIVE = Rule("must be >= 0", lambda v: is_number(v) and v >= 0, number=True)
POSITIVE = Rule("must be > 0", lambda v: is_number(v) and v > 0, number=True)
AT_LEAST_1 = Rule(
    "must be an integer >= 1", lambda v: is_number(v) and v >= 1 and v == int(v), number=True
)
JOBS = Rule(
    "must be auto or an integer >= 1",
    lambda v: v == "auto" or (is_number(v) and v >= 1 and v == int(v)),
)
FRACTION = Rule("must be in (0, 1)", lambda v: is_number(v) and 0 < v < 1, number=True)
SPARSITY = Rule("must be in [0, 1)", lambda v: is_number(v) and 0 <= v < 1, number=True)
PROBABILITY = Rule("must be in [0, 1]", lambda v: is_number(v) and 0 <= v <= 1)
# ResNet's CIFAR family (He et al. 2016, sec. 4.2): 6n + 2 layers, n >= 1
RESNET_DEPTH = Rule("must be 6n + 2 with n >= 1 (8, 14, 20, 32, ...)",
                    lambda v: is_number(v) and v >= 8 and (v - 2) % 6 == 0)  # fmt: skip
# numpy/scikit-learn seeds (the validation split) take 0 <= seed < 2**32
SEED = Rule("must be an integer in [0, 2**32)", lambda v: is_number(v) and 0 <= v < 2**32)
WIDTHS = Rule(
    "must be a list of integers >= 1 (one width per hidden layer)",
    lambda v: all(is_number(w) and w >= 1 for w in v),
)


PATH = Rule(
    "must be a non-empty list of sparsities in (0, 1), each once, in increasing order "
    "(e.g. [0.5,0.8,0.9,0.95])",
    lambda v: (
        isinstance(v, list)
        and bool(v)
        and all(is_number(x) and 0 < x < 1 for x in v)
        and all(b > a for a, b in zip(v, v[1:]))
    ),
)


PARAMS = Rule(
    "must be all, weights or a list of layer class names (e.g. [Linear,Conv2d])",
    lambda v: (
        v in ("all", "weights")
        or (isinstance(v, list) and bool(v) and all(isinstance(x, str) and x for x in v))
    ),
)


def one_of(*choices: str) -> Rule:
    """A rule: the value is one of `choices`."""
    return Rule(f"must be one of {', '.join(choices)}", lambda v: v in choices)


def each(rule: Rule) -> Rule:
    """A rule: every entry of a list value keeps `rule`."""
    return Rule(f"entries {rule.text}", lambda v: all(rule.test(x) for x in v))


def ruled(rule: Rule, default: Any = MISSING) -> Any:
    """A schema field with a range rule (None, where the type allows it, is always allowed)."""
    return field(default=default, metadata={"rule": rule})
