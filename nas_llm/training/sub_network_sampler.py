"""Which random sub-networks super-network training draws (`--sampling_distribution`).

- uniform: every hyperparameter uniformly from its domain, the search space's own sampler (the
  original's). Sizes pile up at the small end: on MiniLM-L6's `small` space the median draw keeps
  about a quarter of the encoder's parameters, so mid-size and large sub-networks are rarely trained.
- params: layer parameter counts spread evenly between the smallest and the largest sub-network.
  Each draw picks one of `NUM_BINS` equal-width bins of parameter counts uniformly (among those the
  space can reach), then proposes configs until one falls into it (at most `MAX_TRIES`; else the
  proposal closest to the bin's centre is taken).

Proposals tilt every hyperparameter towards small or large values alike: one exponent `a` per
proposal, log-uniform in [1/MAX_TILT, MAX_TILT], and each hyperparameter takes the value at
quantile u**a of its domain sorted ascending (u uniform). Uniform proposals could not fill the outer
bins of spaces with many hyperparameters (`medium` averages a dozen uniform widths, which almost
never all come out large); the tilt reaches every size. Larger values are assumed to mean more
parameters, which holds in every space; were it not so, only the number of tries would grow, not
the distribution the bins impose.
"""

from __future__ import annotations

import math
from typing import Any, Protocol

import numpy as np
from syne_tune.config_space import Categorical, Domain, Integer
from torch import nn

from nas_llm.common.errors import UsageError
from nas_llm.common.flags import SAMPLING_DISTRIBUTIONS
from nas_llm.model.cost import count_parameters
from nas_llm.model.search_spaces import ModelShape, SearchSpace
from nas_llm.model.sub_network import SubNetwork


class SubNetworkSampler(Protocol):
    def sample(self, rng: np.random.Generator) -> SubNetwork: ...


class LayerParameterCounter:
    """`cost.count_parameters(model, s).layers` for any sub-network `s`, in a few vector operations.

    A layer's kept parameters are linear in its kept head units and neurons, plus the block-level
    parameters (output biases, layer norms) of each block it keeps. The four coefficients are read
    off `count_parameters` of probe sub-networks once, so the family table stays the only source.
    """

    def __init__(self, model: nn.Module):
        shape = ModelShape.of(model.config)

        def per_layer(num_heads: int, num_neurons: int) -> int:
            """Parameters one layer keeps with this many heads and neurons (all layers alike)."""
            sub_network = SubNetwork.full(shape.num_layers, shape.num_head_units, shape.intermediate_size)
            sub_network.head_mask[:, num_heads:] = False
            sub_network.ffn_mask[:, num_neurons:] = False
            return count_parameters(model, sub_network).layers // shape.num_layers

        heads, neurons = shape.num_head_units, shape.intermediate_size
        self.per_head, self.attention_block = self._coefficients(per_layer(1, 0), per_layer(heads, 0), heads)
        self.per_neuron, self.ffn_block = self._coefficients(per_layer(0, 1), per_layer(0, neurons), neurons)

    @staticmethod
    def _coefficients(with_one: int, with_all: int, num_units: int) -> tuple[int, int]:
        """(per unit, per kept block) from the counts of a block that keeps one and all of its units."""
        per_unit = (with_all - with_one) // (num_units - 1) if num_units > 1 else 0
        return per_unit, with_one - per_unit

    def __call__(self, sub_network: SubNetwork) -> int:
        heads = sub_network.head_mask.sum(dim=1)
        neurons = sub_network.ffn_mask.sum(dim=1)
        count = (
            self.per_head * heads + self.attention_block * (heads > 0)
            + self.per_neuron * neurons + self.ffn_block * (neurons > 0)
        )
        return int(count.sum())


class ParameterBinSampler:
    """Sub-networks whose layer parameter counts are uniform over [smallest, largest], in bins."""

    NUM_BINS = 10
    MAX_TRIES = 500
    NUM_PROBES = 2000
    MAX_TILT = 32.0

    def __init__(self, search_space: SearchSpace, count: LayerParameterCounter):
        self.search_space = search_space
        self.count = count
        self.edges = np.linspace(count(search_space.smallest()), count(search_space.largest()), self.NUM_BINS + 1)
        self._domains: list[tuple[str, list[Any]]] = []
        self._constants: dict[str, Any] = {}
        for name, domain in search_space.config_space.items():
            if isinstance(domain, Integer):
                self._domains.append((name, list(range(domain.lower, domain.upper + 1))))
            elif isinstance(domain, Categorical):
                self._domains.append((name, sorted(domain.categories)))
            elif isinstance(domain, Domain):
                raise TypeError(f"no sampler for domain {domain}")
            else:
                self._constants[name] = domain
        self._sizes = np.array([len(values) for _, values in self._domains])
        self.bins = self._reachable_bins()

    def bin_of(self, count: int) -> int:
        """The bin holding `count`: bins are half-open, the last one closed; -1 below the smallest."""
        return min(int(np.searchsorted(self.edges, count, side="right")) - 1, self.NUM_BINS - 1)

    def _reachable_bins(self) -> list[int]:
        """The bins proposals reach, probed once with a fixed seed (spaces with few sizes, like `layer`, leave
        some empty; the training RNG is not touched, so a resumed run draws the same sub-networks)."""
        rng = np.random.default_rng(0)
        reached: set[int] = set()
        for _ in range(self.NUM_PROBES):
            reached.add(self.bin_of(self.count(self.propose(rng))))
            if reached >= set(range(self.NUM_BINS)):
                break
        return sorted(reached - {-1})

    def sample(self, rng: np.random.Generator) -> SubNetwork:
        target = self.bins[int(rng.integers(len(self.bins)))]
        center = (self.edges[target] + self.edges[target + 1]) / 2
        closest, closest_distance = None, math.inf
        for _ in range(self.MAX_TRIES):
            proposal = self.propose(rng)
            count = self.count(proposal)
            if self.bin_of(count) == target:
                return proposal
            if abs(count - center) < closest_distance:
                closest, closest_distance = proposal, abs(count - center)
        return closest

    def propose(self, rng: np.random.Generator) -> SubNetwork:
        """A config whose hyperparameters are all tilted towards small or large values by one exponent."""
        tilt = math.exp(rng.uniform(-math.log(self.MAX_TILT), math.log(self.MAX_TILT)))
        quantiles = rng.random(len(self._domains)) ** tilt
        indices = np.minimum((quantiles * self._sizes).astype(np.int64), self._sizes - 1)
        config = {name: values[index] for (name, values), index in zip(self._domains, indices.tolist(), strict=True)}
        return self.search_space.to_sub_network(config | self._constants)


def make_sub_network_sampler(distribution: str, search_space: SearchSpace, model: nn.Module) -> SubNetworkSampler:
    """The sampler of `--sampling_distribution`; count `model`'s parameters before it is sharded (ZeRO-3)."""
    if distribution == "uniform":
        return search_space
    if distribution == "params":
        return ParameterBinSampler(search_space, LayerParameterCounter(model))
    raise UsageError(
        f"unknown --sampling_distribution '{distribution}'; choose one of: {', '.join(SAMPLING_DISTRIBUTIONS)}"
    )
