"""Standard NAS: Syne Tune fine-tunes every sub-network on its own; the results read like a search's."""

import json
from datetime import datetime

import numpy as np
import pytest
import torch
from syne_tune.backend.trial_status import Trial
from syne_tune.config_space import randint
from syne_tune.optimizer.scheduler import SchedulerDecision
from syne_tune.report import retrieve
from tiny_runs import search
from transformers import AutoModelForSequenceClassification

import plot_pareto
import run_standard_nas
import select_and_extract
from nas_llm.baselines.standard_nas import (
    SETTINGS_FILE,
    TRIALS_DIR,
    NonDominatedRank,
    make_scheduler,
    prepare_output_dir,
)
from nas_llm.common.errors import UsageError
from nas_llm.extraction.extract import extract_sub_network, load_extracted, num_parameters
from nas_llm.model.sub_network import SubNetwork


def test_non_dominated_rank_is_each_trials_place_in_the_sort():
    # (error, params): c is dominated by a and b, b by a: three fronts, whatever the order of the rows.
    a, b, c = (0.1, 0.2), (0.2, 0.3), (0.5, 0.6)
    assert NonDominatedRank()(np.array([c, a, b])).tolist() == [2, 0, 1]
    # Two non-dominated trials come first (the lower error first), the dominated one last.
    assert NonDominatedRank()(np.array([(0.4, 0.9), (0.9, 0.1), (0.5, 0.95)])).tolist() == [0, 1, 2]


def result(epoch: int, error: float, params: float) -> dict:
    return {"epoch": epoch, "error": error, "params": params}


def test_moasha_stops_dominated_trials_at_the_first_rung_but_never_the_unpruned_network():
    config_space = {"num_layers": randint(1, 3), "constant": "x"}
    unpruned = {"num_layers": 3, "constant": "x"}
    scheduler = make_scheduler("moasha", config_space, unpruned, epochs=3, reduction_factor=3, max_trials=5, seed=0)
    trials = []
    for trial_id in range(5):
        suggestion = scheduler.suggest()
        trials.append(Trial(trial_id=trial_id, config=suggestion.config, creation_time=datetime.now()))
        scheduler.on_trial_add(trials[-1])
    assert trials[0].config == unpruned and all(trial.config["constant"] == "x" for trial in trials)
    assert scheduler.suggest() is None  # --num_samples 5: the tuner then waits for the running trials

    decide = scheduler.on_trial_result
    # At the rung of epoch 1 a trial continues only if it ranks in the best third of the trials seen there.
    assert decide(trials[1], result(1, 0.2, 0.3)) == SchedulerDecision.CONTINUE  # first at the rung
    assert decide(trials[2], result(1, 0.1, 0.2)) == SchedulerDecision.CONTINUE  # dominates trial 1: rank 0
    assert decide(trials[3], result(1, 0.8, 0.9)) == SchedulerDecision.STOP  # dominated by both: rank 2 of 3
    assert decide(trials[0], result(1, 0.9, 1.0)) == SchedulerDecision.CONTINUE  # dominated too, but the reference
    assert decide(trials[4], result(1, 0.05, 0.9)) == SchedulerDecision.CONTINUE  # lowest error: non-dominated
    assert decide(trials[1], result(2, 0.2, 0.3)) == SchedulerDecision.CONTINUE  # no rung at epoch 2
    assert decide(trials[0], result(3, 0.2, 1.0)) == SchedulerDecision.CONTINUE  # ends by itself after epoch 3


def test_random_search_samples_the_space_after_the_unpruned_network_and_stops_nothing():
    config_space = {"num_layers": randint(1, 3), "num_heads": randint(1, 4)}
    unpruned = {"num_layers": 3, "num_heads": 4}
    scheduler = make_scheduler("random_search", config_space, unpruned, epochs=2, reduction_factor=3, max_trials=9,
                               seed=0)
    configs = [scheduler.suggest().config for _ in range(9)]
    assert scheduler.suggest() is None and configs[0] == unpruned
    assert all(1 <= c["num_layers"] <= 3 and 1 <= c["num_heads"] <= 4 for c in configs)
    assert len({tuple(c.values()) for c in configs[1:]}) > 1  # sampled, not one config repeated
    for trial_id, config in enumerate(configs):
        trial = Trial(trial_id=trial_id, config=config, creation_time=datetime.now())
        scheduler.on_trial_add(trial)
        assert scheduler.on_trial_result(trial, result(1, 0.9 - 0.1 * trial_id, 0.5)) == SchedulerDecision.CONTINUE


def test_a_directory_with_an_earlier_run_is_refused_unless_overwritten(tmp_path):
    results = tmp_path / "results_rte.json"
    (tmp_path / SETTINGS_FILE).write_text("{}")
    (tmp_path / TRIALS_DIR / "0").mkdir(parents=True)
    with pytest.raises(UsageError, match="holds an interrupted standard-NAS run"):
        prepare_output_dir(tmp_path, results, overwrite=False)
    results.write_text("{}")
    with pytest.raises(UsageError, match=r"holds a finished standard-NAS run \(results_rte.json\)"):
        prepare_output_dir(tmp_path, results, overwrite=False)
    prepare_output_dir(tmp_path, results, overwrite=True)
    assert not results.exists() and not (tmp_path / TRIALS_DIR).exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        ([], "give standard NAS a budget: --num_samples, --max_wallclock_time or both"),
        (["--num_samples", "2", "--use_accelerate", "True"], "drop --use_accelerate"),
        (["--num_samples", "2", "--scheduler", "hyperband"], "unknown --scheduler 'hyperband'"),
    ],
)
def test_bad_flags_are_refused_before_anything_is_written(tmp_path, extra, message):
    with pytest.raises(UsageError, match=message):
        run_standard_nas.main([
            "--model_name_or_path", "unused", "--task_name", "rte", "--output_dir", str(tmp_path / "out"), *extra
        ])
    assert not (tmp_path / "out").exists()


def test_standard_nas_runs_trials_with_syne_tune_and_plots_next_to_a_weight_sharing_search(
    tmp_path, capsys, monkeypatch, trained_bert
):
    model_dir, data_dir, checkpoint = trained_bert
    working_dir = tmp_path / "cwd"
    working_dir.mkdir()
    monkeypatch.chdir(working_dir)
    output_dir = tmp_path / "standard_nas"
    argv = [
        "--model_name_or_path", str(model_dir), "--task_name", "rte", "--data_dir", str(data_dir),
        "--output_dir", str(output_dir), "--search_space", "small", "--scheduler", "moasha", "--max_epochs", "3",
        "--n_workers", "2", "--num_samples", "6", "--max_wallclock_time", "600", "--per_device_train_batch_size",
        "8", "--learning_rate", "1e-3", "--seed", "0", "--cost_seq_len", "16", "--latency_repeats", "1",
    ]
    run_standard_nas.main(argv)
    results_file = output_dir / "results_rte.json"
    results = json.loads(results_file.read_text())
    assert list(working_dir.iterdir()) == []  # nothing left in the user's working directory

    # Six trials, run by Syne Tune's Tuner as LocalBackend subprocesses, reporting once per epoch.
    evaluations = results["evaluations"]
    assert [e["trial_id"] for e in evaluations] == list(range(6))
    metadata = json.loads((output_dir / "syne-tune" / "metadata.json").read_text())
    assert metadata["backend"] == "LocalBackend" and metadata["scheduler_name"] == "MOASHA"
    for e in evaluations:
        printed = retrieve((output_dir / TRIALS_DIR / str(e["trial_id"]) / "std.out").read_text().splitlines())
        assert [report["epoch"] for report in printed][: e["epochs"]] == list(range(1, e["epochs"] + 1))
        assert len(e["learning_curve"]) == e["epochs"] and e["learning_curve"][-1] == e["error"]
    # The unpruned network trains all epochs; a trial MO-ASHA stopped ends at a rung before the last epoch.
    # (Which trials it stops depends on the order in which the two workers report, so that they are
    # stopped is checked deterministically in test_moasha_stops_dominated_trials_at_the_first_rung_...)
    assert evaluations[0]["params"] == 1.0 and evaluations[0]["epochs"] == 3
    assert results["unpruned"]["epochs"] == 3 and "error" in results["unpruned"]["validation"]
    assert all(e["epochs"] < 3 for e in evaluations if e["stopped_early"]), [e["epochs"] for e in evaluations]
    assert results["wallclock_s"] > 0 and results["device_hours"] > 0

    # Every Pareto point keeps its own fine-tuned, genuinely smaller model: as many weights as the point counts.
    assert results["pareto_set"]
    for point in results["pareto_set"]:
        model = load_extracted(point["trial_checkpoint_dir"])
        assert num_parameters(model) == point["num_parameters"]
        assert "accuracy" in point["test"]

    # A rerun is refused with what to do, and leaves the results as they were.
    before = results_file.read_bytes()
    with pytest.raises(UsageError, match="holds a finished standard-NAS run.*--overwrite_output_dir True"):
        run_standard_nas.main(argv)
    assert results_file.read_bytes() == before

    # Plotted next to a weight-sharing search; select_and_extract takes a point with its own weights.
    search(tmp_path, model_dir, data_dir, checkpoint, "random_search")
    search_file = tmp_path / "results_random_search_0" / "results_rte.json"
    plot_pareto.main([str(search_file), str(results_file), "--output", str(tmp_path / "pareto.png"), "--table"])
    assert (tmp_path / "pareto.png").stat().st_size > 1000
    hypervolumes = json.loads((tmp_path / "pareto.json").read_text())["hypervolume"]
    assert set(hypervolumes) == {str(search_file), str(results_file)}
    assert capsys.readouterr().out.count("| 1.000 (unpruned) |") == 2

    select_and_extract.main(["--results", str(results_file), "--pareto_index", "0", "--output_dir",
                             str(tmp_path / "pruned")])
    report = json.loads((tmp_path / "pruned" / "extraction.json").read_text())
    assert report["matches_search"] and report["num_parameters"] == results["pareto_set"][0]["num_parameters"]
    copied = load_extracted(tmp_path / "pruned").state_dict()
    trial = load_extracted(results["pareto_set"][0]["trial_checkpoint_dir"]).state_dict()
    assert copied.keys() == trial.keys() and all(torch.equal(copied[name], trial[name]) for name in trial)
    # ... fine-tuned from the pre-trained weights: the same sub-network extracted untrained differs.
    sub_network = SubNetwork.from_json_dict(results["pareto_set"][0]["sub_network"])
    untrained = extract_sub_network(AutoModelForSequenceClassification.from_pretrained(model_dir), sub_network)
    name = "bert.embeddings.word_embeddings.weight"  # in every sub-network, also one without layers
    assert untrained.state_dict()[name].shape == trial[name].shape
    assert not torch.equal(untrained.state_dict()[name], trial[name])
