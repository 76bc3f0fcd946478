"""Search spaces: Syne Tune config spaces whose configs map to sub-networks.

Every space exposes the same things: `config_space` (for the searchers), `sample(rng)` (the
seeded sampler that super-network training uses), `smallest()` and `largest()` (for the sandwich
rule), `mid()` (about half of the layers' parameters), `initial_design()` (the configs every search
evaluates first) and `to_sub_network(config)` / `to_config(sub_network)`.

- small: one (num_layers, num_heads, num_units) shared by all kept layers; the first
  `num_layers` layers (0 to all, as in the original), the first heads and neurons of each are kept.
- smallpower2: like small, with num_heads one of H / 2^i (1, 3, 6, 12 for H = 12), as in the original.
- medium: per layer a number of heads and of neurons (prefixes; 0 removes the block).
- layer: per layer, keep or drop the whole layer (the original's `layer` space).
- layer_block: per layer, keep or drop the attention block and the FFN block separately.
- large (alias uniform): one bit per head unit and per neuron.
- importance: depth plus one share for heads and one for neurons, applied as RFP does (unit_ranking.py): the most
  important layers are kept, and within them the most important units of all kept layers together, so widths differ
  per layer. Needs the super-network's unit importance (`--reorder_units importance`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from syne_tune.config_space import Categorical, Domain, Integer, choice, ordinal, randint

from nas_llm.common.errors import UsageError
from nas_llm.model.families import family_for_config
from nas_llm.model.sub_network import SubNetwork
from nas_llm.model.unit_ranking import UnitScores, counts_within_global_share, most_important_layers


@dataclass(frozen=True)
class ModelShape:
    """The super-network's dimensions, in search-space units."""

    num_layers: int
    num_head_units: int
    intermediate_size: int

    @classmethod
    def of(cls, config) -> ModelShape:
        family = family_for_config(config)
        return cls(family.num_layers(config), family.num_head_units(config), family.intermediate_size(config))


def _prefix_masks(shape: ModelShape, heads_per_layer: list[int], neurons_per_layer: list[int]) -> SubNetwork:
    head_mask = torch.arange(shape.num_head_units)[None, :] < torch.tensor(heads_per_layer)[:, None]
    ffn_mask = torch.arange(shape.intermediate_size)[None, :] < torch.tensor(neurons_per_layer)[:, None]
    return SubNetwork(head_mask, ffn_mask)


def _sample_domain(domain: Any, rng: np.random.Generator) -> Any:
    if isinstance(domain, Integer):
        return int(rng.integers(domain.lower, domain.upper + 1))
    if isinstance(domain, Categorical):
        return domain.categories[int(rng.integers(len(domain.categories)))]
    if isinstance(domain, Domain):
        raise TypeError(f"no sampler for domain {domain}")
    return domain


def _half(count: int) -> int:
    """Half of `count` units, rounded up, so that one unit stays one."""
    return (count + 1) // 2


def _nearest_value(domain: Domain, target: int) -> int:
    """The value of an integer or numeric categorical domain closest to `target` (the smaller on a tie)."""
    if isinstance(domain, Integer):
        return min(max(target, domain.lower), domain.upper)
    return min(domain.categories, key=lambda value: (abs(value - target), value))


def _is_prefix(mask: torch.Tensor) -> bool:
    count = int(mask.sum())
    return bool(mask[:count].all())


class SearchSpace:
    """Base class: sampling draws each hyperparameter uniformly from its domain."""

    name = ""

    def __init__(self, shape: ModelShape):
        self.shape = shape
        self.config_space = self._define_config_space()

    def _define_config_space(self) -> dict[str, Any]:
        raise NotImplementedError

    def to_sub_network(self, config: dict[str, Any]) -> SubNetwork:
        raise NotImplementedError

    def to_config(self, sub_network: SubNetwork) -> dict[str, Any]:
        raise NotImplementedError

    def smallest(self) -> SubNetwork:
        raise NotImplementedError

    def largest(self) -> SubNetwork:
        return SubNetwork.full(self.shape.num_layers, self.shape.num_head_units, self.shape.intermediate_size)

    def mid(self) -> SubNetwork:
        """Mid-size: every layer keeps the first half of its heads and neurons (about half its parameters)."""
        layers = self.shape.num_layers
        return _prefix_masks(
            self.shape, [_half(self.shape.num_head_units)] * layers, [_half(self.shape.intermediate_size)] * layers
        )

    def initial_design(self) -> list[dict[str, Any]]:
        """The configs of the largest, the smallest and the mid-size sub-network, without repeats.

        Every search evaluates them first (the initial design of plm_pruning, Klein et al. 2024), so
        each Pareto front spans the whole range of sizes from its first three evaluations.
        """
        configs: list[dict[str, Any]] = []
        for sub_network in (self.largest(), self.smallest(), self.mid()):
            config = self.to_config(sub_network)
            if config not in configs:
                configs.append(config)
        return configs

    def sample_config(self, rng: np.random.Generator) -> dict[str, Any]:
        return {key: _sample_domain(domain, rng) for key, domain in self.config_space.items()}

    def sample(self, rng: np.random.Generator) -> SubNetwork:
        """A random sub-network, for super-network training."""
        return self.to_sub_network(self.sample_config(rng))

    def _unrepresentable(self, what: str) -> UsageError:
        return UsageError(f"this sub-network cannot be expressed in the '{self.name}' search space: {what}")


class SmallSearchSpace(SearchSpace):
    name = "small"

    def _head_domain(self) -> Domain:
        return randint(1, self.shape.num_head_units)

    def _define_config_space(self) -> dict[str, Any]:
        return {
            "num_layers": randint(0, self.shape.num_layers),
            "num_heads": self._head_domain(),
            "num_units": randint(1, self.shape.intermediate_size),
        }

    def to_sub_network(self, config: dict[str, Any]) -> SubNetwork:
        layers = range(self.shape.num_layers)
        kept = [layer < config["num_layers"] for layer in layers]
        heads = [config["num_heads"] if keep else 0 for keep in kept]
        neurons = [config["num_units"] if keep else 0 for keep in kept]
        return _prefix_masks(self.shape, heads, neurons)

    def to_config(self, sub_network: SubNetwork) -> dict[str, Any]:
        kept_layers = [layer for layer in range(sub_network.num_layers) if sub_network.keeps_layer(layer)]
        if kept_layers != list(range(len(kept_layers))):
            raise self._unrepresentable("kept layers must be a prefix")
        if not kept_layers:  # no layer: every head and neuron count gives it; take the smallest
            return {"num_layers": 0, "num_heads": 1, "num_units": 1}
        heads = {int(sub_network.head_mask[layer].sum()) for layer in kept_layers}
        neurons = {int(sub_network.ffn_mask[layer].sum()) for layer in kept_layers}
        if len(heads) != 1 or len(neurons) != 1:
            raise self._unrepresentable("all kept layers must keep the same number of heads and neurons")
        config = {"num_layers": len(kept_layers), "num_heads": heads.pop(), "num_units": neurons.pop()}
        if self.to_sub_network(config) != sub_network:
            raise self._unrepresentable("heads and neurons must be prefixes")
        return config

    def smallest(self) -> SubNetwork:
        return self.to_sub_network({"num_layers": 1, "num_heads": 1, "num_units": 1})

    def mid(self) -> SubNetwork:
        """All layers at half width: the head count of the domain nearest half the heads, half the neurons."""
        return self.to_sub_network({
            "num_layers": self.shape.num_layers,
            "num_heads": _nearest_value(self._head_domain(), _half(self.shape.num_head_units)),
            "num_units": _half(self.shape.intermediate_size),
        })


class SmallPower2SearchSpace(SmallSearchSpace):
    name = "smallpower2"

    def _head_domain(self) -> Domain:
        """H / 2^i heads, rounded down, down to 1: the full head count is always a choice."""
        heads = self.shape.num_head_units
        return ordinal(sorted({heads // 2**i for i in range(heads.bit_length())}), kind="nn-log")


class MediumSearchSpace(SearchSpace):
    name = "medium"

    def _define_config_space(self) -> dict[str, Any]:
        space = {}
        for layer in range(self.shape.num_layers):
            space[f"num_heads_{layer}"] = randint(0, self.shape.num_head_units)
            space[f"num_units_{layer}"] = randint(0, self.shape.intermediate_size)
        return space

    def to_sub_network(self, config: dict[str, Any]) -> SubNetwork:
        layers = range(self.shape.num_layers)
        heads = [config[f"num_heads_{layer}"] for layer in layers]
        neurons = [config[f"num_units_{layer}"] for layer in layers]
        return _prefix_masks(self.shape, heads, neurons)

    def to_config(self, sub_network: SubNetwork) -> dict[str, Any]:
        config = {}
        for layer in range(sub_network.num_layers):
            if not (_is_prefix(sub_network.head_mask[layer]) and _is_prefix(sub_network.ffn_mask[layer])):
                raise self._unrepresentable(f"layer {layer} keeps heads or neurons that are not a prefix")
            config[f"num_heads_{layer}"] = int(sub_network.head_mask[layer].sum())
            config[f"num_units_{layer}"] = int(sub_network.ffn_mask[layer].sum())
        return config

    def smallest(self) -> SubNetwork:
        """One head and one neuron per layer, as in the original example."""
        ones = [1] * self.shape.num_layers
        return _prefix_masks(self.shape, ones, ones)


class LayerSearchSpace(SearchSpace):
    """One bit per layer (`layer_i`): keep the whole layer or drop it, as in the original example."""

    name = "layer"

    def _define_config_space(self) -> dict[str, Any]:
        return {f"layer_{layer}": choice([0, 1]) for layer in range(self.shape.num_layers)}

    def to_sub_network(self, config: dict[str, Any]) -> SubNetwork:
        kept = [config[f"layer_{layer}"] for layer in range(self.shape.num_layers)]
        heads = [self.shape.num_head_units * keep for keep in kept]
        neurons = [self.shape.intermediate_size * keep for keep in kept]
        return _prefix_masks(self.shape, heads, neurons)

    def to_config(self, sub_network: SubNetwork) -> dict[str, Any]:
        config = {f"layer_{layer}": int(sub_network.keeps_layer(layer)) for layer in range(sub_network.num_layers)}
        if self.to_sub_network(config) != sub_network:
            raise self._unrepresentable("each layer must be kept whole or removed")
        return config

    def sample(self, rng: np.random.Generator) -> SubNetwork:
        """Keep a uniformly random number of layers (0 to L - 1), chosen uniformly (the original sampler)."""
        kept = rng.choice(self.shape.num_layers, size=int(rng.integers(0, self.shape.num_layers)), replace=False)
        config = {f"layer_{layer}": int(layer in kept) for layer in range(self.shape.num_layers)}
        return self.to_sub_network(config)

    def smallest(self) -> SubNetwork:
        """No layer at all, as in the original example."""
        zeros = [0] * self.shape.num_layers
        return _prefix_masks(self.shape, zeros, zeros)

    def mid(self) -> SubNetwork:
        """The bottom half of the layers, whole (dropping the top layers is the strongest simple layer drop)."""
        kept = [layer < _half(self.shape.num_layers) for layer in range(self.shape.num_layers)]
        heads = [self.shape.num_head_units * keep for keep in kept]
        neurons = [self.shape.intermediate_size * keep for keep in kept]
        return _prefix_masks(self.shape, heads, neurons)


class LayerBlockSearchSpace(LayerSearchSpace):
    """Two bits per layer (`layer_mha_i`, `layer_ffn_i`): keep or drop its attention and its FFN block."""

    name = "layer_block"

    def _define_config_space(self) -> dict[str, Any]:
        space = {}
        for layer in range(self.shape.num_layers):
            space[f"layer_mha_{layer}"] = choice([0, 1])
            space[f"layer_ffn_{layer}"] = choice([0, 1])
        return space

    def to_sub_network(self, config: dict[str, Any]) -> SubNetwork:
        layers = range(self.shape.num_layers)
        heads = [self.shape.num_head_units * config[f"layer_mha_{layer}"] for layer in layers]
        neurons = [self.shape.intermediate_size * config[f"layer_ffn_{layer}"] for layer in layers]
        return _prefix_masks(self.shape, heads, neurons)

    def to_config(self, sub_network: SubNetwork) -> dict[str, Any]:
        config = {}
        for layer in range(sub_network.num_layers):
            config[f"layer_mha_{layer}"] = int(sub_network.keeps_attention(layer))
            config[f"layer_ffn_{layer}"] = int(sub_network.keeps_ffn(layer))
        if self.to_sub_network(config) != sub_network:
            raise self._unrepresentable("each block must be kept whole or removed")
        return config

    def sample(self, rng: np.random.Generator) -> SubNetwork:
        """Keep a uniformly random number of blocks (0 to 2L - 1), chosen uniformly (the original sampler)."""
        num_blocks = 2 * self.shape.num_layers
        kept = rng.choice(num_blocks, size=int(rng.integers(0, num_blocks)), replace=False)
        config = {f"layer_mha_{layer}": 0 for layer in range(self.shape.num_layers)}
        config |= {f"layer_ffn_{layer}": 0 for layer in range(self.shape.num_layers)}
        for block in kept.tolist():
            kind = "mha" if block < self.shape.num_layers else "ffn"
            config[f"layer_{kind}_{block % self.shape.num_layers}"] = 1
        return self.to_sub_network(config)


class LargeSearchSpace(SearchSpace):
    name = "large"

    def _head_keys(self) -> list[str]:
        return [f"head_{layer}_{h}" for layer in range(self.shape.num_layers) for h in range(self.shape.num_head_units)]

    def _neuron_keys(self) -> list[str]:
        return [
            f"neuron_{layer}_{n}"
            for layer in range(self.shape.num_layers)
            for n in range(self.shape.intermediate_size)
        ]

    def _define_config_space(self) -> dict[str, Any]:
        return {key: choice([0, 1]) for key in self._head_keys() + self._neuron_keys()}

    def to_sub_network(self, config: dict[str, Any]) -> SubNetwork:
        heads = torch.tensor([config[key] for key in self._head_keys()], dtype=torch.bool)
        neurons = torch.tensor([config[key] for key in self._neuron_keys()], dtype=torch.bool)
        return SubNetwork(
            heads.reshape(self.shape.num_layers, self.shape.num_head_units),
            neurons.reshape(self.shape.num_layers, self.shape.intermediate_size),
        )

    def to_config(self, sub_network: SubNetwork) -> dict[str, Any]:
        bits = sub_network.head_mask.flatten().tolist() + sub_network.ffn_mask.flatten().tolist()
        return {key: int(bit) for key, bit in zip(self._head_keys() + self._neuron_keys(), bits, strict=True)}

    def sample(self, rng: np.random.Generator) -> SubNetwork:
        """Drop a uniformly random number of units, chosen uniformly (the original sampler)."""
        num_heads = self.shape.num_layers * self.shape.num_head_units
        num_units = num_heads + self.shape.num_layers * self.shape.intermediate_size
        keep = np.ones(num_units, dtype=bool)
        keep[rng.choice(num_units, size=int(rng.integers(1, num_units)), replace=False)] = False
        keep = torch.from_numpy(keep)
        return SubNetwork(
            keep[:num_heads].reshape(self.shape.num_layers, self.shape.num_head_units),
            keep[num_heads:].reshape(self.shape.num_layers, self.shape.intermediate_size),
        )

    def smallest(self) -> SubNetwork:
        """One head and one neuron in the first layer, as in the original example."""
        zeros = [0] * self.shape.num_layers
        return _prefix_masks(self.shape, [1] + zeros[1:], [1] + zeros[1:])


IMPORTANCE_SHARES = tuple(round(step / 20, 2) for step in range(1, 21))  # 5% to 100% of the kept layers' units


class ImportanceShapedSearchSpace(SearchSpace):
    name = "importance"

    def __init__(self, shape: ModelShape, scores: UnitScores):
        if tuple(scores.heads.shape) != (shape.num_layers, shape.num_head_units) or tuple(scores.neurons.shape) != (
            shape.num_layers, shape.intermediate_size
        ):
            raise ValueError("the unit importance scores do not have the super-network's dimensions")
        self.scores = scores
        self.layer_scores = scores.layer_scores()
        super().__init__(shape)

    def _define_config_space(self) -> dict[str, Any]:
        return {
            "num_layers": randint(0, self.shape.num_layers),
            "head_share": ordinal(list(IMPORTANCE_SHARES), kind="nn"),
            "neuron_share": ordinal(list(IMPORTANCE_SHARES), kind="nn"),
        }

    def to_sub_network(self, config: dict[str, Any]) -> SubNetwork:
        layers = most_important_layers(self.layer_scores, config["num_layers"])
        heads = counts_within_global_share(self.scores.heads, layers, config["head_share"])
        neurons = counts_within_global_share(self.scores.neurons, layers, config["neuron_share"])
        return _prefix_masks(self.shape, heads, neurons)

    def to_config(self, sub_network: SubNetwork) -> dict[str, Any]:
        """The config that gives `sub_network` (the smallest shares that do), found by trying each share."""
        heads = sub_network.head_mask.sum(1).tolist()
        neurons = sub_network.ffn_mask.sum(1).tolist()
        for num_layers in range(self.shape.num_layers + 1):
            layers = most_important_layers(self.layer_scores, num_layers)
            head_share = self._share_giving(self.scores.heads, layers, heads)
            neuron_share = self._share_giving(self.scores.neurons, layers, neurons)
            config = {"num_layers": num_layers, "head_share": head_share, "neuron_share": neuron_share}
            if head_share is not None and neuron_share is not None and self.to_sub_network(config) == sub_network:
                return config
        raise self._unrepresentable("its layers and widths are not those of one depth and two shares of the units "
                                    "ranked by importance")

    @staticmethod
    def _share_giving(scores: torch.Tensor, layers: list[int], counts: list[int]) -> float | None:
        return next((share for share in IMPORTANCE_SHARES
                     if counts_within_global_share(scores, layers, share) == counts), None)

    def smallest(self) -> SubNetwork:
        """The most important layer at the smallest shares."""
        return self.to_sub_network({"num_layers": 1, "head_share": IMPORTANCE_SHARES[0],
                                    "neuron_share": IMPORTANCE_SHARES[0]})

    def mid(self) -> SubNetwork:
        """All layers, half of all heads and of all neurons (about half the layers' parameters)."""
        return self.to_sub_network({"num_layers": self.shape.num_layers, "head_share": 0.5, "neuron_share": 0.5})


SEARCH_SPACES: dict[str, type[SearchSpace]] = {
    "small": SmallSearchSpace,
    "smallpower2": SmallPower2SearchSpace,
    "medium": MediumSearchSpace,
    "layer": LayerSearchSpace,
    "layer_block": LayerBlockSearchSpace,
    "large": LargeSearchSpace,
    "uniform": LargeSearchSpace,
    "importance": ImportanceShapedSearchSpace,
}


def make_search_space(name: str, model_config, unit_scores: UnitScores | None = None) -> SearchSpace:
    """The named search space over a model's dimensions; the `importance` space also needs the super-network's
    unit importance."""
    if name not in SEARCH_SPACES:
        raise UsageError(f"unknown search space '{name}'; choose one of: {', '.join(SEARCH_SPACES)}")
    if SEARCH_SPACES[name] is ImportanceShapedSearchSpace:
        if unit_scores is None:
            raise UsageError("the 'importance' search space needs the importance of the super-network's units: "
                             "train it with --reorder_units importance (it writes unit_importance.json)")
        return ImportanceShapedSearchSpace(ModelShape.of(model_config), unit_scores)
    return SEARCH_SPACES[name](ModelShape.of(model_config))
