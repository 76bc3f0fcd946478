"""Budgets on a sub-network's size, and the best point within one: what "30% of the model" means.

A point is a search's (or run_rfp.py's) record of one sub-network: its validation `error` and its costs
(`num_parameters`, `num_layer_parameters`, `macs`, `latency_ms`). MiniLM's embeddings are half of its
parameters and every sub-network keeps them, so a budget on the whole model hides what pruning removes: the
default measure is the transformer layers' parameters ("encoder"), as the GLUE study reports.
"""

from __future__ import annotations

BUDGET_MEASURES = {  # --budget_on: the point's cost that the budget limits, as a share of the unpruned one
    "encoder": "num_layer_parameters",
    "params": "num_parameters",
    "flops": "macs",
    "latency": "latency_ms",
}
SEARCH_OBJECTIVE = {"encoder": "params", "params": "params", "flops": "flops", "latency": "latency"}


def size_share(point: dict, budget_on: str, unpruned: dict) -> float:
    """The share of the unpruned model's cost that `point` keeps, in the measure `budget_on` names."""
    measure = BUDGET_MEASURES[budget_on]
    return point[measure] / unpruned[measure]


def fits(point: dict, budget: float, budget_on: str, unpruned: dict) -> bool:
    """Whether `point` has the cost `budget_on` names and keeps at most `budget` of the unpruned model's."""
    measure = BUDGET_MEASURES[budget_on]
    return measure in point and point[measure] <= budget * unpruned[measure]


def best_within(points: list[dict], budget: float, budget_on: str, unpruned: dict, larger_on_tie: bool = True
                ) -> dict | None:
    """The point with the lowest validation error within `budget`, None if none is; on a tie, the largest
    (the smallest with `larger_on_tie` False).

    A search's pick is recovered before it ships, and an exact tie on error is in practice a tie of sub-networks
    that all predict the majority class: the largest one within the budget has the most left to recover (on MRPC at
    20% of the encoder, the smallest tied pick had no layers left and could not learn at all). `larger_on_tie`
    False keeps the smallest: RFP's models, one per budget it was run for, so that a budget added to a finished
    run cannot take another budget's RFP candidate by a tie."""
    within = [point for point in points if fits(point, budget, budget_on, unpruned)]
    sign = -1 if larger_on_tie else 1
    return min(within, key=lambda point: (point["error"], sign * size_share(point, budget_on, unpruned)), default=None)


def best_under_budget(points: list[dict], budget: float, unpruned_layer_params: int) -> dict | None:
    """The point with the lowest validation error (then the most parameters) within the encoder budget."""
    return best_within(points, budget, "encoder", {"num_layer_parameters": unpruned_layer_params})
