"""Masking computes exactly the sub-network: each mask equals zeroing the matching weight slices."""

import copy

import pytest
import torch
from support import full_sub_network, tiny_batch, tiny_model, zero_inputs_of

from nas_llm.model.families import family_for, layers_of
from nas_llm.model.mask import masked


def logits(model, **overrides) -> torch.Tensor:
    batch = tiny_batch()
    batch.pop("labels")
    with torch.no_grad():
        return model(**batch, **overrides).logits






def test_head_mask_equals_zeroing_the_heads_in_the_output_projection(family_name):
    model = tiny_model(family_name)
    family = family_for(model)
    sub_network = full_sub_network(model)
    sub_network.head_mask[1, 0] = False
    with masked(model, sub_network):
        masked_logits = logits(model)

    reference = copy.deepcopy(model)
    width = family.query_heads_per_unit(model.config) * family.head_dim(model.config)
    zero_inputs_of(layers_of(reference)[1], family.attention_out_proj, torch.arange(width))
    assert torch.allclose(masked_logits, logits(reference), atol=1e-6)
    assert not torch.allclose(masked_logits, logits(model), atol=1e-4)


def test_neuron_mask_equals_zeroing_the_neurons_in_the_down_projection(family_name):
    model = tiny_model(family_name)
    family = family_for(model)
    sub_network = full_sub_network(model)
    removed = torch.tensor([3, 7, 11])
    sub_network.ffn_mask[0, removed] = False
    with masked(model, sub_network):
        masked_logits = logits(model)

    reference = copy.deepcopy(model)
    zero_inputs_of(layers_of(reference)[0], family.ffn_down_proj, removed)
    assert torch.allclose(masked_logits, logits(reference), atol=1e-6)
    assert not torch.allclose(masked_logits, logits(model), atol=1e-4)


def test_removing_all_heads_and_neurons_of_a_layer_equals_deleting_the_layer(family_name):
    model = tiny_model(family_name)
    sub_network = full_sub_network(model)
    sub_network.head_mask[1] = False
    sub_network.ffn_mask[1] = False
    with masked(model, sub_network):
        masked_logits = logits(model)

    reference = copy.deepcopy(model)
    del layers_of(reference)[1]
    reference.config.num_hidden_layers -= 1
    reference.config.use_cache = False  # its layers keep their indices (0, 2): a KV cache would not fit them
    if getattr(reference.config, "layer_types", None):
        reference.config.layer_types = reference.config.layer_types[:-1]
    assert torch.allclose(masked_logits, logits(reference), atol=1e-5)
    assert not torch.allclose(masked_logits, logits(model), atol=1e-4)


@pytest.mark.parametrize("block", ["attention", "ffn"])
def test_an_empty_block_is_the_identity(family_name, block):
    """Pre-LN blocks add to the residual stream: identity = output projection weight and bias zeroed.

    Post-LN (BERT-style) blocks include the residual and the LayerNorm: the layer then computes only
    its other block, checked by replacing the whole layer with that block.
    """
    model = tiny_model(family_name)
    family = family_for(model)
    sub_network = full_sub_network(model)
    mask = sub_network.head_mask if block == "attention" else sub_network.ffn_mask
    mask[2] = False
    with masked(model, sub_network):
        masked_logits = logits(model)

    skip = family.attention_skip if block == "attention" else family.ffn_skip
    reference = copy.deepcopy(model)
    layer = layers_of(reference)[2]
    if skip.residual_arg is None:
        out_proj = layer.get_submodule(family.attention_out_proj if block == "attention" else family.ffn_down_proj)
        with torch.no_grad():
            out_proj.weight.zero_()
            if out_proj.bias is not None:
                out_proj.bias.zero_()
    elif block == "attention":
        layer.forward = lambda hidden_states, *args, **kwargs: layer.feed_forward_chunk(hidden_states)
    else:
        layer.forward = lambda hidden_states, mask, *args, **kwargs: layer.attention(hidden_states, mask)[0]
    assert torch.allclose(masked_logits, logits(reference), atol=1e-5)
    assert not torch.allclose(masked_logits, logits(model), atol=1e-4)


def test_model_is_restored_after_the_context_even_on_error(family_name):
    model = tiny_model(family_name)
    before = logits(model)
    sub_network = full_sub_network(model)
    sub_network.head_mask[:, 1:] = False
    sub_network.ffn_mask[0] = False
    with pytest.raises(RuntimeError, match="boom"):
        with masked(model, sub_network):
            raise RuntimeError("boom")
    assert torch.equal(logits(model), before)
    assert not any(module._forward_hooks or module._forward_pre_hooks for module in model.modules())
    assert not any("forward" in vars(module) for module in model.modules())


def test_full_sub_network_changes_nothing(family_name):
    model = tiny_model(family_name)
    expected = logits(tiny_model(family_name))  # the same weights, never hooked
    with masked(model, full_sub_network(model)):
        assert torch.equal(logits(model), expected)
