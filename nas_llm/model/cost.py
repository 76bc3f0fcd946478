"""What a sub-network costs: parameters, multiply-accumulates, latency and weight memory.

Parameter counts follow the family table exactly (every sliced row/column, every block-level bias
and layer norm), so the count equals the size of the extracted model. `total` includes embeddings
and the classification head, which every sub-network keeps; `layers` counts only the transformer
layers (the encoder, for BERT-style models).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch
from torch import nn

from nas_llm.common.errors import UsageError
from nas_llm.data.multiple_choice import is_multiple_choice, sequences_per_example
from nas_llm.model.families import family_for, layer_parameters, layers_of
from nas_llm.model.sub_network import SubNetwork, keeps_param, kept_index


@dataclass(frozen=True)
class ParameterCount:
    total: int
    layers: int


def count_parameters(model: nn.Module, sub_network: SubNetwork) -> ParameterCount:
    """Parameters of `model` restricted to `sub_network`."""
    family = family_for(model)
    layers = layers_of(model)
    all_params = sum(p.numel() for p in model.parameters())
    all_layer_params = sum(p.numel() for p in layers.parameters())
    kept_layer_params = 0
    for layer_index, layer in enumerate(layers):
        for param, tensor in layer_parameters(model, layer):
            if not keeps_param(sub_network, layer_index, param.axis):
                continue
            index = kept_index(family, model.config, sub_network, layer_index, param.axis)
            if index is None:
                kept_layer_params += tensor.numel()
            else:
                kept_layer_params += tensor.numel() // tensor.shape[param.dim] * len(index)
    return ParameterCount(total=all_params - all_layer_params + kept_layer_params, layers=kept_layer_params)


def count_macs(model: nn.Module, sub_network: SubNetwork, seq_len: int) -> int:
    """Multiply-accumulates of one forward pass over one example of `seq_len` tokens (analytical): one sequence,
    or one per choice for a multiple-choice model.

    Per token, every kept weight matrix of a layer costs its number of entries, and attention adds
    2 * seq_len * (query heads * head_dim) for the scores and the weighted sum of values; the family's
    `per_token_modules` (ELECTRA's embedding projection) also cost their matrices per token. The
    classification head (the other non-embedding matrices outside the layers) counts once per sequence for
    encoders (pooler and classifier see the first token) and per token for decoders (HF scores every
    token, then picks the last); a causal LM's head counts per token, also when it shares its weights
    with the input embeddings. Embedding lookups, norms, biases and softmax are not counted.
    FLOPs = 2 * MACs.
    """
    family = family_for(model)
    layers = layers_of(model)
    head_dim = family.head_dim(model.config)
    per_unit = family.query_heads_per_unit(model.config)
    layer_macs_per_token = 0
    for layer_index, layer in enumerate(layers):
        for param, tensor in layer_parameters(model, layer):
            if tensor.dim() < 2 or not keeps_param(sub_network, layer_index, param.axis):
                continue
            index = kept_index(family, model.config, sub_network, layer_index, param.axis)
            layer_macs_per_token += tensor.numel() // tensor.shape[param.dim] * len(index)
        if sub_network.keeps_attention(layer_index):
            query_width = int(sub_network.head_mask[layer_index].sum()) * per_unit * head_dim
            layer_macs_per_token += 2 * seq_len * query_width
    modules = dict(model.base_model.named_modules())
    per_token_params = [
        p for path in family.per_token_modules if path in modules for p in modules[path].parameters() if p.dim() == 2
    ]
    counted_ids = {id(p) for p in layers.parameters()} | {id(p) for p in per_token_params}
    embedding_param_ids = {
        id(p) for module in model.modules() if isinstance(module, nn.Embedding) for p in module.parameters()
    }
    head_macs = sum(
        p.numel() for p in model.parameters()
        if p.dim() == 2 and id(p) not in counted_ids and id(p) not in embedding_param_ids
    )
    lm_head = model.get_output_embeddings()
    if lm_head is not None and id(lm_head.weight) in embedding_param_ids:
        head_macs += lm_head.weight.numel()  # tied to the input embeddings, yet it multiplies every token
    per_token_macs = layer_macs_per_token + sum(p.numel() for p in per_token_params)
    sequence_macs = seq_len * per_token_macs + head_macs * (seq_len if family.decoder else 1)
    return sequence_macs * sequences_per_example(model)


@dataclass(frozen=True)
class Latency:
    median_ms: float
    iqr_ms: float  # interquartile range: the spread of the timed passes around the median


@torch.no_grad()
def measure_latency(
    model: nn.Module,
    sub_network: SubNetwork,
    run_as,
    batch_size: int,
    seq_len: int,
    repeats: int = 20,
    warmup: int = 3,
) -> Latency:
    """Wall-clock time of one forward pass of a batch of random token ids: median and IQR over `repeats` passes.

    A batch is `batch_size` examples of `seq_len` tokens (multiple choice: each one sequence per choice).

    The first `warmup` passes (allocations, kernel selection) are not timed. The median ignores passes
    slowed down by other processes as long as they are fewer than half. Runs on the model's device
    (synchronising CUDA around each pass), so it measures what the sub-network costs where the search
    runs; `run_as` is `slicing.sliced` for the sub-network's own cost.
    """
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(0)
    shape = (batch_size, sequences_per_example(model), seq_len) if is_multiple_choice(model) else (batch_size, seq_len)
    input_ids = torch.randint(0, model.config.vocab_size, shape, generator=generator).to(device)
    was_training = model.training
    model.eval()
    timings_ms = []
    with run_as(model, sub_network):
        for run in range(warmup + repeats):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            model(input_ids=input_ids)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if run >= warmup:
                timings_ms.append(1000 * (time.perf_counter() - start))
    model.train(was_training)
    if len(timings_ms) == 1:
        return Latency(timings_ms[0], 0.0)
    first_quartile, _, third_quartile = statistics.quantiles(timings_ms, n=4)
    return Latency(statistics.median(timings_ms), third_quartile - first_quartile)


def parameter_bytes(model: nn.Module, sub_network: SubNetwork) -> int:
    """Memory the sub-network's weights take in the model's dtype."""
    return count_parameters(model, sub_network).total * next(model.parameters()).element_size()


def check_cost_seq_len(cost_args, model_config) -> None:
    """MACs and latency are measured at --cost_seq_len tokens: the model must have that many positions."""
    max_positions = getattr(model_config, "max_position_embeddings", None)
    if max_positions is not None and cost_args.cost_seq_len > max_positions:
        raise UsageError(f"--cost_seq_len {cost_args.cost_seq_len} exceeds the model's {max_positions} positions")


class CostMeter:
    """A sub-network's costs, absolute and relative to the unpruned network (`cost_args`: arguments.CostArguments)."""

    def __init__(self, model: nn.Module, run_as, cost_args, largest: SubNetwork):
        self.model, self.run_as, self.args = model, run_as, cost_args
        self.unpruned = self.measure(largest, with_latency=True)

    def measure(self, sub_network: SubNetwork, with_latency: bool) -> dict[str, float]:
        params = count_parameters(self.model, sub_network)
        costs = {
            "num_parameters": params.total,
            "num_layer_parameters": params.layers,
            "macs": count_macs(self.model, sub_network, self.args.cost_seq_len),
            "memory_mb": parameter_bytes(self.model, sub_network) / 2**20,
        }
        if with_latency:
            latency = measure_latency(
                self.model, sub_network, self.run_as, self.args.latency_batch_size, self.args.cost_seq_len,
                self.args.latency_repeats,
            )
            costs |= {"latency_ms": latency.median_ms, "latency_iqr_ms": latency.iqr_ms}
        return costs

    def relative(self, costs: dict[str, float]) -> dict[str, float]:
        relative = {
            "params": costs["num_parameters"] / self.unpruned["num_parameters"],
            "flops": costs["macs"] / self.unpruned["macs"],
            "memory": costs["memory_mb"] / self.unpruned["memory_mb"],
        }
        if "latency_ms" in costs:
            relative["latency"] = costs["latency_ms"] / self.unpruned["latency_ms"]
        return relative
