"""Seeding the search with RFP's answers (--initial_sub_networks): RFP's masks are the first evaluations, scored
with the super-network's weights, mapped onto its stored units, resumed without being evaluated twice."""

import json

import pytest
import tiny_runs
import torch
from tiny_runs import train

import run_rfp
from nas_llm.common.errors import UsageError
from nas_llm.data.data import DataArguments, load_raw_splits, make_dataloader, tokenize_splits
from nas_llm.model.models import load_supernet
from nas_llm.model.slicing import runner_for
from nas_llm.model.sub_network import SubNetwork
from nas_llm.search import offline
from nas_llm.training import evaluation

BUDGETS = (0.4, 0.6, 0.8)
NUM_SAMPLES = 6
SEARCH_DIR = "results_local_search_1"  # where tiny_runs.search writes a local search of seed 1


@pytest.fixture(scope="module")
def rfp_file(tmp_path_factory, trained_bert):
    """run_rfp.py's results for the session's tiny super-network taken as the fine-tuned model (its units are the
    pre-trained model's), budgets given out of order."""
    _, data_dir, checkpoint = trained_bert
    output_dir = tmp_path_factory.mktemp("rfp")
    run_rfp.main([
        "--checkpoint_dir_model", str(checkpoint), "--task_name", "rte", "--data_dir", str(data_dir),
        "--budgets", "0.8,0.4,0.6", "--num_calibration_samples", "16", "--calibration_batch_size", "8",
        "--tune_masks", "False", "--cost_seq_len", "16", "--latency_repeats", "1", "--output_dir", str(output_dir),
    ])
    return output_dir / "results_rte.json"


def rfp_masks(rfp_file) -> list[SubNetwork]:
    """RFP's sub-network per budget, read from its results file by hand."""
    points = json.loads(rfp_file.read_text())["pareto_set"]
    assert [point["budget"] for point in points] == list(BUDGETS)
    return [SubNetwork.from_json_dict(point["sub_network"]) for point in points]


def search(supernet, folder, *extra, num_samples=NUM_SAMPLES) -> dict:
    """A local search (seed 1) of `supernet` in `folder`."""
    return tiny_runs.search(folder, *supernet, "local_search", seed=1, extra=extra, num_samples=num_samples)


def logged(folder) -> list[dict]:
    return [json.loads(line) for line in (folder / SEARCH_DIR / "evaluations.jsonl").read_text().splitlines()]


def masked_validation_metrics(supernet, sub_network: SubNetwork) -> dict[str, float]:
    """The validation metrics of the super-network with the removed units zeroed (the masking reference, not the
    search's slicing), loaded and evaluated outside the search."""
    _, data_dir, checkpoint = supernet
    model, tokenizer, _ = load_supernet(str(checkpoint))
    data_args = DataArguments(task_name="rte", data_dir=str(data_dir))
    validation = tokenize_splits(load_raw_splits(data_args), tokenizer, data_args, ("validation",))["validation"]
    loader = make_dataloader(validation, tokenizer, 8, False, 0)
    return evaluation.evaluate(model.eval(), loader, "rte", torch.device("cpu"), sub_network, runner_for("mask"))


def is_prefix(mask: torch.Tensor) -> bool:
    return all(row[: int(row.sum())].all() for row in mask)


def non_dominated(records: list[dict]) -> list[int]:
    """By hand: the records no other record beats on error and params (no worse on both, better on one)."""
    def beats(a, b):
        return a["error"] <= b["error"] and a["params"] <= b["params"] and (a["error"], a["params"]) != (
            b["error"], b["params"])
    return [i for i, record in enumerate(records) if not any(beats(other, record) for other in records)]


@pytest.fixture(scope="module")
def seeded_and_plain(tmp_path_factory, trained_bert, rfp_file):
    folder = tmp_path_factory.mktemp("searches")
    seeded = search(trained_bert, folder / "seeded", "--initial_sub_networks", str(rfp_file))
    plain = search(trained_bert, folder / "plain")
    return seeded, logged(folder / "seeded"), plain, logged(folder / "plain")


def test_rfp_masks_are_the_first_evaluations_in_budget_order_scored_as_masked_by_hand(
        trained_bert, rfp_file, seeded_and_plain):
    _, records, _, _ = seeded_and_plain
    masks = rfp_masks(rfp_file)
    assert not all(is_prefix(mask.head_mask) and is_prefix(mask.ffn_mask) for mask in masks), \
        "RFP's masks must not all be prefixes, or the test could not tell units apart"
    seeds = records[: len(BUDGETS)]
    assert [record["seeded_from"] for record in seeds] == [
        {"method": "retraining_free_pruning", "budget": budget, "pareto_index": index}
        for index, budget in enumerate(BUDGETS)
    ]
    assert [record["iteration"] for record in seeds] == list(range(len(BUDGETS)))
    for record, mask in zip(seeds, masks, strict=True):
        assert SubNetwork.from_compact(record["sub_network_masks"]) == mask  # not reordered: RFP's units as they are
        assert record["validation"] == pytest.approx(masked_validation_metrics(trained_bert, mask), abs=1e-6)
        assert "config" not in record


def test_seeds_come_on_top_of_the_searcher_s_proposals_which_are_those_of_an_unseeded_run(seeded_and_plain):
    seeded, records, plain, plain_records = seeded_and_plain
    assert len(records) == len(BUDGETS) + NUM_SAMPLES and len(plain_records) == NUM_SAMPLES
    assert not any("seeded_from" in record for record in records[len(BUDGETS):])
    assert [record["config"] for record in records[len(BUDGETS):]] == [record["config"] for record in plain_records]
    assert [record["error"] for record in records[len(BUDGETS):]] == [record["error"] for record in plain_records]
    assert len(seeded["evaluations"]) == len(records)
    assert seeded["evaluations"][0]["seeded_from"]["budget"] == BUDGETS[0]


def test_seeds_join_the_pareto_set_like_any_evaluation(seeded_and_plain):
    seeded, records, _, _ = seeded_and_plain
    front = non_dominated(records)
    assert sorted(seeded["pareto_indices"]) == front
    assert [point["iteration"] for point in seeded["pareto_set"]] == seeded["pareto_indices"]


@pytest.fixture(scope="module")
def reordered(tmp_path_factory):
    """A tiny super-network of the same shape that stores its units most important first."""
    return train(tmp_path_factory.mktemp("reordered"), "bert", extra=("--reorder_units", "importance"))


def test_on_an_importance_ordered_super_network_rfp_s_counts_become_prefixes(tmp_path, reordered, rfp_file):
    search(reordered, tmp_path / "seeded", "--initial_sub_networks", str(rfp_file), num_samples=1)
    records = logged(tmp_path / "seeded")[: len(BUDGETS)]
    differs = False
    for record, point in zip(records, json.loads(rfp_file.read_text())["pareto_set"], strict=True):
        kept = point["sub_network"]
        # By hand: layer l keeps its first len(kept_heads[l]) heads and first len(kept_neurons[l]) neurons.
        expected = SubNetwork.from_json_dict(kept | {
            "kept_heads": [list(range(len(heads))) for heads in kept["kept_heads"]],
            "kept_neurons": [list(range(len(neurons))) for neurons in kept["kept_neurons"]],
        })
        assert SubNetwork.from_compact(record["sub_network_masks"]) == expected
        differs |= expected != SubNetwork.from_json_dict(kept)
        assert record["sub_network"]["heads_per_layer"] == [len(heads) for heads in kept["kept_heads"]]
        assert record["validation"] == pytest.approx(masked_validation_metrics(reordered, expected), abs=1e-6)
    assert differs, "some RFP mask must not be a prefix, or the test could not tell the mapping apart"


class Killed(Exception):
    """Stands for SIGKILL: nothing after it runs, and the log holds what was written before it."""


@pytest.mark.parametrize("killed_at", [2, len(BUDGETS) + 2])  # among the seeds; among the searcher's proposals
def test_a_seeded_search_killed_in_the_middle_resumes_to_the_uninterrupted_results(
        tmp_path, trained_bert, rfp_file, seeded_and_plain, monkeypatch, killed_at):
    seeded, records, _, _ = seeded_and_plain
    calls = []

    def evaluate_until_killed(*args):
        calls.append(args)
        if len(calls) > killed_at:
            raise Killed
        return evaluation.evaluate(*args)

    monkeypatch.setattr(offline, "evaluate", evaluate_until_killed)
    with pytest.raises(Killed):
        search(trained_bert, tmp_path / "resumed", "--initial_sub_networks", str(rfp_file))
    monkeypatch.undo()
    assert len(logged(tmp_path / "resumed")) == killed_at
    scored = []
    monkeypatch.setattr(offline, "evaluate", lambda *args: scored.append(args) or evaluation.evaluate(*args))
    resumed = search(trained_bert, tmp_path / "resumed", "--initial_sub_networks", str(rfp_file))
    keys = ("iteration", "seeded_from", "config", "sub_network_masks", "error", "validation", "params")
    assert [[r.get(k) for k in keys] for r in logged(tmp_path / "resumed")] == [[r.get(k) for k in keys]
                                                                                 for r in records]
    # Nothing logged is evaluated again: the rest of the evaluations, the Pareto set's test metrics, and the
    # unpruned network's validation and test metrics.
    assert len(scored) == (len(records) - killed_at) + len(seeded["pareto_set"]) + 2
    assert resumed["pareto_indices"] == seeded["pareto_indices"]
    assert [p["test"] for p in resumed["pareto_set"]] == [p["test"] for p in seeded["pareto_set"]]


def test_resuming_with_other_seeds_or_none_is_refused(tmp_path, trained_bert, rfp_file):
    seeds = tmp_path / "seeds.json"
    seeds.write_text(rfp_file.read_text())
    search(trained_bert, tmp_path / "run", "--initial_sub_networks", str(seeds), num_samples=1)
    with pytest.raises(UsageError, match=r"holds a run with --initial_sub_networks .*seeds.json \(sha256 .*\(this run: "
                                         r"None\)"):
        search(trained_bert, tmp_path / "run", num_samples=2)
    results = json.loads(seeds.read_text())
    seeds.write_text(json.dumps(results | {"pareto_set": results["pareto_set"][:2]}))  # same path, other seeds
    with pytest.raises(UsageError, match=r"holds a run with --initial_sub_networks .*seeds.json \(sha256 "):
        search(trained_bert, tmp_path / "run", "--initial_sub_networks", str(seeds), num_samples=2)


def edited(rfp_file, folder, edit) -> str:
    results = json.loads(rfp_file.read_text())
    edit(results)
    path = folder / "edited.json"
    path.write_text(json.dumps(results))
    return str(path)


def wider_heads(results: dict) -> None:
    for point in results["pareto_set"]:
        point["sub_network"]["num_head_units"] += 4


@pytest.mark.parametrize(("edit", "message"), [
    (lambda results: results.update(task_name="sst2"),
     "pruned --task_name sst2 but this search is for rte; pass run_rfp.py's results for rte"),
    (wider_heads, "pruned a model of ModelShape(num_layers=3, num_head_units=8, intermediate_size=20) but the "
                  "super-network has ModelShape(num_layers=3, num_head_units=4, intermediate_size=20)"),
    (lambda results: results.update(method=None), "is not a results file of run_rfp.py"),
])
def test_seeds_for_another_task_or_model_shape_or_not_rfp_s_are_refused_in_one_line(
        tmp_path, trained_bert, rfp_file, edit, message):
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")) as refused:
        search(trained_bert, tmp_path / "run", "--initial_sub_networks", edited(rfp_file, tmp_path, edit))
    assert "\n" not in str(refused.value)


def test_a_file_that_is_not_json_is_refused_in_one_line(tmp_path, trained_bert):
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(bytes(range(256)))
    with pytest.raises(UsageError, match="model.safetensors' is not a results file \\(not JSON: ") as refused:
        search(trained_bert, tmp_path / "run", "--initial_sub_networks", str(weights))
    assert "\n" not in str(refused.value)


def test_a_missing_seed_file_is_refused_before_anything_loads(tmp_path, trained_bert, monkeypatch):
    monkeypatch.setattr(offline, "load_supernet", lambda *args: pytest.fail("loaded the super-network"))
    with pytest.raises(UsageError, match="--initial_sub_networks '.*missing.json' does not exist; pass the "
                                         "results_<task>.json that run_rfp.py wrote"):
        search(trained_bert, tmp_path / "run", "--initial_sub_networks", str(tmp_path / "missing.json"))


def test_more_samples_for_a_finished_seeded_search_evaluate_only_the_new_proposals(
        tmp_path, trained_bert, rfp_file, seeded_and_plain, monkeypatch):
    _, records, _, _ = seeded_and_plain
    search(trained_bert, tmp_path / "run", "--initial_sub_networks", str(rfp_file))
    scored = []
    monkeypatch.setattr(offline, "evaluate", lambda *args: scored.append(args) or evaluation.evaluate(*args))
    grown = search(trained_bert, tmp_path / "run", "--initial_sub_networks", str(rfp_file),
                   num_samples=NUM_SAMPLES + 1)
    again = logged(tmp_path / "run")
    assert len(again) == len(records) + 1
    assert again[:-1] == [record | {"runtime_s": logged_record["runtime_s"]}
                          for record, logged_record in zip(records, again[:-1], strict=True)]
    assert len(scored) == 1 + len(grown["pareto_set"]) + 2  # the new proposal; the test metrics; the unpruned's


def test_with_multi_fidelity_the_seeds_race_like_any_evaluation(tmp_path, trained_bert, rfp_file):
    search(trained_bert, tmp_path / "raced", "--initial_sub_networks", str(rfp_file), "--multi_fidelity", "True",
           "--fidelity_shares", "0.5", num_samples=1)
    records = logged(tmp_path / "raced")
    assert all("fidelity" in record for record in records)
    assert [record["seeded_from"]["budget"] for record in records[: len(BUDGETS)]] == list(BUDGETS)
