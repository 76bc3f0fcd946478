"""Pareto optimality for minimised objectives."""

from __future__ import annotations

import numpy as np


def pareto_indices(costs: np.ndarray) -> list[int]:
    """Indices of the non-dominated rows of `costs` [n_points, n_objectives], all minimised.

    A point is dominated if another is no worse in every objective and better in one. Of exact
    duplicates, the first is kept, so the front lists every distinct trade-off once.
    """
    costs = np.asarray(costs, dtype=float)
    front = []
    for index, point in enumerate(costs):
        no_worse = np.all(costs <= point, axis=1)
        better = np.any(costs < point, axis=1)
        dominated = np.any(no_worse & better)
        duplicate_before = np.any(np.all(costs[:index] == point, axis=1))
        if not dominated and not duplicate_before:
            front.append(index)
    return front


def hypervolume_2d(costs: np.ndarray, reference: tuple[float, float] = (1.0, 1.0)) -> float:
    """Area dominated by the points of `costs` [n, 2] (both minimised) and bounded by `reference`.

    With error in [0, 1] and cost relative to the unpruned network in (0, 1], the reference (1, 1) makes
    the hypervolume the share of the unit square that the front dominates: 0 for nothing useful, 1 for a
    zero-error, zero-cost model. Points beyond the reference contribute nothing.
    """
    costs = np.asarray(costs, dtype=float).reshape(-1, 2)
    inside = costs[np.all(costs < np.asarray(reference), axis=1)]
    if len(inside) == 0:
        return 0.0
    front = inside[pareto_indices(inside)]
    front = front[np.argsort(front[:, 0])]  # ascending first objective, so descending second
    area, previous_second = 0.0, reference[1]
    for first, second in front:
        area += (reference[0] - first) * (previous_second - second)
        previous_second = second
    return float(area)
