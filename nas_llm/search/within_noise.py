"""Ties within the validation split's noise: within a budget, ship the largest sub-network that the search's
validation split cannot tell from the best one (prune.py --ties_within_noise True).

A few hundred validation examples rank sub-networks that differ by a sentence or two at random: on SST-2 (1,000
validation sentences) every sub-network from 28% of the encoder up scored 0.084-0.094, within one standard error
of each other, and the validation-best pick at <= 40-70% was the same 35% sub-network. Among sub-networks of one
weight-sharing super-network, a larger one keeps the smaller one's units and more, so where validation cannot
separate them the larger is the better bet. The rule widens the exact-tie rule of `budgets.best_within` (an exact
tie goes to the largest) to a tie within one standard error: a sub-network within the budget whose validation error
is above the best's by at most one standard error of the difference, paired over the validation examples (the
same paired comparison the multi-fidelity race uses, `multi_fidelity.paired_error_difference`), ties with it,
and the largest of the tied ones ships. One standard error is the tie of the issue's own comparisons (a cell
below RFP by less than one paired standard error is a tie).

It needs each sub-network's predictions on the validation split: the search keeps them with
--record_validation_predictions True (prune.py passes it), the labels in the results' `recorded_validation`.
"""

from __future__ import annotations

import numpy as np

from nas_llm.common.errors import UsageError
from nas_llm.search.budgets import best_within, fits, size_share
from nas_llm.search.multi_fidelity import paired_error_difference

PREDICTIONS_KEY = "validation_predictions"


def ties_with_best(task_name: str, point: dict, best: dict, labels: np.ndarray) -> bool:
    """Whether `point`'s validation error is above `best`'s by at most one paired standard error.

    The bootstrap of a non-accuracy metric is seeded by the two iterations, so the answer does not depend on
    the order in which points are compared."""
    rng = np.random.default_rng([best["iteration"], point["iteration"]])
    difference, standard_error = paired_error_difference(
        task_name, np.asarray(point[PREDICTIONS_KEY]), np.asarray(best[PREDICTIONS_KEY]), labels, rng)
    # at most, inclusive: one more wrong example of n is a difference of exactly one standard error (1/n), which
    # float rounding must not turn into a miss
    return difference <= standard_error * (1 + 1e-9)


def largest_within_noise(points: list[dict], budget: float, budget_on: str, unpruned: dict, task_name: str,
                         labels: list | np.ndarray) -> dict | None:
    """The largest point within `budget` whose validation error ties with the best one's within one paired
    standard error (`ties_with_best`); None if no point is within the budget.

    `points` are a search's records with their `validation_predictions`; a point without them (a multi-fidelity
    search's sub-network stopped on a share) cannot be compared and is left out, as the best does not come from
    it either."""
    scored = [point for point in points if PREDICTIONS_KEY in point]
    if points and not scored:
        raise UsageError("the search kept no validation predictions; run it with --record_validation_predictions "
                         "True to break ties within the validation noise")
    best = best_within(scored, budget, budget_on, unpruned)
    if best is None:
        return None
    labels = np.asarray(labels)
    best_size = size_share(best, budget_on, unpruned)
    # only sub-networks at least as large as the best can be the largest tied one: the others need no comparison
    tied = [point for point in scored if fits(point, budget, budget_on, unpruned)
            and size_share(point, budget_on, unpruned) >= best_size and ties_with_best(task_name, point, best, labels)]
    return max(tied, key=lambda point: (size_share(point, budget_on, unpruned), -point["error"]))
