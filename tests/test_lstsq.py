"""Least-squares mask tuning matches a hand-built least-squares problem and lowers the reconstruction error."""

import copy

import pytest
import torch
from conftest import tiny_batch, tiny_model

from cost import count_parameters
from families import family_for, layers_of
from lstsq import tune_masks
from mask import masked
from sub_network import SubNetwork

BATCHES = [tiny_batch(batch_size=4, seed=seed) for seed in range(3)]


def full_sub_network(model) -> SubNetwork:
    family = family_for(model)
    return SubNetwork.full(family.num_layers(model.config), family.num_head_units(model.config),
                           family.intermediate_size(model.config))


def pruned_sub_network(model) -> SubNetwork:
    full = full_sub_network(model)
    head_mask, ffn_mask = full.head_mask.clone(), full.ffn_mask.clone()
    head_mask[:, 0] = False
    ffn_mask[:, ::3] = False
    return SubNetwork(head_mask, ffn_mask)


def projection_inputs(model, path: str, layer: int, sub_network=None) -> tuple[torch.Tensor, torch.nn.Module]:
    """Every calibration token's input to one layer's projection, read with a plain hook."""
    module = layers_of(model)[layer].get_submodule(path)
    rows = []
    # hooked inside `masked`, after the mask hooks: sees the removed units zeroed
    with torch.no_grad(), masked(model, sub_network or full_sub_network(model)):
        handle = module.register_forward_pre_hook(lambda _, args: rows.append(args[0].reshape(-1, args[0].shape[-1])))
        for batch in BATCHES:
            model(**{key: value for key, value in batch.items() if key != "labels"})
        handle.remove()
    return torch.cat(rows).double(), module


def dense_weight(module) -> torch.Tensor:
    """[out, in] whatever the module's layout (GPT-2's Conv1D stores [in, out])."""
    weight = module.weight.detach().double()
    return weight if isinstance(module, torch.nn.Linear) else weight.T


@pytest.mark.parametrize("family", ["bert", "llama", "gpt2"])
def test_first_ffn_scales_match_a_hand_built_least_squares(family):
    model = tiny_model(family)
    sub_network = pruned_sub_network(model)
    # Only the FFN of layer 0 is pruned: its input is the unpruned one, so the problem is the textbook one.
    sub_network.ffn_mask[1:] = True
    sub_network.head_mask[:] = True
    path = family_for(model).ffn_down_proj
    inputs, module = projection_inputs(model, path, 0)
    weight = dense_weight(module)
    kept = sub_network.kept_neurons(0)
    design = torch.stack([(inputs[:, [k]] * weight[:, k]).flatten() for k in kept], dim=1)  # one column per neuron
    target = (inputs @ weight.T).flatten()
    expected = torch.linalg.lstsq(design, target[:, None]).solution.flatten()

    tuned = copy.deepcopy(model)
    scales = tune_masks(tuned, model, sub_network, BATCHES)
    torch.testing.assert_close(torch.tensor(scales["neurons"][0], dtype=torch.float64), expected, rtol=1e-3, atol=1e-4)
    tuned_weight = dense_weight(layers_of(tuned)[0].get_submodule(path))
    torch.testing.assert_close(tuned_weight[:, kept], weight[:, kept] * expected.float().double(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("family", ["bert", "llama", "gpt2"])
def test_tuning_lowers_every_blocks_reconstruction_error_and_keeps_the_parameter_count(family):
    model = tiny_model(family)
    family_table = family_for(model)
    sub_network = pruned_sub_network(model)
    tuned = copy.deepcopy(model)
    tune_masks(tuned, model, sub_network, BATCHES)
    assert count_parameters(tuned, sub_network) == count_parameters(model, sub_network)
    for layer in range(sub_network.num_layers):
        for path in (family_table.attention_out_proj, family_table.ffn_down_proj):
            full_inputs, full_module = projection_inputs(model, path, layer)
            target = full_inputs @ dense_weight(full_module).T
            errors = []
            for candidate in (model, tuned):
                inputs, module = projection_inputs(candidate, path, layer, sub_network)
                errors.append((inputs @ dense_weight(module).T - target).pow(2).sum())
            assert errors[1] < errors[0], (layer, path, errors)
