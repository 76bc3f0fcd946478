"""Importance scores are the Fisher information of unit masks; reordering keeps the function and puts them first."""

import copy
import json
import logging
import re
import time

import numpy as np
import pytest
import torch
from support import tiny_batch, tiny_config, tiny_model
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tiny_assets import write_tiny_model_dir, write_tiny_rte
from torch.utils.tensorboard import SummaryWriter
from transformers import AutoModelForCausalLM

import train_supernet
from nas_llm.common.errors import UsageError
from nas_llm.model.families import family_for, layers_of
from nas_llm.model.mask import masked
from nas_llm.model.slicing import sliced
from nas_llm.model.sub_network import SubNetwork
from nas_llm.training.importance import MaskGradients, UnitImportance, mask_gradients, unit_importance
from nas_llm.training.language_modeling import LANGUAGE_MODELING
from nas_llm.training.objective import task_loss
from nas_llm.training.reorder import IMPORTANCE_FILE, reorder_by_importance, report_importance

BATCHES = [tiny_batch(batch_size=4, seed=seed) for seed in range(3)]


def logits_of(model, batch, sub_network=None, run_as=sliced):
    inputs = {key: value for key, value in batch.items() if key != "labels"}
    with torch.no_grad():
        if sub_network is None:
            return model(**inputs).logits
        with run_as(model, sub_network):
            return model(**inputs).logits


def out_projection_weights(model, layer, name: str):
    """(weight, axis of its input units) of the attention output or FFN down projection, read off the module."""
    module = layer.get_submodule(name)
    weight = module.weight
    # nn.Linear stores (out, in); GPT-2's Conv1D stores (in, out)
    return weight, 1 if isinstance(module, torch.nn.Linear) else 0


def gradients_through_output_projections(model, loss) -> tuple[torch.Tensor, torch.Tensor]:
    """dLoss/dm of every head unit and neuron, read off the weights instead of gates: scaling a unit's output by m
    scales its input slice of the output projection, so dL/dm = <W_slice, dL/dW_slice>. [layers, units] each."""
    family = family_for(model)
    unit_width = family.head_dim(model.config) * family.query_heads_per_unit(model.config)
    model.zero_grad(set_to_none=True)
    loss.backward()
    rows = {family.attention_out_proj: [], family.ffn_down_proj: []}
    for layer in layers_of(model):
        for name, width in ((family.attention_out_proj, unit_width), (family.ffn_down_proj, 1)):
            weight, axis = out_projection_weights(model, layer, name)
            rows[name].append((weight * weight.grad).sum(dim=1 - axis).reshape(-1, width).sum(dim=1))
    return torch.stack(rows[family.attention_out_proj]), torch.stack(rows[family.ffn_down_proj])


def test_mask_gradients_equal_output_projection_gradients(family_name):
    model = tiny_model(family_name)
    gradients = mask_gradients(model, BATCHES[:2])
    assert all(p.grad is None for p in model.parameters())  # scoring leaves the weights' gradients alone
    for batch_index, batch in enumerate(BATCHES[:2]):
        inputs = {key: value for key, value in batch.items() if key != "labels"}
        heads, neurons = gradients_through_output_projections(model, task_loss(model(**inputs).logits, batch["labels"]))
        assert torch.allclose(gradients.heads[batch_index], heads, atol=1e-6)
        assert torch.allclose(gradients.neurons[batch_index], neurons, atol=1e-6)
    importance = unit_importance(model, BATCHES[:2])
    assert torch.allclose(importance.heads, gradients.heads.pow(2).sum(0))
    assert importance.num_batches == 2


def test_importance_is_the_sum_over_batches_of_the_squared_mask_gradients():
    gradients = MaskGradients(
        heads=torch.tensor([[[-1.0, 2.0]], [[3.0, -0.5]]]),
        neurons=torch.tensor([[[0.5, -2.0, 0.0]], [[-1.5, 1.0, 2.0]]]),
    )
    importance = UnitImportance.from_gradients(gradients)
    assert torch.equal(importance.heads, torch.tensor([[1.0 + 9.0, 4.0 + 0.25]]))
    assert torch.equal(importance.neurons, torch.tensor([[0.25 + 2.25, 4.0 + 1.0, 0.0 + 4.0]]))
    assert importance.num_batches == 2


def test_no_batches_to_score_is_an_error(family_name):
    with pytest.raises(ValueError, match="^no batches to compute mask gradients on$"):
        mask_gradients(tiny_model(family_name), [])


def descending_stable_order(scores: list[float]) -> list[int]:
    """Reference: Python's sort is stable, so tied units keep their original order."""
    return sorted(range(len(scores)), key=lambda unit: -scores[unit])


def test_unit_orders_are_most_important_first_with_ties_in_their_original_order():
    """Ties are common (units no batch reaches score 0), and the order decides which of them a prefix keeps:
    20 units of which 11 tie, enough for an unstable sort to shuffle them."""
    layers = [[0.0, 1.0, 0.0, 3.0, 1.0] * 4, [float(unit % 3) for unit in range(20)]]
    importance = UnitImportance(heads=torch.tensor(layers), neurons=torch.tensor(layers[::-1]), num_batches=1)
    assert importance.head_order().tolist() == [descending_stable_order(scores) for scores in layers]
    assert importance.neuron_order().tolist() == [descending_stable_order(scores) for scores in layers[::-1]]


def test_the_scores_file_names_the_estimator_and_holds_scores_and_orders():
    importance = UnitImportance(torch.tensor([[0.5, 2.0]]), torch.tensor([[3.0, 1.0, 4.0]]), num_batches=3)
    assert importance.to_json_dict() == {
        "estimator": "fisher: sum over batches of squared mask gradients (Kwon et al. 2022)",
        "num_batches": 3,
        "head_importance": [[0.5, 2.0]],
        "neuron_importance": [[3.0, 1.0, 4.0]],
        "head_order": [[1, 0]],
        "neuron_order": [[2, 0, 1]],
    }


def test_a_language_model_is_reordered_by_the_fisher_importance_of_its_next_token_loss():
    """Reference: the loss transformers computes from `labels` (next-token cross-entropy), through the weights."""
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_config("llama")).eval()
    reference = copy.deepcopy(model)
    blocks = [{"input_ids": batch["input_ids"], "labels": batch["input_ids"]} for batch in BATCHES]
    importance = reorder_by_importance(model, blocks, LANGUAGE_MODELING)
    gradients = [gradients_through_output_projections(reference, reference(**block).loss) for block in blocks]
    assert torch.allclose(importance.heads, sum(heads.pow(2) for heads, _ in gradients), rtol=1e-4, atol=1e-12)
    assert torch.allclose(importance.neurons, sum(neurons.pow(2) for _, neurons in gradients), rtol=1e-4, atol=1e-12)
    assert importance.num_batches == len(blocks)


def test_reordering_logs_how_many_batches_it_scored_and_how_long_it_took(caplog):
    model = tiny_model("bert")
    start = time.time()
    with caplog.at_level(logging.INFO, logger="nas_llm.training.reorder"):
        reorder_by_importance(model, BATCHES)
    elapsed = time.time() - start
    found = re.fullmatch(
        r"Stored every layer's head units and neurons most important first \(Fisher scores on 3 batches, "
        r"(\d+\.\d) s\)",
        caplog.records[-1].getMessage(),
    )
    assert found and 0 <= float(found[1]) <= elapsed + 0.05


def test_importance_histograms_are_logged_per_layer_at_step_0(tmp_path):
    importance = UnitImportance(torch.rand(3, 4), torch.rand(3, 20), num_batches=2)
    writer = SummaryWriter(str(tmp_path / "tb"))
    report_importance(importance, tmp_path, writer)
    writer.close()
    accumulator = EventAccumulator(str(tmp_path / "tb"))
    accumulator.Reload()
    assert sorted(accumulator.Tags()["histograms"]) == sorted(
        f"importance/{kind}/layer_{layer}" for kind in ("heads", "neurons") for layer in range(3)
    )
    for layer in range(3):
        for kind, scores in (("heads", importance.heads[layer]), ("neurons", importance.neurons[layer])):
            (event,) = accumulator.Histograms(f"importance/{kind}/layer_{layer}")
            assert event.step == 0
            histogram = event.histogram_value
            assert histogram.num == len(scores)
            assert histogram.sum == pytest.approx(scores.sum().item(), rel=1e-6)
            assert (histogram.min, histogram.max) == pytest.approx((scores.min().item(), scores.max().item()))
    assert json.loads((tmp_path / IMPORTANCE_FILE).read_text())["head_importance"] == importance.heads.tolist()


def test_reordering_keeps_the_full_network_and_moves_units(family_name):
    model = tiny_model(family_name)
    reference = copy.deepcopy(model)
    importance = reorder_by_importance(model, BATCHES)
    num_units = importance.heads.shape[1]
    assert not torch.equal(importance.head_order(), torch.arange(num_units).expand_as(importance.heads))
    assert not torch.equal(
        importance.neuron_order(), torch.arange(importance.neurons.shape[1]).expand_as(importance.neurons)
    )
    for batch in BATCHES:
        assert (logits_of(model, batch) - logits_of(reference, batch)).abs().max() <= 1e-5
    changed = [
        name for (name, before), after in zip(reference.named_parameters(), model.parameters(), strict=True)
        if not torch.equal(before, after)
    ]
    assert changed  # the weights really were permuted


def test_prefix_after_reordering_is_the_most_important_units_before(family_name):
    """Independent reference: the original model, masked to keep each layer's top-k units by importance."""
    model = tiny_model(family_name)
    reference = copy.deepcopy(model)
    importance = reorder_by_importance(model, BATCHES)
    num_layers, num_units = importance.heads.shape
    intermediate_size = importance.neurons.shape[1]
    for keep_heads, keep_neurons in ((1, 1), (num_units // 2, intermediate_size // 2), (num_units - 1, 3)):
        prefix = SubNetwork(
            torch.arange(num_units).expand(num_layers, -1) < keep_heads,
            torch.arange(intermediate_size).expand(num_layers, -1) < keep_neurons,
        )
        top_k = SubNetwork(
            torch.zeros(num_layers, num_units, dtype=torch.bool).scatter(
                1, importance.head_order()[:, :keep_heads], True
            ),
            torch.zeros(num_layers, intermediate_size, dtype=torch.bool).scatter(
                1, importance.neuron_order()[:, :keep_neurons], True
            ),
        )
        for batch in BATCHES:
            expected = logits_of(reference, batch, top_k, masked)
            assert (logits_of(model, batch, prefix, sliced) - expected).abs().max() <= 1e-5
            assert (logits_of(model, batch, prefix, masked) - expected).abs().max() <= 1e-5



def test_training_reorders_once_writes_the_scores_and_refuses_a_resume_without_it(tmp_path):
    model_dir = write_tiny_model_dir(tmp_path / "model", "gpt2")
    data_dir = write_tiny_rte(tmp_path / "glue")
    output_dir = tmp_path / "supernet"
    arguments = [
        "--model_name_or_path", str(model_dir), "--task_name", "rte", "--data_dir", str(data_dir),
        "--output_dir", str(output_dir), "--log_dir", str(tmp_path / "tb"), "--num_train_epochs", "1",
        "--per_device_train_batch_size", "8", "--seed", "0", "--reorder_units", "importance",
        "--num_importance_batches", "2",
    ]
    train_supernet.main(arguments)
    scores = json.loads((output_dir / IMPORTANCE_FILE).read_text())
    assert scores["num_batches"] == 2
    assert np.array(scores["head_importance"]).shape == (3, 4) and np.array(scores["neuron_order"]).shape == (3, 20)
    settings = json.loads((output_dir / "nas_settings.json").read_text())
    assert settings["reorder_units"] == "importance" and settings["num_importance_batches"] == 2
    accumulator = EventAccumulator(str(tmp_path / "tb" / "train-supernet"))
    accumulator.Reload()
    assert "importance/heads/layer_0" in accumulator.Tags()["histograms"]
    resume = [*arguments, "--resume_from_checkpoint", "latest", "--num_train_epochs", "2"]
    resume[resume.index("importance")] = "none"
    with pytest.raises(UsageError, match="--reorder_units importance but this run asks for --reorder_units none"):
        train_supernet.main(resume)
