"""The hypervolume of an accuracy-sparsity front: how multi-objective searches are compared
(Karl et al. 2022, "Multi-objective hyperparameter optimization: an overview", sec. 5), here
in two dimensions, both maximized:

    x = -log10(weights kept) = -log10(1 - sparsity)   (0 dense, 1 at 90% zeros, 2 at 99%)
    y = accuracy (validation, or test)

The log axis spreads the high-sparsity end, where the fronts differ. The reference point is
(0, chance) (`reference`): the dense model's x and the accuracy of guessing, 1 / the data's
classes (0.1 for digits and Fashion-MNIST, 0.5 for a two-class table), so a point scores the
area it dominates above chance, and a model no better than guessing adds nothing however
sparse. x is capped at 6 (one weight in a million kept), so a model with every weight zero has
a finite x. `outline` is the staircase that bounds that area, as front_points.png draws it.

Optuna computes hypervolumes in `optuna._hypervolume.compute_hypervolume`, which is private
(a leading underscore, not in the API reference; its signature changed between releases), and
its public `optuna.visualization.plot_hypervolume_history` needs a study and draws a figure
rather than returning values for a set of points. In two dimensions the exact hypervolume is
a sort and a sweep (`hypervolume` below), so it is written out here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

MAX_X = 6.0  # -log10 of one weight in a million kept
# The classes assumed where a result does not record its data's (a row written before rows
# had `n_classes`, and no config to read them from): whoever assumes it says so.
ASSUMED_CLASSES = 10


def reference(n_classes: int) -> tuple[float, float]:
    """The reference point (0, 1 / n_classes): the dense model's x and chance accuracy."""
    return (0.0, 1.0 / n_classes)


def kept_axis(sparsity: float) -> float:
    """x = -log10(1 - sparsity), for a fraction of zeros in [0, 1]; capped at MAX_X."""
    return min(-math.log10(max(1.0 - sparsity, 10.0**-MAX_X)), MAX_X)


def front(points: Sequence[tuple[float, float]]) -> list[int]:
    """The indices of the non-dominated points of (x, y), both maximized, by x ascending (so
    y descending); nan points are never on it, and of equal points the first is."""
    best: list[int] = []
    finite = [i for i, p in enumerate(points) if not any(map(math.isnan, p))]
    for i in sorted(finite, key=lambda i: (-points[i][0], -points[i][1], i)):
        if not best or points[i][1] > points[best[-1]][1]:
            best.append(i)
    return best[::-1]


def hypervolume(points: Iterable[tuple[float, float]], reference: Sequence[float]) -> float:
    """The area of the union of the boxes [rx, x] x [ry, y] of the points (x, y), both
    maximized, against the reference point (rx, ry); points not above it in both add nothing.
    Exact: the points by x descending, each adds (x - rx) * (y - the highest y so far)."""
    rx, ry = reference
    area, top = 0.0, ry
    for x, y in sorted(
        ((x, y) for x, y in points if x > rx and y > ry), key=lambda p: (-p[0], -p[1])
    ):
        if y > top:
            area += (x - rx) * (y - top)
            top = y
    return area


def outline(
    points: Iterable[tuple[float, float]], reference: Sequence[float]
) -> list[tuple[float, float]]:
    """The boundary of the area `hypervolume` measures, as a closed polygon: from (rx, the
    highest y) along the front's staircase (each point's y holds from the previous point's x
    to its own, then drops at its x to the next point's y), down to ry at the last point's x,
    back to (rx, ry) and up to the start. Only the non-dominated points above the reference
    in y and not left of it in x shape it; [] where none is. Its enclosed area (shoelace) is
    `hypervolume(points, reference)`."""
    rx, ry = reference
    pts = [(x, y) for x, y in points if x >= rx and y > ry]  # nan compares False: left out
    best = [pts[i] for i in front(pts)]  # x ascending, y descending
    if not best:
        return []
    line = [(rx, best[0][1])]
    for (x, y), (_, y_next) in zip(best, [*best[1:], (math.nan, ry)]):
        line += [(x, y), (x, y_next)]
    return [*line, (rx, ry), line[0]]


def path_hypervolume(points: list[dict], n_classes: int, key: str = "val_acc") -> float:
    """The hypervolume of one run's path: its levels' (kept_axis(sparsity), `key`), against
    (0, 1 / n_classes); `points` are the rounds' figures (sweep/task/job.py prune_and_finetune).
    0.0 for a path with no point above chance."""
    xy = [(kept_axis(p["sparsity"]), p[key]) for p in points]
    return hypervolume(xy, reference(n_classes))
