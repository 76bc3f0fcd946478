"""bench/race_rungs.py: which fully scored proposals an extra rung would have stopped, on hand-built predictions."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import race_rungs  # noqa: E402

NUM_EXAMPLES = 40
SETTINGS = {"task_name": "sst2", "objective": "params", "seed": 3, "fidelity_z": 2.0}


def record(iteration: int, params: float, predictions: np.ndarray, labels: np.ndarray) -> dict:
    return {"iteration": iteration, "params": params, "fidelity": 1.0, "error": float(np.mean(predictions != labels)),
            "validation_predictions": predictions.tolist()}


def test_a_rung_stops_what_is_worse_on_its_share_and_nothing_else():
    order = np.arange(NUM_EXAMPLES)  # scored in index order
    labels = np.tile([0, 1], NUM_EXAMPLES // 2)
    # the race's share: the first half of the permutation seeded by the search's seed
    first_half = np.random.default_rng(SETTINGS["seed"]).permutation(NUM_EXAMPLES)[:NUM_EXAMPLES // 2]
    second_half = np.setdiff1d(order, first_half)
    wrong_later = labels.copy()
    wrong_later[second_half] = 1 - labels[second_half]  # right wherever the rung looks, wrong on the rest
    records = [
        record(0, 0.5, labels.copy(), labels),  # the front: never wrong
        record(1, 0.8, 1 - labels, labels),  # always wrong, costs more: worse with certainty on any share
        record(2, 0.9, labels.copy(), labels),  # the same predictions as the member: nothing tells them apart
        record(3, 0.3, 1 - labels, labels),  # cheaper than every member: nothing to compare it with
        record(4, 0.7, wrong_later, labels),  # agrees with the member on the first half
        record(5, 0.6, 1 - labels, labels) | {"same_as": 1},  # re-used, not scored: no rung can save it
        record(6, 0.6, 1 - labels, labels) | {"fidelity": 0.1},  # stopped already
    ]
    stopped = race_rungs.would_stop(records, 0.5, order, labels, SETTINGS, 2.0)
    assert [entry["iteration"] for entry in stopped] == [1]
    assert stopped[0]["bound"] == 1.0  # wrong on every example of the share, with no spread: 1 - z x 0
    # on the whole split (a share of 1 has no unscored rest), the proposal wrong on the second half is worse too
    assert [entry["iteration"] for entry in race_rungs.would_stop(records, 1.0, order, labels, SETTINGS, 2.0)] == [1, 4]
