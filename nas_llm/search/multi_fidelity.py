"""Multi-fidelity evaluation for the offline search: score a sub-network on growing shares of the validation
split, and stop as soon as it can no longer reach the Pareto front.

The validation examples are shuffled once (seeded by the search's --seed) and cut into nested shares, e.g.
the first 10%, the first 30%, all of them. Each sub-network is scored on the first share; after every share
short of the whole split, its error's optimistic bound, error - z * standard error, is compared with the
sub-networks already scored on the whole split: if one of them costs no more and has an error no higher than
that bound, no rest of the split can plausibly put this sub-network on the front, and it stops there. The
examples of a share are scored once: going on to the next share scores only the examples it adds.

The standard error is that of the share's error as an estimate of the whole split's (sampling without
replacement, hence the finite-population factor): a Wilson bound for accuracy, whose error is a share of
wrong examples, and a seeded bootstrap for every other metric (F1, Matthews correlation, Spearman).
This is racing (Maron & Moore 1994, "Hoeffding races") over successive-halving's geometric budgets
(Jamieson & Talwalkar 2016); the front, not a fixed quota per share, decides who goes on.

The searcher is told the error of the largest share a sub-network was scored on. For a stopped one that
error is no lower than its optimistic bound, so the searcher, too, sees it dominated; the Pareto set and
its test metrics are built from fully scored sub-networks only (`results.is_full_fidelity`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from nas_llm.common.errors import UsageError
from nas_llm.data.data import LM_TASK, make_dataloader
from nas_llm.data.metrics import MAIN_METRIC, compute_task_metrics, task_error
from nas_llm.search.results import is_full_fidelity

if TYPE_CHECKING:  # annotations only
    import datasets
    from torch.utils.data import DataLoader
    from transformers import PreTrainedTokenizerBase

BOOTSTRAP_RESAMPLES = 200


@dataclass
class MultiFidelityArguments:
    multi_fidelity: bool = field(
        default=False,
        metadata={"help": "Score each sub-network on growing random shares of the validation split and stop one "
                  "that cannot reach the Pareto front (docs/benchmarks/multi-fidelity-search.md); by default "
                  "every sub-network is scored on the whole split."},
    )
    fidelity_shares: list[float] = field(
        default_factory=lambda: [0.1, 0.3],
        metadata={"help": "With --multi_fidelity True: the shares of the validation split scored before the whole "
                  "of it, increasing, each in (0, 1)."},
    )
    fidelity_z: float = field(
        default=2.0,
        metadata={"help": "With --multi_fidelity True: a sub-network goes on unless error - z * standard error "
                  "is dominated by a fully scored one (z = 2: one true front member in ~40 is stopped by chance)."},
    )

    def __post_init__(self) -> None:
        shares = self.fidelity_shares
        if not shares or any(not 0.0 < share < 1.0 for share in shares) or sorted(set(shares)) != list(shares):
            raise UsageError(f"--fidelity_shares must be increasing shares in (0, 1), got {' '.join(map(str, shares))}")
        if self.fidelity_z <= 0:
            raise UsageError(f"--fidelity_z must be positive, got {self.fidelity_z}")

    def settings(self) -> dict:
        """What a resumed run must repeat; nothing when off, so exact runs keep today's settings."""
        if not self.multi_fidelity:
            return {}
        return {"multi_fidelity": True, "fidelity_shares": list(self.fidelity_shares), "fidelity_z": self.fidelity_z}


def check_task(task_name: str | None) -> None:
    """Refuse language modelling, whose error is no mean over examples that a share could estimate."""
    if task_name == LM_TASK:
        raise UsageError("--multi_fidelity True needs per-example predictions; --task_name lm is scored as one "
                         "loss over its blocks, so search it with --multi_fidelity False")


def share_increments(num_examples: int, shares: list[float], seed: int) -> list[np.ndarray]:
    """The validation indices each share adds to the previous one, in a permutation seeded by `seed`.

    The last increment completes the split; shares too small to add an example are merged into the next.
    """
    sizes = sorted({max(1, round(share * num_examples)) for share in shares} - {num_examples}) + [num_examples]
    order = np.random.default_rng(seed).permutation(num_examples)
    return [np.sort(order[start:end]) for start, end in zip([0, *sizes[:-1]], sizes, strict=True)]


def optimistic_error(task_name: str, predictions: np.ndarray, labels: np.ndarray, num_examples: int, z: float,
                     rng: np.random.Generator) -> float:
    """A lower bound on the error over all `num_examples`, from the `len(labels)` of them scored so far.

    Accuracy: the Wilson score bound of the share of wrong examples (finite at 0% and 100% wrong, unlike the
    normal one). Other metrics: error - z * the bootstrap standard error. Both with the finite-population
    factor (N - n) / (N - 1) on the variance: the rest of the split, not an infinite population, is unknown.
    """
    scored = len(labels)
    finite_population = (num_examples - scored) / (num_examples - 1)
    if MAIN_METRIC[task_name] == "accuracy":
        wrong = float(np.mean(predictions != labels))
        effective = scored / finite_population
        centre = wrong + z * z / (2 * effective)
        spread = z * math.sqrt(wrong * (1 - wrong) / effective + z * z / (4 * effective * effective))
        return (centre - spread) / (1 + z * z / effective)
    error = task_error(task_name, compute_task_metrics(task_name, predictions, labels))
    return error - z * bootstrap_standard_error(task_name, predictions, labels, rng) * math.sqrt(finite_population)


def bootstrap_standard_error(task_name: str, predictions: np.ndarray, labels: np.ndarray,
                             rng: np.random.Generator) -> float:
    """The standard error of the task's error (equally: of its main metric) over these examples, from
    BOOTSTRAP_RESAMPLES resamples with replacement; for metrics that are no mean over examples."""
    resampled = rng.integers(0, len(labels), size=(BOOTSTRAP_RESAMPLES, len(labels)))
    errors = [task_error(task_name, compute_task_metrics(task_name, predictions[rows], labels[rows]))
              for rows in resampled]
    return float(np.std(errors, ddof=1))


def dominated(error: float, cost: float, front: np.ndarray) -> bool:
    """Whether a fully scored point of `front` [n, 2] (error, cost) is no worse than (error, cost) in both."""
    front = np.asarray(front, dtype=float).reshape(-1, 2)
    return bool(np.any((front[:, 0] <= error) & (front[:, 1] <= cost)))


def full_fidelity_front(records: list[dict], cost_name: str) -> np.ndarray:
    """(error, cost) of every fully scored evaluation so far: what a new sub-network has to beat."""
    return np.array([[record["error"], record[cost_name]] for record in records if is_full_fidelity(record)])


def race(
    task_name: str,
    predict_increment: Callable[[int], tuple[np.ndarray, np.ndarray]],
    num_increments: int,
    num_examples: int,
    cost: float,
    front: np.ndarray,
    z: float,
    rng: np.random.Generator,
) -> tuple[dict[str, float], dict]:
    """Score one sub-network increment by increment until it is dominated or scored on everything.

    `predict_increment(k)` gives (predictions, labels) on increment k. Returns the task's metrics plus
    `error` on the examples scored, and the record's fidelity fields: `fidelity` (the share scored) and
    `error_bounds` (the optimistic bound after each share short of the whole).
    """
    predictions, labels, bounds = [], [], []
    for increment in range(num_increments):
        increment_predictions, increment_labels = predict_increment(increment)
        predictions.append(increment_predictions)
        labels.append(increment_labels)
        scored_predictions, scored_labels = np.concatenate(predictions), np.concatenate(labels)
        if increment == num_increments - 1:
            break
        bounds.append(optimistic_error(task_name, scored_predictions, scored_labels, num_examples, z, rng))
        if dominated(bounds[-1], cost, front):
            break
    metrics = compute_task_metrics(task_name, scored_predictions, scored_labels)
    fidelity = len(scored_labels) / num_examples
    return metrics | {"error": task_error(task_name, metrics)}, {"fidelity": fidelity, "error_bounds": bounds}


class ValidationRace:
    """One search's shares of the validation split, over which each proposed sub-network is raced."""

    def __init__(self, args: MultiFidelityArguments, dataset: datasets.Dataset, tokenizer: PreTrainedTokenizerBase,
                 batch_size: int, task_name: str, cost_name: str, seed: int):
        self.task_name, self.cost_name, self.z, self.seed = task_name, cost_name, args.fidelity_z, seed
        self.num_examples = len(dataset)
        self.loaders = [  # length-sorted batches, as for the whole split
            make_dataloader(dataset.select(indices), tokenizer, batch_size, False, 0)
            for indices in share_increments(self.num_examples, args.fidelity_shares, seed)
        ]

    def score(self, predict_on: Callable[[DataLoader], tuple[np.ndarray, np.ndarray]], cost: float,
              records: list[dict], iteration: int) -> tuple[dict[str, float], dict]:
        """`race` against the fully scored `records`; the bootstrap is seeded by the iteration, so a resumed
        search scores the sub-network it was interrupted in exactly as the uninterrupted one did."""
        return race(
            self.task_name, lambda increment: predict_on(self.loaders[increment]), len(self.loaders),
            self.num_examples, cost, full_fidelity_front(records, self.cost_name), self.z,
            np.random.default_rng([self.seed, iteration]),
        )
