"""A long search must leave nothing behind: no hooks, no forward overrides, no swapped parameters, and no
growing number of live tensors. The loop is bench/bench_search_memory.py's (the search loop of
run_offline_search.py); RSS is too noisy at this size, the benchmark measures it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from transformers import AutoModelForSequenceClassification, BertConfig

from nas_llm.model.search_spaces import make_search_space

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from bench_search_memory import STEADY_AFTER, run_search  # noqa: E402

NUM_SAMPLES = 300


def tiny_bert() -> nn.Module:
    """3 layers, hidden 16; 64 neurons so that the small space has 3 * 4 * 64 configs, more than NUM_SAMPLES."""
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=64, hidden_size=16, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=32, num_labels=2,
    )
    return AutoModelForSequenceClassification.from_config(config).eval()


def validation_batches() -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    return [
        {
            "input_ids": torch.randint(0, 64, (4, 12), generator=generator),
            "attention_mask": torch.ones(4, 12, dtype=torch.long),
            "labels": torch.randint(0, 2, (4,), generator=generator),
        }
        for _ in range(2)
    ]


def leftovers(model: nn.Module) -> list[str]:
    """Anything a sub-network context could have left on a module."""
    found = []
    for name, module in model.named_modules():
        hooks = (module._forward_pre_hooks, module._forward_hooks, module._backward_hooks, module._backward_pre_hooks)
        if any(hooks):
            found.append(f"{name or 'model'}: {sum(map(len, hooks))} hooks")
        if "forward" in vars(module):
            found.append(f"{name or 'model'}: forward override")
        for param_name, param in module._parameters.items():
            if param is not None and not isinstance(param, nn.Parameter):
                found.append(f"{name}.{param_name}: swapped for a plain tensor")
    return found


@pytest.fixture
def one_thread():
    """Tiny matmuls on a busy 2-core machine run ~30x slower with 2 OpenMP threads than with 1."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("execution", ["slice", "mask"])
def test_long_search_leaves_nothing_behind(execution, one_thread):
    model = tiny_bert()
    parameters_before = [(id(p), p.shape) for p in model.parameters()]
    layers_before = model.bert.encoder.layer
    # transformers' own output-capturing hooks (installed once, for output_hidden_states) belong to the model
    inputs = {key: value for key, value in validation_batches()[0].items() if key != "labels"}
    model(**inputs, output_hidden_states=True)
    hooks_before = leftovers(model)
    space = make_search_space("small", model.config)
    _, live_tensors = run_search(model, space, validation_batches(), execution, NUM_SAMPLES, seed=0, malloc_trim=True)
    assert leftovers(model) == hooks_before
    assert model.bert.encoder.layer is layers_before and len(layers_before) == 3
    assert [(id(p), p.shape) for p in model.parameters()] == parameters_before
    assert live_tensors[NUM_SAMPLES] <= live_tensors[STEADY_AFTER], live_tensors
