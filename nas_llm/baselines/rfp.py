"""Retraining-free pruning (Kwon et al. 2022): the flags, the Fisher-based mask search and mask rearrangement.

Kwon et al. prune a fine-tuned model in three steps, none of which trains it: (1) a mask search that
keeps, under a cost constraint, the heads and neurons whose removal costs the least loss, estimated by
the Fisher information of their masks (importance.py); (2) mask rearrangement: per layer, the same number
of units, re-chosen with the layer's full Fisher block; (3) least-squares tuning of the kept units' masks
(lstsq.py).

Also what run_rfp.py runs around them: the calibration batches, the settings a resumed run must match, the
budgets an interrupted run finished, and the results record.

The mask search is their Algorithm 1 with the diagonal Fisher: for every number h of head units kept
(over all layers), keep the h most important head units and fill what the constraint leaves with the most
important neurons; of these candidates, keep the one that retains the most Fisher importance. The cost
of a sub-network is linear in its units (`UnitCosts`, measured on the unpruned model), except that a
block losing all its units also drops its biases and norms, so the true cost is at most the estimate.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import torch
from torch import nn
from torch.utils.data import DataLoader

from nas_llm.common.arguments import CostArguments, check_choice, check_positive
from nas_llm.common.errors import UsageError
from nas_llm.common.io_utils import JsonLinesLog
from nas_llm.data.data import DataArguments, absolute_data_flags
from nas_llm.extraction.extract import extract_sub_network, save_extracted
from nas_llm.extraction.lstsq import calibration_batches, tuned_extraction, unpruned_streams
from nas_llm.model.cost import CostMeter, count_macs, count_parameters
from nas_llm.model.families import family_for
from nas_llm.model.label_scale import label_scale_of, standardised
from nas_llm.model.slicing import sliced
from nas_llm.model.sub_network import SubNetwork
from nas_llm.search.results import RFP_METHOD, pareto_front, previous_evaluations
from nas_llm.training.evaluation import evaluate
from nas_llm.training.importance import MaskGradients, UnitImportance, mask_gradients

logger = logging.getLogger(__name__)

CONSTRAINTS = ("params", "flops")


@dataclass
class RFPArguments:
    checkpoint_dir_model: str = field(
        metadata={"help": "The fine-tuned model to prune: an --output_dir of train_supernet.py (e.g. "
                  "--sampling_strategy standard)."}
    )
    budgets: str = field(
        default="0.4,0.5,0.6,0.7,0.8,0.9",
        metadata={"help": "Comma-separated cost budgets, one pruned model each, relative to the unpruned model "
                  "(see --constraint)."},
    )
    constraint: str = field(
        default="params",
        metadata={"help": "What the budgets limit: params (the transformer layers' parameters, as in Kwon et al.: "
                  "embeddings and classifier stay whole) or flops (MACs of the whole model at --cost_seq_len)."},
    )
    num_calibration_samples: int = field(
        default=2048, metadata={"help": "Training examples for the Fisher information and the least-squares tuning."}
    )
    calibration_batch_size: int = field(default=32, metadata={"help": "Batch size of the calibration passes."})
    rearrange_masks: bool = field(
        default=True,
        metadata={"help": "Mask rearrangement after the search: per layer, the same number of heads and neurons, "
                  "re-chosen with the layer's full Fisher block (False: the searched masks as they are)."},
    )
    tune_masks: bool = field(
        default=True, metadata={"help": "Least-squares mask tuning after the mask search (False: search only)."}
    )
    per_device_eval_batch_size: int = field(default=32, metadata={"help": "Evaluation batch size."})
    output_dir: str = field(
        default="./results_rfp",
        metadata={"help": "Where results_<task>.json and one pruned checkpoint per budget (budget-<b>/) go."},
    )
    seed: int = field(default=42, metadata={"help": "Seed of the calibration subset."})
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Start afresh even if --output_dir holds an interrupted run (by default its finished "
                  "budgets are kept when its settings match)."},
    )

    def __post_init__(self) -> None:
        check_choice("constraint", self.constraint, CONSTRAINTS)
        check_positive(self, "num_calibration_samples", "calibration_batch_size", "per_device_eval_batch_size")
        try:
            self.budget_list = sorted({float(value) for value in self.budgets.split(",")})
        except ValueError:
            raise UsageError(
                f"--budgets must be comma-separated numbers such as 0.5,0.7, got '{self.budgets}'"
            ) from None
        if not all(0 < budget <= 1 for budget in self.budget_list):
            raise UsageError(f"every --budgets value must lie in (0, 1], got {self.budgets}")


@dataclass(frozen=True)
class UnitCosts:
    """Cost of a sub-network ~= fixed + head_unit * head units kept + neuron * neurons kept (an upper bound)."""

    full: float
    fixed: float
    head_unit: float
    neuron: float

    @classmethod
    def measure(cls, model: nn.Module, constraint: str, seq_len: int) -> UnitCosts:
        family = family_for(model)
        config = model.config
        full = SubNetwork.full(family.num_layers(config), family.num_head_units(config),
                               family.intermediate_size(config))

        def cost(sub_network: SubNetwork) -> float:
            if constraint == "flops":
                return float(count_macs(model, sub_network, seq_len))
            return float(count_parameters(model, sub_network).layers)

        without_head, without_neuron = SubNetwork(full.head_mask.clone(), full.ffn_mask), \
            SubNetwork(full.head_mask, full.ffn_mask.clone())
        without_head.head_mask[0, 0] = False
        without_neuron.ffn_mask[0, 0] = False
        total = cost(full)
        head_unit, neuron = total - cost(without_head), total - cost(without_neuron)
        fixed = total - head_unit * full.head_mask.numel() - neuron * full.ffn_mask.numel()
        return cls(total, fixed, head_unit, neuron)


def search_mask(importance: UnitImportance, costs: UnitCosts, budget: float) -> SubNetwork:
    """The sub-network within `budget` x the unpruned cost that keeps the most Fisher importance (Algorithm 1)."""
    head_scores, head_order = importance.heads.flatten().sort(descending=True, stable=True)
    neuron_scores, neuron_order = importance.neurons.flatten().sort(descending=True, stable=True)
    head_cumulative = torch.cat([torch.zeros(1), head_scores.double().cumsum(0)])
    neuron_cumulative = torch.cat([torch.zeros(1), neuron_scores.double().cumsum(0)])
    allowed = budget * costs.full - costs.fixed
    best = None
    for heads in range(len(head_order) + 1):
        room = allowed - heads * costs.head_unit
        if room < 0:
            break
        neurons = min(int(room // costs.neuron), len(neuron_order))
        retained = float(head_cumulative[heads] + neuron_cumulative[neurons])
        if best is None or retained > best[0]:
            best = (retained, heads, neurons)
    if best is None:
        raise UsageError(
            f"budget {budget} is below what the model costs with no head and no neuron "
            f"({max(costs.fixed, 0) / costs.full:.3f} of it); raise --budgets"
        )
    _, heads, neurons = best
    head_mask = torch.zeros(importance.heads.numel(), dtype=torch.bool)
    ffn_mask = torch.zeros(importance.neurons.numel(), dtype=torch.bool)
    head_mask[head_order[:heads]] = True
    ffn_mask[neuron_order[:neurons]] = True
    return SubNetwork(head_mask.reshape(importance.heads.shape), ffn_mask.reshape(importance.neurons.shape))


def layer_fisher(gradients: torch.Tensor) -> torch.Tensor:
    """F = sum over batches of g g^T: the empirical Fisher block of one layer's masks, from [batches, units]."""
    gradients = gradients.double()
    return gradients.T @ gradients


def rearrange_layer(fisher: torch.Tensor, num_kept: int) -> torch.Tensor:
    """Which `num_kept` units to keep so that (1 - m)^T F (1 - m), the loss increase estimate, is small.

    Kwon et al.'s greedy pass: start from dropping the units of least diagonal Fisher (the search's choice),
    then visit the others by increasing diagonal, dropping each in turn and taking back whichever dropped unit
    leaves the smallest cost. Taking back the unit just dropped is one option, so the cost never exceeds the
    diagonal choice's; it is not always the optimum (two units that cancel only when dropped together stay).
    """
    num_units = len(fisher)
    if num_kept in (0, num_units):
        return torch.full((num_units,), num_kept > 0)
    diagonal = fisher.diagonal()
    order = torch.argsort(diagonal, stable=True).tolist()
    num_dropped = num_units - num_kept
    dropped = order[:num_dropped]
    row_sums = fisher[:, dropped].sum(dim=1)  # F (1 - m): cost(dropped without j) = cost - 2 row_sums[j] + F[j, j]
    for unit in order[num_dropped:]:
        dropped.append(unit)
        row_sums += fisher[:, unit]
        candidates = torch.tensor(dropped)
        taken_back = dropped.pop(int(torch.argmin(diagonal[candidates] - 2 * row_sums[candidates])))
        row_sums -= fisher[:, taken_back]
    keep = torch.ones(num_units, dtype=torch.bool)
    keep[dropped] = False
    return keep


def rearrange_masks(sub_network: SubNetwork, gradients: MaskGradients) -> SubNetwork:
    """`sub_network` with each layer's heads and neurons re-chosen by `rearrange_layer` (counts, so costs, kept).

    `gradients` holds one mask gradient per calibration batch (importance.py), as the authors collect them: the
    Fisher block is then a sum over batches, of rank at most the number of batches.
    """
    def rearranged(unit_mask: torch.Tensor, unit_gradients: torch.Tensor) -> torch.Tensor:
        return torch.stack([
            rearrange_layer(layer_fisher(unit_gradients[:, layer]), int(kept.sum()))
            for layer, kept in enumerate(unit_mask)
        ])

    return SubNetwork(rearranged(sub_network.head_mask, gradients.heads),
                      rearranged(sub_network.ffn_mask, gradients.neurons))


@dataclass
class BudgetPruner:
    """Prunes the fine-tuned model to one budget at a time: mask search, rearrangement, least-squares tuning.

    `score(model, split, sub_network)` evaluates a model (as that sub-network, if given). The unpruned
    model's layer outputs that every budget's tuning matches are computed once, when first needed.
    """

    args: RFPArguments
    model: nn.Module
    tokenizer: Any
    batches: list[dict[str, torch.Tensor]]
    gradients: MaskGradients
    importance: UnitImportance
    unit_costs: UnitCosts
    cost_meter: CostMeter
    score: Callable[..., dict[str, float]]
    output_dir: Path
    targets: Any = None

    def prune(self, budget: float, start_time: float) -> dict[str, Any]:
        """One budget's pruned model, written to budget-<b>/ under the output folder; returns its record."""
        budget_start = time.time()
        sub_network = search_mask(self.importance, self.unit_costs, budget)
        if self.args.rearrange_masks:
            sub_network = rearrange_masks(sub_network, self.gradients)
        error_before_tuning = self.score(self.model, "validation", sub_network)["error"]
        if self.args.tune_masks:
            self.targets = unpruned_streams(self.model, self.batches) if self.targets is None else self.targets
            pruned, _ = tuned_extraction(self.model, sub_network, self.batches, self.targets)
        else:
            pruned = extract_sub_network(self.model, sub_network)
        costs = self.cost_meter.measure(sub_network, with_latency=True)
        validation = self.score(pruned, "validation")
        checkpoint_dir = (self.output_dir / f"budget-{budget:g}").resolve()
        save_extracted(pruned, self.tokenizer, sub_network, checkpoint_dir)
        return {
            "budget": budget,
            "constraint": self.args.constraint,
            "error": validation["error"],
            "error_before_tuning": error_before_tuning,
            "validation": validation,
            **self.cost_meter.relative(costs),
            "layer_params": costs["num_layer_parameters"] / self.cost_meter.unpruned["num_layer_parameters"],
            **costs,
            "test": self.score(pruned, "test"),
            "sub_network": sub_network.to_json_dict(),
            "trial_checkpoint_dir": str(checkpoint_dir),  # select_and_extract.py copies these tuned weights
            "runtime_s": time.time() - budget_start,
            "elapsed_s": time.time() - start_time,
        }

    def prune_and_log(self, budget: float, start_time: float, log: JsonLinesLog) -> dict[str, Any]:
        """One budget's record, logged once its checkpoint is written (a stopped run resumes after it)."""
        record = self.prune(budget, start_time)
        log.append(record)
        logger.info("budget %g: validation error %.4f (%.4f before tuning), %s %.3f", budget, record["error"],
                    record["error_before_tuning"], self.args.constraint, record[self.args.constraint])
        return record


@dataclass
class ModelScorer:
    """Scores a model, or a sub-network of one (sliced), on the validation or test split."""

    loaders: dict[str, DataLoader]
    metrics_key: str
    device: torch.device

    def score(self, scored: nn.Module, split: str, sub_network: SubNetwork | None = None) -> dict[str, float]:
        return evaluate(scored.to(self.device), self.loaders[split], self.metrics_key, self.device, sub_network,
                        sliced if sub_network else None)


def run_settings(rfp_args: RFPArguments, data_args: DataArguments, cost_args: CostArguments) -> dict:
    """What must match for the budgets logged in --output_dir to be kept (the budget list may change)."""
    return {
        "checkpoint_dir_model": str(Path(rfp_args.checkpoint_dir_model).resolve()),
        "constraint": rfp_args.constraint,
        "num_calibration_samples": rfp_args.num_calibration_samples,
        "calibration_batch_size": rfp_args.calibration_batch_size,
        "rearrange_masks": rfp_args.rearrange_masks,
        "tune_masks": rfp_args.tune_masks,
        "seed": rfp_args.seed,
        "data": absolute_data_flags(data_args),
        "cost_seq_len": cost_args.cost_seq_len,
        "latency_batch_size": cost_args.latency_batch_size,
    }


def calibration_data(
    model: nn.Module, train_split: datasets.Dataset, tokenizer, args: RFPArguments
) -> list[dict[str, torch.Tensor]]:
    """The --num_calibration_samples training examples the Fisher scores and the mask tuning use, in batches.

    Regression: the fine-tuned model outputs standardised labels, so its loss (the Fisher scores) needs them too.
    """
    return [
        standardised(batch, label_scale_of(model.config))
        for batch in calibration_batches(train_split, tokenizer, args.num_calibration_samples,
                                         args.calibration_batch_size, args.seed)
    ]


def make_pruner(
    args: RFPArguments, cost_args: CostArguments, model: nn.Module, tokenizer, batches: list[dict[str, torch.Tensor]],
    score: Callable[..., dict[str, float]],
) -> BudgetPruner:
    """The pruner of `model`: the Fisher scores of its masks on `batches` and the costs of its units, measured once."""
    gradients = mask_gradients(model, batches)  # one row per calibration batch, for the Fisher blocks
    importance = UnitImportance.from_gradients(gradients)
    unit_costs = UnitCosts.measure(model, args.constraint, cost_args.cost_seq_len)
    full = SubNetwork.full(*importance.heads.shape, importance.neurons.shape[1])
    cost_meter = CostMeter(model, sliced, cost_args, full)
    return BudgetPruner(args, model, tokenizer, batches, gradients, importance, unit_costs, cost_meter, score,
                        Path(args.output_dir))


def finished_budgets(
    output_dir: Path, settings: dict, overwrite: bool
) -> tuple[JsonLinesLog, dict[float, dict], float]:
    """The evaluations log, the records of the budgets an earlier run with the same `settings` finished, by
    budget, and the seconds that run had taken (0 for a fresh start)."""
    log, logged = previous_evaluations(output_dir, settings, overwrite)
    finished = {record["budget"]: record for record in logged}
    if logged:
        logger.info("Resumed budgets %s from %s", ", ".join(f"{budget:g}" for budget in finished), log.path)
    return log, finished, max((record["elapsed_s"] for record in logged), default=0.0)


def rfp_results(
    args: RFPArguments, data_args: DataArguments, cost_args: CostArguments, nas_settings: dict,
    evaluations: list[dict], pruner: BudgetPruner, device: torch.device, start_time: float,
) -> dict[str, Any]:
    """The results file (schema: results.py); every budget's model is a point of the set, marked if dominated."""
    non_dominated = set(pareto_front(evaluations, ["error", "params"]))
    # Every budget's model is the method's answer for that budget; plot_pareto.py draws the front from evaluations.
    pareto_set = [record | {"dominated": index not in non_dominated} for index, record in enumerate(evaluations)]
    return {
        "task_name": data_args.task_name,
        "model_name_or_path": nas_settings.get("model_name_or_path"),
        "checkpoint_dir_model": None,  # every point carries its own tuned checkpoint
        "method": RFP_METHOD,
        "sampling_strategy": nas_settings.get("sampling_strategy"),
        "fine_tuned_checkpoint": str(Path(args.checkpoint_dir_model).resolve()),
        "search_space": "large",
        "search_strategy": "fisher_mask_search" + ("+rearrangement" if args.rearrange_masks else "")
        + ("+lstsq" if args.tune_masks else ""),
        "rearrange_masks": args.rearrange_masks,
        "tune_masks": args.tune_masks,
        "seed": args.seed,
        "num_samples": len(evaluations),
        "num_calibration_samples": sum(len(batch["labels"]) for batch in pruner.batches),
        "objectives": ["error", "params"],
        "cost_seq_len": cost_args.cost_seq_len,
        "latency_batch_size": cost_args.latency_batch_size,
        "device": str(device),
        "settings": {"data": absolute_data_flags(data_args)},  # select_and_extract.py's default data flags
        "unpruned": pruner.cost_meter.unpruned | {
            "validation": pruner.score(pruner.model, "validation"), "test": pruner.score(pruner.model, "test"),
        },
        "evaluations": [
            record | {"sub_network": SubNetwork.from_json_dict(record["sub_network"]).summary()}
            for record in evaluations
        ],
        "pareto_indices": sorted(non_dominated),
        "pareto_set": pareto_set,
        "runtime_s": time.time() - start_time,
    }
