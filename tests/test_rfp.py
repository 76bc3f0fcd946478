"""Retraining-free pruning: Fisher mask search under a budget, mask rearrangement, tuned checkpoints, results read
like a search's."""

import csv
import itertools
import json
import logging
import shutil
import time

import datasets
import numpy as np
import pytest
import torch
from support import reload_in_fresh_process, tiny_config, tiny_model
from tiny_runs import train
from transformers import AutoModelForSequenceClassification, AutoTokenizer

import plot_pareto
import run_rfp
import select_and_extract
from nas_llm.baselines.rfp import (
    RFPArguments,
    UnitCosts,
    calibration_data,
    layer_fisher,
    rearrange_layer,
    rearrange_masks,
    search_mask,
)
from nas_llm.common.errors import UsageError
from nas_llm.data.data import DataArguments, load_raw_splits, tokenize_splits
from nas_llm.extraction.extract import extract_sub_network, load_extracted, num_parameters
from nas_llm.extraction.lstsq import calibration_batches
from nas_llm.model.label_scale import LabelScale, set_label_scale
from nas_llm.model.models import load_supernet
from nas_llm.model.sub_network import SubNetwork
from nas_llm.training.importance import MaskGradients, UnitImportance, unit_importance

BUDGETS = (0.4, 0.6, 0.8)
# Mask gradients of 4 units on 2 batches: units 0 and 1 move the loss one way in batch 2, unit 2 the other way.
# Dropping two units: the diagonal Fisher (4, 4.41, 4.84, 9) drops 0 and 1, whose gradients add up:
# (2 + 2.1)^2 = 16.81; dropping 1 and 2 costs (2.1 - 2.2)^2 = 0.01, the least of the six pairs (by hand).
CORRELATED = torch.tensor([[0.0, 0.0, 0.0, 3.0], [2.0, 2.1, -2.2, 0.0]], dtype=torch.float64)


def drop_cost(gradients: torch.Tensor, dropped) -> float:
    """(1 - m)^T F (1 - m) with F = sum_b g_b g_b^T, computed as sum over batches of (sum of dropped gradients)^2."""
    return sum(sum(float(row[unit]) for unit in dropped) ** 2 for row in gradients)


def costs_of_choices(gradients: torch.Tensor, num_kept: int) -> tuple[float, float, float]:
    """(rearranged, diagonal choice, brute-force optimum over every mask keeping `num_kept` units) costs."""
    units = range(gradients.shape[1])
    rearranged = rearrange_layer(layer_fisher(gradients), num_kept)
    assert int(rearranged.sum()) == num_kept
    by_diagonal = sorted(units, key=lambda unit: float(gradients[:, unit].pow(2).sum()))
    num_dropped = len(units) - num_kept
    optimum = min(drop_cost(gradients, dropped) for dropped in itertools.combinations(units, num_dropped))
    return (drop_cost(gradients, (~rearranged).nonzero().flatten().tolist()),
            drop_cost(gradients, by_diagonal[:num_dropped]), optimum)


def test_mask_search_keeps_the_most_important_units_that_fit():
    # 2 layers, 2 head units (cost 10 each), 3 neurons (cost 1 each), nothing fixed: full cost 46.
    importance = UnitImportance(
        torch.tensor([[5.0, 1.0], [0.5, 4.0]]), torch.tensor([[3.0, 0.1, 2.0], [1.0, 0.2, 0.3]]), num_batches=1
    )
    costs = UnitCosts(full=46.0, fixed=0.0, head_unit=10.0, neuron=1.0)
    sub_network = search_mask(importance, costs, 25 / 46)  # by hand: 2 heads (5, 4) + 5 neurons (3, 2, 1, .3, .2)
    assert sub_network.head_mask.tolist() == [[True, False], [False, True]]
    assert sub_network.ffn_mask.tolist() == [[True, False, True], [True, True, True]]
    only_neurons = search_mask(importance, costs, 6 / 46)  # no room for a head: all 6 neurons
    assert not only_neurons.head_mask.any() and only_neurons.ffn_mask.all()
    with pytest.raises(UsageError, match="budget"):
        search_mask(importance, UnitCosts(full=46.0, fixed=30.0, head_unit=10.0, neuron=1.0), 0.5)


def test_rearrangement_finds_the_pair_that_cancels_where_the_diagonal_choice_does_not():
    assert rearrange_layer(layer_fisher(CORRELATED), 2).tolist() == [True, False, False, True]
    for num_kept in range(5):
        rearranged, diagonal, optimum = costs_of_choices(CORRELATED, num_kept)
        assert rearranged == pytest.approx(optimum, abs=1e-9) and rearranged <= diagonal + 1e-9
    assert costs_of_choices(CORRELATED, 2) == pytest.approx((0.01, 16.81, 0.01))


def test_rearrangement_is_never_worse_than_the_diagonal_choice_nor_better_than_the_optimum():
    generator = torch.Generator().manual_seed(0)
    for _ in range(10):
        gradients = torch.randn(3, 8, generator=generator)  # 3 batches: a rank-3 Fisher block of 8 units
        for num_kept in range(9):
            rearranged, diagonal, optimum = costs_of_choices(gradients, num_kept)
            assert optimum - 1e-9 <= rearranged <= diagonal + 1e-9


def test_rearranged_masks_keep_each_layers_counts():
    # Layer 0's heads are the hand-made block; its neurons keep all or none, which rearrangement leaves alone.
    head_gradients = torch.stack([CORRELATED, CORRELATED.flip(1)], dim=1)  # [batches, layers, units]
    neuron_gradients = torch.randn(2, 2, 3)
    searched = SubNetwork(torch.tensor([[False, False, True, True], [False, True, True, True]]),  # layer 0: diagonal
                          torch.tensor([[True, True, True], [False, False, False]]))
    rearranged = rearrange_masks(searched, MaskGradients(head_gradients, neuron_gradients))
    assert rearranged.head_mask[0].tolist() == [True, False, False, True]  # drops 1 and 2, as worked out above
    assert rearranged.head_mask.sum(1).tolist() == searched.head_mask.sum(1).tolist()
    assert torch.equal(rearranged.ffn_mask, searched.ffn_mask)


@pytest.fixture(scope="module")
def fine_tuned(tmp_path_factory):
    """(model_dir, data_dir, checkpoint) of a tiny BERT fine-tuned with --sampling_strategy standard."""
    return train(tmp_path_factory.mktemp("fine_tuned"), "bert", strategy="standard")


def run(fine_tuned, output_dir, *flags, budgets=BUDGETS) -> dict:
    _, data_dir, checkpoint = fine_tuned
    run_rfp.main([
        "--checkpoint_dir_model", str(checkpoint), "--task_name", "rte", "--data_dir", str(data_dir),
        "--budgets", ",".join(map(str, budgets)), "--num_calibration_samples", "16", "--calibration_batch_size", "8",
        "--cost_seq_len", "16", "--latency_repeats", "1", "--output_dir", str(output_dir), *flags,
    ])
    return json.loads((output_dir / "results_rte.json").read_text())


def test_rfp_writes_one_tuned_point_per_budget_within_it_and_extraction_takes_its_weights(tmp_path, fine_tuned):
    _, _, checkpoint = fine_tuned
    output_dir = tmp_path / "rfp"
    results = run(fine_tuned, output_dir)
    assert results["rearrange_masks"] and results["tune_masks"]
    assert [point["budget"] for point in results["pareto_set"]] == list(BUDGETS)
    fine_tuned = load_supernet(checkpoint)[0]
    for point in results["pareto_set"]:
        assert point["layer_params"] <= point["budget"]
        untuned = extract_sub_network(fine_tuned, SubNetwork.from_json_dict(point["sub_network"])).state_dict()
        tuned = load_extracted(point["trial_checkpoint_dir"]).state_dict()  # this budget's tuned, extracted model
        assert tuned.keys() == untuned.keys()
        assert all(tuned[name].shape == untuned[name].shape for name in tuned)
        assert not all(torch.equal(tuned[name], untuned[name]) for name in tuned)  # the scales are in the weights
    plot_pareto.main([str(output_dir / "results_rte.json"), "--output", str(tmp_path / "pareto.png")])
    assert (tmp_path / "pareto.png").stat().st_size > 0

    extracted_dir = tmp_path / "pruned"
    select_and_extract.main(["--results", str(output_dir / "results_rte.json"), "--pareto_index", "1",
                             "--output_dir", str(extracted_dir)])
    report = json.loads((extracted_dir / "extraction.json").read_text())
    assert report["matches_search"]  # the copied checkpoint scores what run_rfp.py recorded: the tuned weights
    assert report["num_parameters"] == results["pareto_set"][1]["num_parameters"]
    assert num_parameters(load_extracted(extracted_dir)) == report["num_parameters"]


def test_an_rfp_point_is_recovered_from_the_model_rfp_pruned_and_reloads_with_its_recovered_metric(
    tmp_path, fine_tuned
):
    """Row "RFP + recovery": select_and_extract.py --recover_epochs on a point of run_rfp.py distils it from the
    fine-tuned model it was pruned from; the checkpoint keeps the point's size and RFP's code, holds the recovered
    weights, and scores, loaded by transformers alone in a fresh process, the test accuracy the report records."""
    _, data_dir, checkpoint = fine_tuned
    results = run(fine_tuned, tmp_path / "rfp", budgets=(0.5,))
    point = results["pareto_set"][0]
    select_and_extract.main([
        "--results", str(tmp_path / "rfp" / "results_rte.json"), "--pareto_index", "0", "--recover_epochs", "2",
        "--recover_keep_best", "False", "--recover_batch_size", "8", "--output_dir", str(tmp_path / "models" / "rfp"),
    ])
    report = json.loads((tmp_path / "models" / "rfp" / "extraction.json").read_text())
    assert report["recovery"]["settings"]["teacher"] == str(checkpoint.resolve())
    assert report["num_parameters"] == point["num_parameters"]
    recovered = load_extracted(tmp_path / "models" / "rfp").state_dict()
    pruned = load_extracted(point["trial_checkpoint_dir"]).state_dict()
    assert recovered.keys() == pruned.keys() and not all(torch.equal(recovered[k], pruned[k]) for k in recovered)

    rows = list(csv.DictReader((data_dir / "RTE" / "dev.tsv").open(), delimiter="\t", quoting=csv.QUOTE_NONE))
    batch = AutoTokenizer.from_pretrained(tmp_path / "models" / "rfp")(
        [row["sentence1"] for row in rows], [row["sentence2"] for row in rows], padding=True, return_tensors="pt"
    )
    torch.save(dict(batch), tmp_path / "batch.pt")
    logits = reload_in_fresh_process(tmp_path / "models", tmp_path / "batch.pt")["rfp"]["logits"]
    label2id = json.loads((tmp_path / "models" / "rfp" / "config.json").read_text())["label2id"]
    labels = torch.tensor([label2id[row["label"]] for row in rows])
    accuracy = (logits.argmax(1) == labels).float().mean().item()
    assert report["recovery"]["test_after"]["accuracy"] == pytest.approx(accuracy, abs=1e-6)


def test_a_standard_nas_point_needs_a_teacher_to_be_recovered_and_never_least_squares(tmp_path, fine_tuned):
    results = run(fine_tuned, tmp_path / "rfp", budgets=(0.5,))
    del results["fine_tuned_checkpoint"]  # as run_standard_nas.py writes them: no fine-tuned model to learn from
    (tmp_path / "results.json").write_text(json.dumps(results))
    for flags, message in ((["--recover_epochs", "1"], "give --teacher_model_name_or_path"),
                           (["--recover_lstsq", "True"], "--recover_lstsq applies to sub-networks")):
        with pytest.raises(UsageError, match=message):
            select_and_extract.main(["--results", str(tmp_path / "results.json"), "--pareto_index", "0", *flags,
                                     "--output_dir", str(tmp_path / "never")])
    assert not (tmp_path / "never").exists()


def test_rearrangement_keeps_the_searched_counts_and_without_it_the_masks_are_the_searched_ones(tmp_path, fine_tuned):
    budgets = (0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
    searched = run(fine_tuned, tmp_path / "searched", "--rearrange_masks", "False", "--tune_masks", "False",
                   budgets=budgets)
    rearranged = run(fine_tuned, tmp_path / "rearranged", "--tune_masks", "False", budgets=budgets)
    assert (searched["rearrange_masks"], rearranged["rearrange_masks"]) == (False, True)
    assert searched["search_strategy"] == "fisher_mask_search"
    assert rearranged["search_strategy"] == "fisher_mask_search+rearrangement"
    # The reference: Algorithm 1 on the Fisher diagonal of the same calibration batches, outside run_rfp.py.
    _, data_dir, checkpoint = fine_tuned
    model, tokenizer, _ = load_supernet(checkpoint)
    data_args = DataArguments(task_name="rte", data_dir=str(data_dir))
    train_set = tokenize_splits(load_raw_splits(data_args), tokenizer, data_args)["train"]
    importance = unit_importance(model, calibration_batches(train_set, tokenizer, 16, 8, seed=42))
    unit_costs = UnitCosts.measure(model, "params", 16)
    changed = 0
    for before, after in zip(searched["pareto_set"], rearranged["pareto_set"], strict=True):
        searched_mask, rearranged_mask = (SubNetwork.from_json_dict(p["sub_network"]) for p in (before, after))
        assert searched_mask == search_mask(importance, unit_costs, before["budget"])
        assert rearranged_mask.head_mask.sum(1).tolist() == searched_mask.head_mask.sum(1).tolist()
        assert rearranged_mask.ffn_mask.sum(1).tolist() == searched_mask.ffn_mask.sum(1).tolist()
        assert after["layer_params"] == before["layer_params"] <= after["budget"]
        changed += rearranged_mask != searched_mask
    assert changed  # rearrangement chose other units somewhere


def test_a_stopped_run_keeps_its_finished_budgets_and_computes_the_others_as_an_uninterrupted_run(
        tmp_path, fine_tuned):
    uninterrupted = run(fine_tuned, tmp_path / "uninterrupted")
    output_dir = tmp_path / "stopped"
    run(fine_tuned, output_dir, budgets=BUDGETS[:2])  # as if stopped before the last budget
    log = output_dir / "evaluations.jsonl"
    logged = [json.loads(line) for line in log.read_text().splitlines()]
    assert [record["budget"] for record in logged] == list(BUDGETS[:2])
    # Mark the first budget's record and pretend its session took 1000 s: a kept budget is read, not recomputed.
    logged[0] |= {"error_before_tuning": 123.0, "elapsed_s": 1000.0}
    log.write_text("".join(json.dumps(record) + "\n" for record in logged) + '{"budget": 0.8, "err')  # cut short
    started = time.time()
    resumed = run(fine_tuned, output_dir)
    assert [point["iteration"] for point in resumed["pareto_set"]] == [0, 1, 2]
    assert resumed["pareto_set"][0]["error_before_tuning"] == 123.0
    for point, reference in zip(resumed["pareto_set"], uninterrupted["pareto_set"], strict=True):
        assert (point["budget"], point["sub_network"]) == (reference["budget"], reference["sub_network"])
        assert point["error"] == pytest.approx(reference["error"]) and point["test"] == pytest.approx(reference["test"])
    assert 1000.0 < resumed["runtime_s"] < 1000.0 + time.time() - started
    assert len(log.read_text().splitlines()) == 3
    with pytest.raises(UsageError, match="holds a run with --seed 42 \\(this run: 7\\)"):
        run(fine_tuned, output_dir, "--seed", "7")
    fresh = run(fine_tuned, output_dir, "--seed", "7", "--overwrite_output_dir", "True", budgets=BUDGETS[:1])
    assert fresh["seed"] == 7 and len(log.read_text().splitlines()) == 1


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, fine_tuned):
    """(output_dir, results, log messages) of run_rfp.py at its defaults on BUDGETS, logged at INFO."""
    output_dir = tmp_path_factory.mktemp("finished_rfp")
    handler = RecordingHandler()
    logging.getLogger("nas_llm.baselines.rfp").addHandler(handler)
    started = time.time()
    try:
        results = run(fine_tuned, output_dir)
    finally:
        logging.getLogger("nas_llm.baselines.rfp").removeHandler(handler)
    assert results["runtime_s"] <= time.time() - started  # a fresh run adds no earlier session's time
    return output_dir, results, handler.messages


class RecordingHandler(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.messages = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_the_results_file_says_what_was_pruned_from_what_and_how(tmp_path, fine_tuned, finished_run):
    model_dir, data_dir, checkpoint = fine_tuned
    output_dir, results, messages = finished_run
    nas_settings = json.loads((checkpoint / "nas_settings.json").read_text())
    assert (results["method"], results["search_space"], results["objectives"]) == (
        "retraining_free_pruning", "large", ["error", "params"])
    assert results["search_strategy"] == "fisher_mask_search+rearrangement+lstsq"
    assert (results["model_name_or_path"], results["sampling_strategy"]) == (nas_settings["model_name_or_path"],
                                                                             "standard")
    assert results["fine_tuned_checkpoint"] == str(checkpoint.resolve()) and results["checkpoint_dir_model"] is None
    assert (results["num_calibration_samples"], results["device"], results["num_samples"]) == (16, "cpu", 3)
    assert results["settings"]["data"]["data_dir"] == str(data_dir.resolve())
    points = [(point["error"], point["params"]) for point in results["pareto_set"]]
    dominated = [any(other != point and other[0] <= point[0] and other[1] <= point[1] for other in points)
                 for point in points]  # by hand
    assert [point["dominated"] for point in results["pareto_set"]] == dominated
    assert results["pareto_indices"] == [index for index, flag in enumerate(dominated) if not flag]
    # Before tuning: the rearranged masks' model as extracted without least squares (a run that does not tune).
    untuned = run(fine_tuned, tmp_path / "untuned", "--tune_masks", "False")
    for point, evaluation, untuned_point in zip(results["pareto_set"], results["evaluations"], untuned["pareto_set"],
                                                strict=True):
        assert point["constraint"] == "params" and point["validation"]["error"] == point["error"]
        assert point["error_before_tuning"] == pytest.approx(untuned_point["error"])
        assert evaluation["sub_network"] == SubNetwork.from_json_dict(point["sub_network"]).summary()
        assert point["latency_ms"] > 0  # every budget's model gets a latency
        assert 0 < point["runtime_s"] <= point["elapsed_s"] <= results["runtime_s"]
        assert (f"budget {point['budget']:g}: validation error {point['error']:.4f} "
                f"({point['error_before_tuning']:.4f} before tuning), params {point['params']:.3f}") in messages
    handler = RecordingHandler()
    logging.getLogger("nas_llm.baselines.rfp").addHandler(handler)
    try:
        run(fine_tuned, output_dir, budgets=BUDGETS[:2])  # both finished: read back, not pruned again
    finally:
        logging.getLogger("nas_llm.baselines.rfp").removeHandler(handler)
    assert f"Resumed budgets 0.4, 0.6, 0.8 from {output_dir / 'evaluations.jsonl'}" in handler.messages


@pytest.mark.parametrize(("flag", "value"), [
    ("--constraint", "flops"), ("--num_calibration_samples", "8"), ("--calibration_batch_size", "4"),
    ("--rearrange_masks", "False"), ("--tune_masks", "False"), ("--cost_seq_len", "8"),
    ("--latency_batch_size", "2"), ("--max_eval_samples", "10"), ("--checkpoint_dir_model", "copy"),
])
def test_resuming_with_another_setting_is_refused_naming_it(tmp_path, fine_tuned, finished_run, flag, value):
    output_dir, *_ = finished_run
    if value == "copy":  # the same weights elsewhere: another fine-tuned model as far as the run can tell
        value = str(shutil.copytree(fine_tuned[2], tmp_path / "copy"))
    name = "data" if flag == "--max_eval_samples" else flag.removeprefix("--")
    with pytest.raises(UsageError, match=f"holds a run with --{name} "):
        run(fine_tuned, output_dir, flag, value)


def test_a_flops_budget_keeps_the_units_algorithm_1_chooses_under_flops_costs(tmp_path, fine_tuned):
    results = run(fine_tuned, tmp_path / "flops", "--constraint", "flops", "--rearrange_masks", "False",
                  "--tune_masks", "False", budgets=(0.5,))
    # The reference, outside run_rfp.py: the Fisher scores of the same calibration batches, MACs at 16 tokens.
    _, data_dir, checkpoint = fine_tuned
    model, tokenizer, _ = load_supernet(checkpoint)
    data_args = DataArguments(task_name="rte", data_dir=str(data_dir))
    train_set = tokenize_splits(load_raw_splits(data_args), tokenizer, data_args)["train"]
    importance = unit_importance(model, calibration_batches(train_set, tokenizer, 16, 8, seed=42))
    expected = search_mask(importance, UnitCosts.measure(model, "flops", 16), 0.5)
    (point,) = results["pareto_set"]
    assert SubNetwork.from_json_dict(point["sub_network"]) == expected
    assert point["constraint"] == "flops" and point["flops"] <= 0.5


def test_calibration_batches_are_a_seeded_subset_with_standardised_regression_labels(tiny_bert_tokenizer):
    labels = [float(index % 11) / 2 for index in range(40)]
    train_split = datasets.Dataset.from_dict({
        "input_ids": [tiny_bert_tokenizer(f"the cat sat {'on the mat ' * (index % 3)}")["input_ids"]
                      for index in range(40)],
        "label": labels,
    })
    model = tiny_model("bert", num_labels=1)
    set_label_scale(model.config, LabelScale(mean=2.0, std=0.5))
    args = RFPArguments(checkpoint_dir_model="unused", num_calibration_samples=16, calibration_batch_size=8)
    np.random.seed(7)  # the subset follows --seed, not the global generator (an unseeded shuffle draws from it)
    batches = calibration_data(model, train_split, tiny_bert_tokenizer, args)
    chosen = train_split.shuffle(seed=args.seed)["label"][:16]  # the seeded subset, by hand
    # evaluation batches are sorted by length, so compare the labels as multisets
    assert sorted(torch.cat([batch["labels"] for batch in batches]).tolist()) == pytest.approx(
        sorted((label - 2.0) / 0.5 for label in chosen))
    assert [len(batch["labels"]) for batch in batches] == [8, 8]


def test_rearranging_equally_important_units_keeps_the_earlier_ones():
    # no unit interacts with another and all matter alike: the earlier half is kept, whatever the number of units
    assert rearrange_layer(torch.eye(200), 100).nonzero().flatten().tolist() == list(range(100))
    assert rearrange_layer(torch.ones(1, 1), 1).tolist() == [True]  # a layer of one unit, kept
    assert rearrange_layer(torch.ones(1, 1), 0).tolist() == [False]


def test_bad_budgets_are_refused(tmp_path):
    with pytest.raises(UsageError, match="--budgets"):
        run_rfp.main(["--checkpoint_dir_model", str(tmp_path), "--task_name", "rte", "--budgets", "0.5,1.5"])


@pytest.mark.parametrize("constraint, head_unit, neuron, fixed", [
    # Tiny BERT (hidden 16, 4 heads of 4, 20 neurons, 3 layers), by hand. A head: Q, K, V rows 3 x 4 x (16 + 1 bias)
    # and out_proj columns 4 x 16: 268 parameters; a neuron: 16 + 1 in, 16 out: 33. Per layer outside units: out_proj
    # and FFN-output biases (2 x 16) and two LayerNorms (2 x 32): 96 per layer, 288 for 3 layers.
    ("params", 3 * 4 * 17 + 4 * 16, 33, 288),
    # MACs at 16 tokens: a head's weights 3 x 4 x 16 + 4 x 16 = 256 per token plus scores and weighted sum
    # 2 x 16 x 4 = 128 per token; a neuron 32 per token. Fixed: pooler 16 x 16 and classifier 2 x 16, once.
    ("flops", 16 * (256 + 128), 16 * 32, 16 * 16 + 2 * 16),
])
def test_unit_costs_are_the_hand_counted_cost_of_a_head_and_a_neuron(constraint, head_unit, neuron, fixed):
    costs = UnitCosts.measure(tiny_model("bert"), constraint, 16)
    assert (costs.head_unit, costs.neuron, costs.fixed) == (head_unit, neuron, fixed)
    assert costs.full == fixed + 12 * head_unit + 60 * neuron


def test_unit_costs_of_a_model_of_one_layer_with_one_head_and_one_neuron():
    config = tiny_config("bert")
    config.num_hidden_layers, config.num_attention_heads, config.intermediate_size = 1, 1, 1
    costs = UnitCosts.measure(AutoModelForSequenceClassification.from_config(config), "params", 16)
    # the head: Q, K, V rows 3 x 16 x (16 + 1) and out_proj columns 16 x 16; the neuron 16 + 1 in, 16 out. Each is
    # the last unit of its block, and a block without units is skipped with its output bias and LayerNorm (16 + 32),
    # so these count with the unit and nothing is left fixed
    assert (costs.head_unit, costs.neuron, costs.fixed) == (3 * 16 * 17 + 16 * 16 + 48, 33 + 48, 0)


@pytest.mark.parametrize("flags, message", [
    ({"constraint": "latency"}, "^unknown --constraint 'latency'; choose one of: params, flops$"),
    ({"num_calibration_samples": 0}, "^--num_calibration_samples must be positive, got 0$"),
    ({"calibration_batch_size": 0}, "^--calibration_batch_size must be positive, got 0$"),
    ({"per_device_eval_batch_size": -1}, "^--per_device_eval_batch_size must be positive, got -1$"),
    ({"budgets": "0.5,half"}, "^--budgets must be comma-separated numbers such as 0.5,0.7, got '0.5,half'$"),
    ({"budgets": "0,0.5"}, r"^every --budgets value must lie in \(0, 1\], got 0,0.5$"),
])
def test_bad_rfp_flags_are_one_line_errors_naming_the_flag(flags, message):
    with pytest.raises(UsageError, match=message):
        RFPArguments(checkpoint_dir_model="model", **flags)


@pytest.mark.parametrize("tied", ["heads", "neurons"])
def test_mask_search_keeps_the_first_of_equally_important_units(tied):
    """200 units of importance 1, 2 or 3 (many ties) and room for 100: the 100 most important, and among equals the
    lowest indices, whatever the sort algorithm's size threshold (an unstable sort reorders ties from ~100 units)."""
    scores = torch.randint(1, 4, (1, 200), generator=torch.Generator().manual_seed(0)).float()
    one_unit = torch.tensor([[0.5]])
    heads, neurons = (scores, one_unit) if tied == "heads" else (one_unit, scores)
    costs = UnitCosts(full=1200.0, fixed=0.0, head_unit=1.0 if tied == "heads" else 1000.0,
                      neuron=1.0 if tied == "neurons" else 1000.0)
    sub_network = search_mask(UnitImportance(heads, neurons, num_batches=1), costs, 100 / 1200)
    kept = (sub_network.head_mask if tied == "heads" else sub_network.ffn_mask)[0].nonzero().flatten().tolist()
    by_hand = sorted(sorted(range(200), key=lambda unit: (-float(scores[0, unit]), unit))[:100])
    assert kept == by_hand


def test_mask_search_weighs_every_kept_unit_s_importance():
    # 1 layer: heads of importance 10 and 0.1 (cost 10 each), 30 neurons of 0.5 (cost 1), room for 25. By hand:
    # no head 25 x 0.5 = 12.5; one head 10 + 15 x 0.5 = 17.5; two heads 10.1 + 5 x 0.5 = 12.6: one head.
    importance = UnitImportance(torch.tensor([[10.0, 0.1]]), torch.full((1, 30), 0.5), num_batches=1)
    sub_network = search_mask(importance, UnitCosts(full=50.0, fixed=0.0, head_unit=10.0, neuron=1.0), 25 / 50)
    assert sub_network.head_mask.tolist() == [[True, False]] and int(sub_network.ffn_mask.sum()) == 15
    # One head of 3 (cost 10), neurons 4, 0.1, ..., 0.1 (cost 1), room for 11. By hand: no head 4 + 10 x 0.1 = 5;
    # the head and the first neuron 3 + 4 = 7.
    importance = UnitImportance(torch.tensor([[3.0]]), torch.tensor([[4.0] + [0.1] * 11]), num_batches=1)
    sub_network = search_mask(importance, UnitCosts(full=22.0, fixed=0.0, head_unit=10.0, neuron=1.0), 11 / 22)
    assert sub_network.head_mask.tolist() == [[True]] and sub_network.ffn_mask.tolist() == [[True] + [False] * 11]


def test_budgets_up_to_the_whole_model_are_accepted():
    assert RFPArguments(checkpoint_dir_model="model", budgets="1.0,0.5").budget_list == [0.5, 1.0]


def test_mask_search_with_the_whole_budget_keeps_every_unit_and_on_a_tie_the_fewer_heads():
    importance = UnitImportance(torch.tensor([[10.0, 0.1]]), torch.full((1, 30), 1.0), num_batches=1)
    costs = UnitCosts(full=50.0, fixed=0.0, head_unit=10.0, neuron=1.0)
    assert search_mask(importance, costs, 1.0).is_full()
    # Room for 25: no head 25 x 1 = 25, one head 10 + 15 x 1 = 25 (a tie: the first found, no head, stays).
    tie = search_mask(importance, costs, 25 / 50)
    assert not tie.head_mask.any() and int(tie.ffn_mask.sum()) == 25


def test_a_budget_below_the_fixed_cost_says_how_much_that_is():
    importance = UnitImportance(torch.tensor([[1.0]]), torch.tensor([[1.0]]), num_batches=1)
    with pytest.raises(UsageError, match=r"^budget 0.01 is below what the model costs with no head and no neuron "
                                         r"\(0.011 of it\); raise --budgets$"):
        search_mask(importance, UnitCosts(full=46.0, fixed=0.5, head_unit=10.0, neuron=1.0), 0.01)
