"""Least-squares mask tuning matches a hand-built least-squares problem on the residual stream (Kwon et al.),
ignores padding and lowers how far the pruned model's output is from the unpruned one's."""

import copy

import pytest
import torch
from support import tiny_batch, tiny_model

from nas_llm.extraction.lstsq import MAX_SCALE, solve_scales, tune_masks, unpruned_streams
from nas_llm.model.cost import count_parameters
from nas_llm.model.families import family_for, layers_of
from nas_llm.model.mask import masked
from nas_llm.model.sub_network import SubNetwork

BATCHES = [tiny_batch(batch_size=4, seed=seed) for seed in range(3)]  # the last row of each is padded
# Where each family's residual stream is read right after a block of layer 0: the input of the module that
# follows it (layer, path), named here by hand rather than taken from the family table.
STREAM_AFTER = {
    "bert": {"attention": (0, "attention.output.LayerNorm"), "ffn": (0, "output.LayerNorm")},
    "llama": {"attention": (0, "post_attention_layernorm"), "ffn": (1, "input_layernorm")},
    "gpt2": {"attention": (0, "ln_2"), "ffn": (1, "ln_1")},
}
# After the last layer's FFN block, a pre-LN stream goes on to the final norm of the base model (layer None).
FINAL_NORM = {"llama": "norm", "gpt2": "ln_f"}


def stream_after(family: str, block: str, layer: int, num_layers: int) -> tuple[int | None, str]:
    """STREAM_AFTER for a block of `layer`: the same module, `layer` layers on."""
    site_layer, path = STREAM_AFTER[family][block]
    site_layer += layer
    return (None, FINAL_NORM[family]) if site_layer == num_layers else (site_layer, path)


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


def module_inputs(
    model, layer: int | None, path: str, sub_network, batches=BATCHES
) -> tuple[torch.Tensor, torch.nn.Module]:
    """The input of one module (of a layer, or of the base model when `layer` is None) for every real (unpadded)
    calibration token, read with a plain hook."""
    module = (model.base_model if layer is None else layers_of(model)[layer]).get_submodule(path)
    rows = []
    # hooked inside `masked`, after the mask hooks: sees the removed units zeroed
    with torch.no_grad(), masked(model, sub_network):
        handle = module.register_forward_pre_hook(lambda _, args: rows.append(args[0].reshape(-1, args[0].shape[-1])))
        for batch in batches:
            model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        handle.remove()
    real = torch.cat([batch["attention_mask"].reshape(-1).bool() for batch in batches])
    return torch.cat(rows).double()[real], module


def dense_weight(module) -> torch.Tensor:
    """[out, in] whatever the module's layout (GPT-2's Conv1D stores [in, out])."""
    weight = module.weight.detach().double()
    return weight if isinstance(module, torch.nn.Linear) else weight.T


@pytest.mark.parametrize("last_layer", [False, True])
@pytest.mark.parametrize("block", ["attention", "ffn"])
@pytest.mark.parametrize("family", ["bert", "llama", "gpt2"])
def test_scales_solve_the_residual_stream_least_squares_by_hand(family, block, last_layer):
    """The kept units' scales of a block make the stream after it closest to the unpruned model's, given the
    blocks before it as tuned (in the last layer, every block before it was tuned; read with plain hooks on whole
    passes of the tuned model)."""
    model = tiny_model(family)
    sub_network = pruned_sub_network(model)
    tuned = copy.deepcopy(model)
    scales = tune_masks(tuned, model, sub_network, BATCHES)

    table = family_for(model)
    num_layers = len(layers_of(model))
    layer = num_layers - 1 if last_layer else 0
    assert layer > 0 or not last_layer  # a tiny model has more than one layer: the last is not the first
    projection = table.attention_out_proj if block == "attention" else table.ffn_down_proj
    unit_width = table.head_dim(model.config) * table.query_heads_per_unit(model.config) if block == "attention" else 1
    kept = (sub_network.kept_heads if block == "attention" else sub_network.kept_neurons)(layer)
    x_pruned, tuned_module = module_inputs(tuned, layer, projection, sub_network)
    site = stream_after(family, block, layer, num_layers)
    stream_pruned = module_inputs(tuned, *site, sub_network)[0]
    stream_full = module_inputs(model, *site, full_sub_network(model))[0]
    weight = dense_weight(layers_of(model)[layer].get_submodule(projection))
    # What the pruned stream holds besides the kept units' sum (residual + bias), with the tuned weights removed.
    rest = stream_pruned - x_pruned @ dense_weight(tuned_module).T
    design = torch.stack([
        (x_pruned[:, unit * unit_width:(unit + 1) * unit_width] @ weight[:, unit * unit_width:(unit + 1) * unit_width].T
         ).flatten() for unit in kept
    ], dim=1)  # one column per kept unit
    expected = torch.linalg.lstsq(design, (stream_full - rest).flatten()[:, None]).solution.flatten()

    got = torch.tensor(scales["heads" if block == "attention" else "neurons"][layer], dtype=torch.float64)
    if expected.abs().max() >= MAX_SCALE:  # (GPT-2's last FFN here) ill-conditioned: the block keeps scale 1
        torch.testing.assert_close(got, torch.ones_like(got))
        return
    assert not torch.allclose(expected, torch.ones_like(expected), atol=1e-2)  # the tuning does something here
    torch.testing.assert_close(got, expected, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("family", ["bert", "llama", "gpt2"])
def test_padding_has_no_say_in_the_scales(family):
    """The same examples, padded in batches or fed one by one without padding, give the same scales."""
    model = tiny_model(family)
    sub_network = pruned_sub_network(model)
    unpadded = [
        {"input_ids": batch["input_ids"][row][batch["attention_mask"][row].bool()][None],
         "attention_mask": torch.ones(1, int(batch["attention_mask"][row].sum()), dtype=torch.long),
         "labels": batch["labels"][row:row + 1]}
        for batch in BATCHES for row in range(len(batch["input_ids"]))
    ]
    padded_scales = tune_masks(copy.deepcopy(model), model, sub_network, BATCHES)
    unpadded_scales = tune_masks(copy.deepcopy(model), model, sub_network, unpadded)
    for kind in ("heads", "neurons"):
        for padded, alone in zip(padded_scales[kind], unpadded_scales[kind], strict=True):
            torch.testing.assert_close(torch.tensor(padded), torch.tensor(alone), rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("family", ["bert", "llama", "gpt2"])
def test_tuning_brings_the_output_closer_to_the_unpruned_model_and_keeps_the_parameter_count(family):
    model = tiny_model(family)
    sub_network = pruned_sub_network(model)
    tuned = copy.deepcopy(model)
    tune_masks(tuned, model, sub_network, BATCHES)
    assert count_parameters(tuned, sub_network) == count_parameters(model, sub_network)
    # the residual stream after the last block, before the final norm
    site = {"bert": (len(layers_of(model)) - 1, "output.LayerNorm"), "llama": (None, "norm"), "gpt2": (None, "ln_f")}
    target = module_inputs(model, *site[family], full_sub_network(model))[0]
    errors = [(module_inputs(candidate, *site[family], sub_network)[0] - target).pow(2).sum()
              for candidate in (model, tuned)]
    assert errors[1] < 0.9 * errors[0], errors


def test_streams_computed_once_serve_every_sub_network():
    """run_rfp.py tunes every budget against the same unpruned streams: tuning one sub-network must not change
    them, so the second sub-network's scales equal those of a tuning on its own."""
    model = tiny_model("bert")
    first = pruned_sub_network(model)
    second = SubNetwork(first.head_mask.clone(), first.ffn_mask.clone())
    second.ffn_mask[:, 1::3] = False
    shared = unpruned_streams(model, BATCHES)
    tune_masks(copy.deepcopy(model), model, first, BATCHES, targets=shared)
    after_first = tune_masks(copy.deepcopy(model), model, second, BATCHES, targets=shared)
    alone = tune_masks(copy.deepcopy(model), model, second, BATCHES)
    assert after_first == alone


def test_a_scale_beyond_the_bound_leaves_the_block_unscaled():
    """One unit, G = 1: the scale is 1 - c, and past MAX_SCALE the block keeps 1 (hand-computed)."""
    gram = torch.ones(1, 1, dtype=torch.float64)
    weight = torch.ones(1, 1, dtype=torch.float64)
    torch.testing.assert_close(solve_scales(gram, torch.tensor([[-1.0]], dtype=torch.float64), weight, 1),
                               torch.tensor([2.0]))
    bounded = solve_scales(gram, torch.tensor([[-(MAX_SCALE + 1)]], dtype=torch.float64), weight, 1)
    torch.testing.assert_close(bounded, torch.tensor([1.0]))


def test_tuned_extraction_tunes_a_copy_and_extracts_it():
    """run_rfp.py extracts every budget from the same fine-tuned model: tuning must leave that model as it was, and
    the extracted sub-network is the tuned copy's (with or without precomputed streams)."""
    from nas_llm.extraction.extract import extract_sub_network
    from nas_llm.extraction.lstsq import tuned_extraction

    model = tiny_model("bert")
    before = copy.deepcopy(model.state_dict())
    sub_network = pruned_sub_network(model)
    extracted, scales = tuned_extraction(model, sub_network, BATCHES)
    assert all(torch.equal(before[name], value) for name, value in model.state_dict().items())
    by_hand = copy.deepcopy(model)
    assert scales == tune_masks(by_hand, model, sub_network, BATCHES)
    reference = extract_sub_network(by_hand, sub_network).state_dict()
    assert all(torch.equal(reference[name], value) for name, value in extracted.state_dict().items())
    assert tuned_extraction(model, sub_network, BATCHES, targets=unpruned_streams(model, BATCHES))[1] == scales
