"""End to end: train a tiny super-network, then search it, through both entry scripts."""

import json
import time
from pathlib import Path

import pytest
import torch
from support import FAMILY_NAMES
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tiny_assets import UNEVEN_TEXTS, padded_and_single_logits, write_tiny_model_dir, write_tiny_rte
from tiny_runs import record_tokenized_splits, scalar_tags, search, train
from transformers import AutoConfig, AutoModelForSequenceClassification

import plot_pareto
import run_offline_search
import select_and_extract
import train_supernet
from nas_llm.common.errors import UsageError
from nas_llm.common.flags import SEARCH_STRATEGIES
from nas_llm.data import lm_data
from nas_llm.model.models import load_tokenizer
from nas_llm.model.search_spaces import SEARCH_SPACES
from nas_llm.model.sub_network import SubNetwork
from nas_llm.search import offline


@pytest.fixture(scope="session", params=FAMILY_NAMES)
def trained_family(request, tmp_path_factory):
    """(folder, (model_dir, data_dir, checkpoint)) of one tiny super-network per family, shared by the tests."""
    folder = tmp_path_factory.mktemp(f"trained_{request.param}")
    return folder, train(folder, request.param)


def test_train_writes_checkpoint_tensorboard_and_results(trained_family):
    folder, (_, _, checkpoint) = trained_family
    for name in ("model.safetensors", "config.json", "tokenizer.json", "nas_settings.json", "results.json"):
        assert (checkpoint / name).is_file(), name
    assert (checkpoint / "checkpoint-1" / "model.safetensors").is_file()
    results = json.loads((checkpoint / "results.json").read_text())
    assert set(results["validation"]) >= {"accuracy", "error"} and "accuracy" in results["test"]
    assert results["num_steps"] == 4  # 28 training examples (70% of 40) in batches of 8
    assert results["smallest_sub_network"]["num_parameters"] < results["num_parameters"]
    assert {"train/loss_largest", "train/loss_smallest", "train/loss_random", "train/learning_rate",
            "validation/largest/accuracy", "validation/smallest/accuracy"} <= scalar_tags(
        folder / "tb_train" / "train-supernet"  # one TensorBoard run per stage: <stage>-<output_dir name>
    )


def test_search_reports_every_evaluation_and_the_pareto_set(tmp_path, trained_family):
    results = search(tmp_path, *trained_family[1], "local_search")
    assert len(results["evaluations"]) == 10
    assert all(0 < e["params"] <= 1 and 0 <= e["error"] <= 1 and "config" in e for e in results["evaluations"])
    pareto = results["pareto_indices"]
    assert pareto and len(results["pareto_set"]) == len(pareto)
    for point in results["pareto_set"]:
        assert "accuracy" in point["test"] and len(point["sub_network"]["kept_heads"]) == 3
    run = tmp_path / "tb_search" / "search-results_local_search_0"
    assert {"search/error", "search/params"} <= scalar_tags(run)


def test_search_is_reproducible_for_a_seed(tmp_path, trained_bert):
    model_dir, data_dir, checkpoint = trained_bert
    first = search(tmp_path, model_dir, data_dir, checkpoint, "random_search", seed=3)
    again = search(
        tmp_path, model_dir, data_dir, checkpoint, "random_search", seed=3, extra=["--overwrite_output_dir", "True"]
    )
    assert [e["config"] for e in first["evaluations"]] == [e["config"] for e in again["evaluations"]]
    assert [e["error"] for e in first["evaluations"]] == [e["error"] for e in again["evaluations"]]




def test_rerunning_a_finished_search_loads_nothing_and_leaves_the_results_unchanged(
    tmp_path, monkeypatch, trained_bert
):
    model_dir, data_dir, checkpoint = trained_bert
    tokenized_splits = record_tokenized_splits(monkeypatch, lm_data)  # run_offline_search's evaluation_splits
    start = time.perf_counter()
    results = search(tmp_path, model_dir, data_dir, checkpoint, "random_search", extra=["--objective", "latency"])
    search_time = time.perf_counter() - start
    assert tokenized_splits == [["test", "validation"]]  # the search never trains: no training split tokenised
    for point in results["pareto_set"]:  # the latencies the Pareto set was chosen on, not a second measurement
        ranked_on = results["evaluations"][point["iteration"]]
        assert (point["latency_ms"], point["latency_iqr_ms"]) == (ranked_on["latency_ms"], ranked_on["latency_iqr_ms"])
    results_path = tmp_path / "results_random_search_0" / "results_rte.json"
    finished = results_path.read_bytes()

    def must_not_run(*args, **kwargs):
        raise AssertionError("a finished search must not load a model or data")

    monkeypatch.setattr(offline, "load_supernet", must_not_run)
    monkeypatch.setattr(lm_data, "load_raw_splits", must_not_run)
    start = time.perf_counter()
    search(tmp_path, model_dir, data_dir, checkpoint, "random_search", extra=["--objective", "latency"])
    assert time.perf_counter() - start < 0.1 * search_time
    assert results_path.read_bytes() == finished
    with pytest.raises(AssertionError, match="must not load"):  # other results settings: the results are redone
        search(
            tmp_path, model_dir, data_dir, checkpoint, "random_search",
            extra=["--objective", "latency", "--max_test_samples", "5"],
        )


@pytest.mark.parametrize("strategy", SEARCH_STRATEGIES)
def test_every_search_starts_with_the_largest_smallest_and_mid_size_sub_network(tmp_path, trained_bert, strategy):
    search(tmp_path, *trained_bert, strategy, extra=["--num_samples", "4"])
    log = (tmp_path / f"results_{strategy}_0" / "evaluations.jsonl").read_text().splitlines()
    first = [SubNetwork.from_compact(json.loads(line)["sub_network_masks"]).summary() for line in log[:3]]
    assert first == [  # the tiny BERT: 3 layers of 4 heads and 20 neurons
        {"heads_per_layer": [4, 4, 4], "neurons_per_layer": [20, 20, 20]},
        {"heads_per_layer": [1, 0, 0], "neurons_per_layer": [1, 0, 0]},
        {"heads_per_layer": [2, 2, 2], "neurons_per_layer": [10, 10, 10]},
    ]
    assert len(log) == 4


def test_plot_select_and_extract_after_a_search(trained_bert, tmp_path, capsys, monkeypatch):
    model_dir, data_dir, checkpoint = trained_bert
    flops_results = search(tmp_path, model_dir, data_dir, checkpoint, "random_search", extra=["--objective", "flops"])
    assert all(point["latency_ms"] > 0 for point in flops_results["pareto_set"])  # measured for the Pareto set
    monkeypatch.chdir(checkpoint.parent)  # a relative checkpoint path, as typed on a command line
    search(tmp_path, model_dir, data_dir, Path(checkpoint.name), "nsga2")
    results_files = [str(tmp_path / f"results_{name}_0" / "results_rte.json") for name in ("random_search", "nsga2")]

    plot_pareto.main([*results_files, "--output", str(tmp_path / "pareto.png"), "--table"])
    assert (tmp_path / "pareto.png").stat().st_size > 1000
    printed = capsys.readouterr().out
    assert "| 1.000 (unpruned) |" in printed and printed.count("hypervolume") == 2
    hypervolumes = json.loads((tmp_path / "pareto.json").read_text())["hypervolume"]
    assert all(0 < value <= 1 for value in hypervolumes.values())

    tokenized_splits = record_tokenized_splits(monkeypatch, lm_data)
    monkeypatch.chdir(tmp_path / "results_nsga2_0")  # the recorded data flags hold from any directory
    select_and_extract.main(["--results", results_files[1], "--max_params", "0.99", "--output_dir", "../pruned"])
    report = json.loads((tmp_path / "pruned" / "extraction.json").read_text())
    assert tokenized_splits == [["test"]]
    assert report["data"]["task_name"] == "rte" and report["data"]["data_dir"] == str(data_dir.resolve())
    assert report["matches_search"], report
    assert report["pareto_point"]["params"] <= 0.99
    assert report["num_parameters"] == report["pareto_point"]["num_parameters"]
    assert (tmp_path / "pruned" / "model.safetensors").is_file()
    extracted = AutoConfig.from_pretrained(tmp_path / "pruned", trust_remote_code=True)
    assert extracted.id2label == {0: "entailment", 1: "not_entailment"}
    card = (tmp_path / "pruned" / "README.md").read_text()
    assert f"| parameters | {report['num_parameters']:,} (" in card
    assert f"| test accuracy | {report['test_extracted']['accuracy']:.4f} |" in card
    assert "`0`: entailment, `1`: not_entailment" in card
    kept = json.loads(Path(results_files[1]).read_text())["pareto_set"]  # the card's sub-network is the chosen one
    chosen = next(point for point in kept if point["num_parameters"] == report["num_parameters"])
    assert f"- attention heads per layer: {[len(h) for h in chosen['sub_network']['kept_heads']]}" in card
    assert ("trust_remote_code=True)" in card) == (report["checkpoint_kind"] == "custom_code")

    cheapest = min(point["params"] for point in json.loads(Path(results_files[1]).read_text())["pareto_set"])
    with pytest.raises(UsageError, match=rf"the cheapest Pareto points have params {cheapest:.3g}\); relax it"):
        select_and_extract.main([
            "--results", results_files[1], "--max_params", "0.01", "--output_dir", str(tmp_path / "never_written"),
        ])
    assert not (tmp_path / "never_written").exists()

    select_and_extract.main([  # flags given override the recorded ones
        "--results", results_files[1], "--pareto_index", "0", "--max_test_samples", "5",
        "--output_dir", str(tmp_path / "pruned_on_5"),
    ])
    report = json.loads((tmp_path / "pruned_on_5" / "extraction.json").read_text())
    assert report["data"]["max_test_samples"] == 5 and report["data"]["task_name"] == "rte"

def test_ats_alternates_its_steps_then_searches_and_extracts(tmp_path):
    model_dir, data_dir, checkpoint = train(tmp_path, "bert", strategy="ats")  # 4 steps, losses logged after each
    accumulator = EventAccumulator(str(tmp_path / "tb_train" / "train-supernet"))
    accumulator.Reload()
    assert [event.step for event in accumulator.Scalars("train/loss_random")] == [1, 3]  # after steps 0 and 2
    assert [event.step for event in accumulator.Scalars("train/loss_largest")] == [2, 4]
    assert "train/loss_smallest" not in accumulator.Tags()["scalars"]
    assert json.loads((checkpoint / "nas_settings.json").read_text())["sampling_strategy"] == "ats"

    search(tmp_path, model_dir, data_dir, checkpoint, "random_search")
    results_file = tmp_path / "results_random_search_0" / "results_rte.json"
    select_and_extract.main([
        "--results", str(results_file), "--max_params", "0.99", "--output_dir", str(tmp_path / "pruned"),
    ])
    report = json.loads((tmp_path / "pruned" / "extraction.json").read_text())
    assert report["matches_search"], report
    assert report["pareto_point"]["params"] <= 0.99 and (tmp_path / "pruned" / "model.safetensors").is_file()


@pytest.mark.parametrize("family", ["gpt2", "llama", "qwen2"])
def test_decoders_released_without_a_pad_token_train_search_and_extract_on_padded_batches(tmp_path, family):
    """Library-default token ids (no pad token) and a tokenizer without one, as GPT-2, Llama and Qwen2 ship:
    training, search and extraction batch examples of different lengths, and the extracted classifier scores
    a padded batch as it scores each example alone."""
    model_dir, data_dir, checkpoint = train(tmp_path, family, token_ids=False)
    results = search(tmp_path, model_dir, data_dir, checkpoint, "random_search")
    assert len(results["evaluations"]) == 10
    select_and_extract.main([
        "--results", str(tmp_path / "results_random_search_0" / "results_rte.json"), "--max_params", "0.99",
        "--output_dir", str(tmp_path / "pruned"),
    ])
    assert json.loads((tmp_path / "pruned" / "extraction.json").read_text())["matches_search"]
    extracted = AutoModelForSequenceClassification.from_pretrained(tmp_path / "pruned", trust_remote_code=True)
    batched, single = padded_and_single_logits(extracted, load_tokenizer(str(tmp_path / "pruned")), UNEVEN_TEXTS)
    assert torch.allclose(batched, single, atol=1e-5)


@pytest.mark.parametrize("family", ["llama", "mistral", "qwen2"])
def test_released_decoder_configs_train_and_search_in_every_space(tmp_path, family):
    """Library-default configs (use_cache=True, as released Qwen2/Llama/Mistral checkpoints ship) with
    sub-networks that drop layers: training and search run through the scripts in every space."""
    model_dir = write_tiny_model_dir(tmp_path / "model", family)
    assert json.loads((model_dir / "config.json").read_text())["use_cache"] is True
    data_dir = write_tiny_rte(tmp_path / "glue", num_train=12, num_dev=4)
    for space in SEARCH_SPACES:
        checkpoint, results_dir = tmp_path / space / "supernet", tmp_path / space / "results"
        train_supernet.main([
            "--model_name_or_path", str(model_dir), "--task_name", "rte", "--data_dir", str(data_dir),
            "--output_dir", str(checkpoint), "--log_dir", str(tmp_path / "tb"), "--search_space", space,
            "--sampling_strategy", "sandwich", "--num_random_sub_nets", "3", "--num_train_epochs", "1",
            "--per_device_train_batch_size", "4", "--save_strategy", "no", "--seed", "0",
            *(["--reorder_units", "importance"] if space == "importance" else []),
        ])
        run_offline_search.main([
            "--model_name_or_path", str(model_dir), "--task_name", "rte", "--data_dir", str(data_dir),
            "--checkpoint_dir_model", str(checkpoint), "--search_space", space, "--num_samples", "6",
            "--output_dir", str(results_dir), "--log_dir", str(tmp_path / "tb"), "--cost_seq_len", "16",
        ])
        evaluations = json.loads((results_dir / "results_rte.json").read_text())["evaluations"]
        assert len(evaluations) == 6, space
        if space.startswith("layer"):
            assert any(0 in e["sub_network"]["heads_per_layer"] for e in evaluations), space
