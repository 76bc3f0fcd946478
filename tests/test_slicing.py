"""Sliced execution computes exactly what masking computes, with the same gradients on shared weights."""

import numpy as np
import pytest
import torch
from support import SPACE_NAMES, make_space, tiny_batch, tiny_config, tiny_model

from nas_llm.model.mask import masked
from nas_llm.model.search_spaces import make_search_space
from nas_llm.model.slicing import _slice, sliced
from nas_llm.model.sub_network import SubNetwork
from nas_llm.training.objective import task_loss


def sub_networks(family: str, space_name: str, count: int = 4) -> list[SubNetwork]:
    space = make_space(space_name, tiny_config(family))
    rng = np.random.default_rng(0)
    return [space.smallest(), space.largest()] + [space.sample(rng) for _ in range(count)]


def run(model, sub_network, context, backward: bool):
    batch = tiny_batch()
    labels = batch.pop("labels")
    model.zero_grad(set_to_none=True)
    with context(model, sub_network):
        logits = model(**batch).logits
        if backward:
            task_loss(logits, labels).backward()
    grads = {
        name: torch.zeros_like(p) if p.grad is None else p.grad.clone() for name, p in model.named_parameters()
    }
    return logits.detach(), grads


@pytest.mark.parametrize("space_name", SPACE_NAMES)
def test_sliced_outputs_and_gradients_equal_masked(family_name, space_name):
    model = tiny_model(family_name)
    for sub_network in sub_networks(family_name, space_name):
        masked_logits, masked_grads = run(model, sub_network, masked, backward=True)
        sliced_logits, sliced_grads = run(model, sub_network, sliced, backward=True)
        assert (masked_logits - sliced_logits).abs().max() <= 1e-5
        for name, grad in masked_grads.items():
            assert (grad - sliced_grads[name]).abs().max() <= 1e-5, name


def test_slicing_runs_smaller_matrices_and_drops_layers():
    model = tiny_model("bert")
    space = make_search_space("small", model.config)
    sub_network = space.to_sub_network({"num_layers": 2, "num_heads": 1, "num_units": 5})
    shapes = {}

    def record_weight_shape(name):
        def hook(module, args, output):
            shapes[name] = tuple(module.weight.shape)

        return hook

    hooks = [
        module.register_forward_hook(record_weight_shape(name))
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear)
    ]
    with sliced(model, sub_network):
        assert len(model.bert.encoder.layer) == 2
        run_logits = model(**{k: v for k, v in tiny_batch().items() if k != "labels"}).logits
    for hook in hooks:
        hook.remove()
    assert run_logits.shape == (3, 2)
    assert shapes["bert.encoder.layer.0.attention.self.query"] == (4, 16)  # 1 head of 4 dims
    assert shapes["bert.encoder.layer.1.intermediate.dense"] == (5, 16)
    assert "bert.encoder.layer.2.intermediate.dense" not in shapes


def test_model_is_restored_after_slicing_even_on_error(family_name):
    model = tiny_model(family_name)
    before = {name: p for name, p in model.named_parameters()}
    state = {name: p.detach().clone() for name, p in before.items()}
    sub_network = make_search_space("medium", model.config).sample(np.random.default_rng(1))
    sub_network.head_mask[0] = False
    sub_network.ffn_mask[0] = False
    with pytest.raises(RuntimeError, match="boom"):
        with sliced(model, sub_network):
            raise RuntimeError("boom")
    after = dict(model.named_parameters())
    assert after.keys() == before.keys()
    assert all(after[name] is before[name] and torch.equal(after[name], state[name]) for name in before)
    assert all(isinstance(p, torch.nn.Parameter) for p in after.values())
    assert not any("forward" in vars(module) for module in model.modules())
    assert model.config.num_hidden_layers == 3


def test_training_under_slicing_updates_the_shared_weights():
    model = tiny_model("gpt2").train()
    sub_network = make_search_space("small", model.config).to_sub_network(
        {"num_layers": 1, "num_heads": 2, "num_units": 7}
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    before = model.transformer.h[0].attn.c_attn.weight.detach().clone()
    _, grads = run(model, sub_network, sliced, backward=True)
    optimizer.step()
    after = model.transformer.h[0].attn.c_attn.weight.detach()
    changed_columns = (after != before).any(dim=0).nonzero().flatten().tolist()
    query_cols = list(range(8))  # heads 0-1 of 4 dims, in each of the q, k and v blocks of width 16
    assert changed_columns == query_cols + [16 + c for c in query_cols] + [32 + c for c in query_cols]
    assert torch.count_nonzero(grads["transformer.h.1.attn.c_attn.weight"]) == 0


def test_a_sub_network_dropping_the_first_layer_runs_with_the_models_own_cache_setting(family_name):
    """Without use_cache=False: Qwen2's KV cache for the kept layers was indexed by their original indices."""
    model = tiny_model(family_name)  # eval mode, the family's default use_cache
    space = make_search_space("layer", model.config)
    sub_network = space.to_sub_network({**space.to_config(space.largest()), "layer_mha_0": 0, "layer_ffn_0": 0})
    batch = tiny_batch()
    batch.pop("labels")
    with torch.no_grad(), sliced(model, sub_network):
        sliced_logits = model(**batch).logits
    with torch.no_grad(), masked(model, sub_network):
        masked_logits = model(**batch, use_cache=False).logits
    assert torch.allclose(sliced_logits, masked_logits, atol=1e-5)
    assert model.config.use_cache == tiny_config(family_name).use_cache  # restored


def test_hidden_states_of_every_layer_after_a_first_forward_that_dropped_layers(family_name):
    """transformers hooks the layers for hidden states at the first forward; a sliced one must not hide layers."""
    model, batch = tiny_model(family_name), tiny_batch()
    inputs = {key: value for key, value in batch.items() if key != "labels"}
    num_layers = model.config.num_hidden_layers
    first_layer_only = make_search_space("small", model.config).to_sub_network(
        {"num_layers": 1, "num_heads": 1, "num_units": 1}
    )
    with torch.no_grad():
        with sliced(model, first_layer_only):
            model(**inputs, output_hidden_states=True)
        assert len(model(**inputs, output_hidden_states=True).hidden_states) == num_layers + 1


def test_gathered_units_are_indexed_on_the_weights_device(monkeypatch):
    """Non-prefix units (large space) gather with an index on the weights' device: CUDA refuses a CPU index. The meta
    device stands in for a GPU on this machine, and index_select records the devices it is called with."""
    calls, index_select = [], torch.Tensor.index_select

    def recording_index_select(tensor, dim, index):
        calls.append((tensor.device.type, index.device.type))
        return index_select(tensor, dim, index)

    monkeypatch.setattr(torch.Tensor, "index_select", recording_index_select)
    gathered = _slice(torch.ones(4, 3, device="meta"), 0, torch.tensor([2, 0]))
    assert calls == [("meta", "meta")] and gathered.shape == (2, 3)
