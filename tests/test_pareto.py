import numpy as np
import pytest

from nas_llm.search.pareto import hypervolume_2d, pareto_indices


def test_pareto_front_of_a_small_set():
    costs = np.array([[0.1, 0.9], [0.2, 0.5], [0.3, 0.6], [0.5, 0.1], [0.2, 0.5], [0.6, 0.6]])
    assert pareto_indices(costs) == [0, 1, 3]


def test_every_point_off_the_front_is_dominated_by_one_on_it():
    costs = np.random.default_rng(0).random((200, 2))
    front = pareto_indices(costs)
    for index in set(range(200)) - set(front):
        assert any(np.all(costs[f] <= costs[index]) for f in front)
    for a in front:
        assert not any(np.all(costs[b] <= costs[a]) and np.any(costs[b] < costs[a]) for b in front)


def test_hypervolume_of_known_fronts():
    assert hypervolume_2d(np.array([[0.5, 0.5]])) == 0.25
    assert hypervolume_2d(np.array([[0.2, 0.6], [0.6, 0.2], [0.7, 0.7]])) == pytest.approx(0.8 * 0.4 + 0.4 * 0.4)
    assert hypervolume_2d(np.array([[1.2, 0.1]])) == 0.0


def test_hypervolume_matches_a_monte_carlo_estimate():
    rng = np.random.default_rng(1)
    costs = rng.random((30, 2))
    samples = rng.random((200_000, 2))
    dominated = np.zeros(len(samples), dtype=bool)
    for point in costs:
        dominated |= np.all(samples >= point, axis=1)
    assert hypervolume_2d(costs) == pytest.approx(dominated.mean(), abs=0.005)
