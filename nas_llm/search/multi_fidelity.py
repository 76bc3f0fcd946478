"""Multi-fidelity evaluation for the offline search: score a sub-network on growing shares of the validation
split, and stop as soon as it can no longer reach the Pareto front.

The validation examples are shuffled once (seeded by the search's --seed) and cut into nested shares, e.g.
the first 10%, the first 30%, all of them. Each sub-network is scored on the first share; after every share
short of the whole split, it is compared, on the same examples, with each member of the front of the fully
scored sub-networks that costs no more: if, for one of them, the lower confidence bound of (the proposal's
error - the member's error) is above 0, the proposal is worse with confidence than a sub-network that costs
no more, no rest of the split can plausibly put it on the front, and it stops there. The examples of a share
are scored once: going on to the next share scores only the examples it adds.

The comparison is paired: the two sub-networks' errors on the same examples move together (both get the easy
examples right), so their difference has a far smaller spread than either error. The bound is that of the
difference on the whole split from the examples scored (sampling without replacement, hence the
finite-population factor): the mean and standard error of the per-example differences of wrongness for
accuracy, a paired bootstrap (the same resampled examples for both) for every other metric (F1, Matthews
correlation, Spearman). Two sub-networks that agree on every example scored have a bound of exactly 0 and are
not told apart: they may disagree on the rest. This is racing (Maron & Moore 1994, "Hoeffding races") with
paired comparisons (Moore & Lee 1994, "Efficient algorithms for minimizing cross validation error") over
successive halving's geometric budgets (Jamieson & Talwalkar 2016); the front, not a fixed quota per share,
decides who goes on. A proposal that is the same sub-network as a fully scored one is not scored again.

The front members' predictions on the whole split are kept in their records (`validation_predictions`), so a
resumed search compares with exactly what the uninterrupted one did. The searcher is told the error of a fully
scored sub-network; for a stopped one, the paired estimate of its error on the whole split: the error of the
member that stopped it plus their difference on the examples scored, above the member's error, so the
searcher, too, sees it dominated. The Pareto set and its test metrics are built from fully scored sub-networks
only (`results.is_full_fidelity`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from nas_llm.common.errors import UsageError
from nas_llm.data.data import LM_TASK, make_dataloader
from nas_llm.data.metrics import MAIN_METRIC, compute_task_metrics, metrics_with_error, resampled_errors
from nas_llm.search.pareto import pareto_indices
from nas_llm.search.results import is_full_fidelity

if TYPE_CHECKING:  # annotations only
    import datasets
    from torch.utils.data import DataLoader
    from transformers import PreTrainedTokenizerBase

BOOTSTRAP_RESAMPLES = 200
MIN_INCREMENT_BATCH = 8
RULE = "paired"  # in the settings: a run raced by the earlier, unpaired rule is not resumed with this one


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
        metadata={"help": "With --multi_fidelity True: a sub-network stops once its error minus a front member's, "
                  "on the same examples, is above 0 after subtracting z standard errors (z = 2: about one "
                  "comparison in 40 with a member no better stops it by chance)."},
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
        return {"multi_fidelity": True, "fidelity_shares": list(self.fidelity_shares), "fidelity_z": self.fidelity_z,
                "fidelity_rule": RULE}


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


def increment_batch_size(batch_size: int, increment_size: int, num_examples: int) -> int:
    """The batch size that cuts an increment into about as many length-sorted batches as the whole split has.

    A batch is padded to its longest example; an increment's examples span the whole split's lengths, so in
    batches of the search's size each would mix longer and shorter examples than the split's batches do (the
    quickstart's three increments padded to 1.33x the tokens of one pass over the split). Batches no smaller
    than MIN_INCREMENT_BATCH (or the search's batch size, if smaller) keep the per-call overhead low."""
    scaled = round(batch_size * increment_size / num_examples)
    return max(scaled, min(batch_size, MIN_INCREMENT_BATCH))


def increment_loader(increment: datasets.Dataset, tokenizer: PreTrainedTokenizerBase, batch_size: int,
                     num_examples: int, least_padding: bool) -> DataLoader:
    """An increment's length-sorted batches: in about as many as the whole split of `num_examples` has
    (`increment_batch_size`), or, with `least_padding`, cut where its own padding is least."""
    if least_padding:
        return make_dataloader(increment, tokenizer, batch_size, False, 0, least_padding=True)
    return make_dataloader(increment, tokenizer, increment_batch_size(batch_size, len(increment), num_examples),
                           False, 0)


@dataclass(frozen=True)
class FrontMember:
    """A fully scored sub-network on the front: its error and cost, and its predictions on the whole split in
    the order the race scores the examples (share by share)."""

    iteration: int
    error: float
    cost: float
    predictions: np.ndarray


def paired_error_difference(task_name: str, predictions: np.ndarray, other_predictions: np.ndarray,
                            labels: np.ndarray, rng: np.random.Generator, metric: str | None = None,
                            ) -> tuple[float, float]:
    """How much higher the error (1 - `metric`, by default the task's main metric) of `predictions` is than that of
    `other_predictions` on the same examples, and the standard error of that difference over the examples.

    Accuracy: the standard error of the mean of the per-example differences of wrongness (each -1, 0 or 1).
    Other metrics: the standard deviation of the difference over BOOTSTRAP_RESAMPLES paired resamples (the same
    resampled examples for both). Equal predictions give exactly (0, 0).
    """
    metric = metric or MAIN_METRIC[task_name]
    if metric == "accuracy":
        differences = (predictions != labels).astype(float) - (other_predictions != labels)
        return float(np.mean(differences)), float(np.std(differences, ddof=1)) / math.sqrt(len(labels))
    rows = rng.integers(0, len(labels), size=(BOOTSTRAP_RESAMPLES, len(labels)))
    standard_error = float(np.std(resampled_errors(task_name, predictions, labels, rows, metric)
                                  - resampled_errors(task_name, other_predictions, labels, rows, metric), ddof=1))
    metrics, other_metrics = (compute_task_metrics(task_name, scored, labels)
                              for scored in (predictions, other_predictions))
    return other_metrics[metric] - metrics[metric], standard_error


def excess_error_bound(task_name: str, predictions: np.ndarray, member_predictions: np.ndarray, labels: np.ndarray,
                       num_examples: int, z: float, rng: np.random.Generator) -> float:
    """A lower bound on how much higher the proposal's error over all `num_examples` is than a member's, from the
    `len(labels)` examples both were scored on: their difference there minus z standard errors of it
    (paired_error_difference), with the finite-population factor (N - n) / (N - 1) on the variance: the rest of
    the split, not an infinite population, is unknown. Equal predictions give exactly 0: nothing tells them apart.
    """
    finite_population = (num_examples - len(labels)) / (num_examples - 1)
    difference, standard_error = paired_error_difference(task_name, predictions, member_predictions, labels, rng)
    return difference - z * standard_error * math.sqrt(finite_population)


def race(
    task_name: str,
    predict_increment: Callable[[int], tuple[np.ndarray, np.ndarray]],
    num_increments: int,
    num_examples: int,
    front: list[FrontMember],
    z: float,
    rng: np.random.Generator,
) -> tuple[dict[str, float], dict]:
    """Score one sub-network increment by increment until one of `front` (the members that cost no more than it)
    is better with confidence, or it is scored on everything.

    `predict_increment(k)` gives (predictions, labels) on increment k. Returns the task's metrics plus `error`
    on the examples scored, and the record's fidelity fields: `fidelity` (the share scored), `excess_error_bounds`
    (after each share short of the whole, the largest bound over `front`; None without members); fully scored:
    `validation_predictions`; stopped: `stopped_by` (the member's iteration) and `error`, the paired estimate
    of the error on the whole split that the searcher is told.
    """
    predictions, labels, bounds = [], [], []
    for increment in range(num_increments):
        increment_predictions, increment_labels = predict_increment(increment)
        predictions.append(increment_predictions)
        labels.append(increment_labels)
        scored_predictions, scored_labels = np.concatenate(predictions), np.concatenate(labels)
        if increment == num_increments - 1:
            break
        scored = len(scored_labels)
        member_bounds = [excess_error_bound(task_name, scored_predictions, member.predictions[:scored], scored_labels,
                                            num_examples, z, rng) for member in front]
        bounds.append(max(member_bounds, default=None))
        if member_bounds and bounds[-1] > 0:
            break
    metrics = metrics_with_error(task_name, scored_predictions, scored_labels)
    fields = {"fidelity": len(scored_labels) / num_examples, "excess_error_bounds": bounds}
    if fields["fidelity"] == 1.0:
        return metrics, fields | {"validation_predictions": scored_predictions.tolist()}
    member = front[int(np.argmax(member_bounds))]
    member_error = metrics_with_error(task_name, member.predictions[:len(scored_labels)], scored_labels)["error"]
    return metrics, fields | {"stopped_by": member.iteration, "error": member.error + (metrics["error"] - member_error)}


def front_members(records: list[dict], cost_name: str, cost: float) -> list[FrontMember]:
    """The front of the fully scored `records` that costs no more than `cost`: what a proposal has to beat."""
    full = [record for record in records if is_full_fidelity(record)]
    front = [full[index] for index in pareto_indices(np.array([[r["error"], r[cost_name]] for r in full]))]
    return [FrontMember(record["iteration"], record["error"], record[cost_name],
                        np.asarray(record["validation_predictions"]))
            for record in front if record[cost_name] <= cost]


class ValidationRace:
    """One search's shares of the validation split, over which each proposed sub-network is raced."""

    def __init__(self, args: MultiFidelityArguments, dataset: datasets.Dataset, tokenizer: PreTrainedTokenizerBase,
                 batch_size: int, task_name: str, cost_name: str, seed: int, least_padding: bool = False):
        self.task_name, self.cost_name, self.z, self.seed = task_name, cost_name, args.fidelity_z, seed
        self.num_examples = len(dataset)
        self.increments = share_increments(self.num_examples, args.fidelity_shares, seed)  # validation indices
        self.loaders = [
            increment_loader(dataset.select(indices), tokenizer, batch_size, self.num_examples, least_padding)
            for indices in self.increments
        ]

    def score(self, predict_on: Callable[[DataLoader], tuple[np.ndarray, np.ndarray]], masks: dict, cost: float,
              records: list[dict], iteration: int) -> tuple[dict[str, float], dict]:
        """`race` against the front of the fully scored `records` (whose predictions they keep, so a resumed
        search compares with what the uninterrupted one did); the bootstrap is seeded by the iteration, so a
        resumed search scores the sub-network it was interrupted in exactly as the uninterrupted one did.

        A sub-network (`masks`, as `SubNetwork.to_compact`) scored fully before is not scored again: scoring is
        deterministic, so it gets that record's metrics and predictions (local search proposes many again)."""
        same = next((record for record in records
                     if is_full_fidelity(record) and record["sub_network_masks"] == masks), None)
        if same is not None:
            return same["validation"], {"fidelity": 1.0, "excess_error_bounds": [], "same_as": same["iteration"],
                                        "validation_predictions": same["validation_predictions"]}
        return race(
            self.task_name, lambda increment: predict_on(self.loaders[increment]), len(self.loaders),
            self.num_examples, front_members(records, self.cost_name, cost), self.z,
            np.random.default_rng([self.seed, iteration]),
        )
