"""Recovery (select_and_extract.py --recover_epochs): the extracted model, fine-tuned from a teacher, keeps its
size, learns (a distillation loss computed here with plain torch drops), and ships as a checkpoint that reloads in
a fresh process with the metric extraction.json records; --recover_epochs 0 changes nothing."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import datasets
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import spearmanr
from support import reload_in_fresh_process
from tiny_runs import logits_on, record_tokenized_splits, scalar_tags
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

import run_offline_search
import select_and_extract
from nas_llm.common.errors import UsageError
from nas_llm.data import lm_data
from nas_llm.extraction.extract import extract_sub_network
from nas_llm.extraction.recovery import RecoveryArguments, fine_tune
from nas_llm.model.cost import count_parameters
from nas_llm.model.search_spaces import make_search_space
from nas_llm.training.teacher import Teacher

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import evaluate_checkpoint  # noqa: E402

# Tiny BERT: 3 layers, 4 heads, 20 FFN neurons. All heads: a standard checkpoint; fewer heads: custom code.
SUB_NETWORKS = {
    "standard": {"num_layers": 2, "num_heads": 4, "num_units": 9},
    "custom_code": {"num_layers": 2, "num_heads": 2, "num_units": 9},
}
RECOVERY_FLAGS = ["--recover_epochs", "3", "--recover_learning_rate", "3e-3", "--recover_batch_size", "16"]


def results_with_one_point(run, root: Path, sub_network_configs: dict[str, dict]) -> dict[str, Path]:
    """A results file per sub-network: a real search's, with that sub-network as its one Pareto point."""
    run_offline_search.main([
        "--model_name_or_path", str(run.model_dir), *run.data_flags(), "--checkpoint_dir_model", str(run.supernet),
        "--search_space", "small", "--search_strategy", "random_search", "--num_samples", "3",
        "--output_dir", str(root / "search"), "--log_dir", str(root / "tb"), "--cost_seq_len", "16",
        "--latency_repeats", "1",
    ])
    results = json.loads((root / "search" / "results_custom.json").read_text())
    space = make_search_space("small", AutoConfig.from_pretrained(run.supernet))
    results_files = {}
    for name, config in sub_network_configs.items():
        point = results["pareto_set"][0] | {"sub_network": space.to_sub_network(config).to_json_dict()}
        results_files[name] = root / f"results_{name}.json"
        results_files[name].write_text(json.dumps(results | {"pareto_set": [point]}))
    return results_files


@pytest.fixture(scope="module")
def toy(tmp_path_factory, toy_classification):
    """The session's tiny classification super-network, and a results file per checkpoint kind whose one Pareto
    point is that kind."""
    root = tmp_path_factory.mktemp("recovery")
    run = toy_classification
    supernet = AutoModelForSequenceClassification.from_pretrained(run.supernet).eval()
    space = make_search_space("small", supernet.config)
    return run, supernet, space, results_with_one_point(run, root, SUB_NETWORKS)


def distillation_loss_on_training_split(student, teacher, run) -> float:
    """T = 1: cross-entropy to the teacher's soft labels + cross-entropy to the labels, by hand."""
    student_logits, labels = logits_on(student, run, "train")
    teacher_logits, _ = logits_on(teacher, run, "train")
    soft = F.cross_entropy(student_logits, F.softmax(teacher_logits, dim=-1))
    return float(soft + F.cross_entropy(student_logits, torch.as_tensor(labels)))


@pytest.mark.parametrize("kind", list(SUB_NETWORKS))
def test_recovery_keeps_the_size_learns_and_reloads_with_its_metric(toy, tmp_path, kind):
    run, supernet, space, results_files = toy
    output_dir = tmp_path / "pruned"
    select_and_extract.main([
        "--results", str(results_files[kind]), "--pareto_index", "0", *RECOVERY_FLAGS,
        "--output_dir", str(output_dir), "--log_dir", str(tmp_path / "tb"),
    ])
    report = json.loads((output_dir / "extraction.json").read_text())
    sub_network = space.to_sub_network(SUB_NETWORKS[kind])
    assert report["checkpoint_kind"] == kind
    assert report["num_parameters"] == count_parameters(supernet, sub_network).total
    recovery = report["recovery"]
    assert recovery["settings"]["epochs"] == 3 and recovery["settings"]["teacher"] == str(run.supernet)
    assert recovery["test_before"] == report["test_extracted"]
    assert recovery["num_steps"] == 3 * -(-recovery["num_train_examples"] // 16)

    extracted = extract_sub_network(supernet, sub_network)
    recovered = AutoModelForSequenceClassification.from_pretrained(output_dir, trust_remote_code=True).eval()
    changed = [
        name for name, tensor in recovered.state_dict().items()
        if not torch.equal(tensor, extracted.state_dict()[name])
    ]
    assert len(changed) > len(recovered.state_dict()) // 2
    before = distillation_loss_on_training_split(extracted, supernet, run)
    after = distillation_loss_on_training_split(recovered, supernet, run)
    assert after < 0.9 * before, (before, after)

    sentences, labels = run.split("test")
    batch = dict(AutoTokenizer.from_pretrained(output_dir)(sentences, padding=True, return_tensors="pt"))
    models = tmp_path / "models"
    models.mkdir()
    (models / kind).symlink_to(output_dir)
    torch.save(batch, tmp_path / "batch.pt")
    reloaded = reload_in_fresh_process(models, tmp_path / "batch.pt")[kind]
    assert reloaded["params"] == report["num_parameters"]
    accuracy = float((reloaded["logits"].argmax(-1).numpy() == labels).mean())
    assert accuracy == pytest.approx(recovery["test_after"]["accuracy"])
    assert f"| test accuracy | {accuracy:.4f} |" in (output_dir / "README.md").read_text()
    assert {"recover/loss", "recover/learning_rate"} <= scalar_tags(tmp_path / "tb" / "recover-pruned")


def test_recover_epochs_0_writes_exactly_what_extraction_without_the_flag_writes(toy, tmp_path, monkeypatch):
    _, _, _, results_files = toy
    command = ["--results", str(results_files["custom_code"]), "--pareto_index", "0", "--output_dir", str(tmp_path)]
    select_and_extract.main(command)
    without_flag = {path: path.read_bytes() for path in sorted(tmp_path.rglob("*")) if path.is_file()}
    tokenized_splits = record_tokenized_splits(monkeypatch, lm_data)
    select_and_extract.main([*command, "--recover_epochs", "0"])
    assert {path: path.read_bytes() for path in sorted(tmp_path.rglob("*")) if path.is_file()} == without_flag
    assert tokenized_splits == [["test"]]  # no training split loaded without recovery
    assert "recovery" not in json.loads((tmp_path / "extraction.json").read_text())


def test_another_teacher_is_recorded(toy, tmp_path):
    run, _, _, results_files = toy
    select_and_extract.main([
        "--results", str(results_files["standard"]), "--pareto_index", "0", "--recover_epochs", "1",
        "--teacher_model_name_or_path", str(run.supernet), "--output_dir", str(tmp_path / "pruned"),
        "--log_dir", str(tmp_path / "tb"),
    ])
    report = json.loads((tmp_path / "pruned" / "extraction.json").read_text())
    assert report["recovery"]["settings"]["teacher"] == str(run.supernet)


@pytest.mark.parametrize("flags, message", [
    (["--recover_epochs", "-1"], "--recover_epochs must be 0"),
    (["--teacher_model_name_or_path", "x"], "add --recover_epochs"),
    (["--recover_epochs", "1", "--recover_learning_rate", "0"], "--recover_learning_rate must be positive"),
    (["--recover_epochs", "1", "--task_name", "lm"], "works for classification and regression tasks"),
    (["--recover_lstsq", "True", "--task_name", "lm"], "--recover_lstsq works for classification"),
    (["--recover_lstsq", "True", "--recover_calibration_samples", "0"], "--recover_calibration_samples must be"),
])
def test_bad_recovery_flags_are_refused_before_anything_is_written(toy, tmp_path, flags, message):
    _, _, _, results_files = toy
    with pytest.raises(UsageError, match=message):
        select_and_extract.main([
            "--results", str(results_files["standard"]), "--pareto_index", "0", *flags,
            "--output_dir", str(tmp_path / "never"),
        ])
    assert not Path(tmp_path / "never").exists()


def test_regression_recovery_learns_on_standardised_labels(tmp_path_factory, tmp_path, toy_regression):
    """Regression: the loss recovery lowers is the MSE to the teacher and to the labels, both standardised with
    the statistics the checkpoint carries (computed here from config.json); the recorded Spearman is the model's."""
    root = tmp_path_factory.mktemp("regression_recovery")
    run = toy_regression
    supernet = AutoModelForSequenceClassification.from_pretrained(run.supernet).eval()
    results_file = results_with_one_point(run, root, {"custom_code": SUB_NETWORKS["custom_code"]})["custom_code"]
    sub_network = make_search_space("small", supernet.config).to_sub_network(SUB_NETWORKS["custom_code"])
    select_and_extract.main([
        "--results", str(results_file), "--pareto_index", "0", *RECOVERY_FLAGS,
        "--output_dir", str(tmp_path / "pruned"), "--log_dir", str(tmp_path / "tb"),
    ])
    report = json.loads((tmp_path / "pruned" / "extraction.json").read_text())
    scale = json.loads((run.supernet / "config.json").read_text())["label_scale"]
    recovered = AutoModelForSequenceClassification.from_pretrained(tmp_path / "pruned", trust_remote_code=True)

    def loss(student, on_label_scale: bool) -> float:
        outputs, labels = logits_on(student, run, "train")
        if on_label_scale:  # the shipped checkpoint: statistics folded into BERT's head (label_scale.py)
            outputs = (outputs - scale["mean"]) / scale["std"]
        teacher_outputs, _ = logits_on(supernet, run, "train")
        standardised = (torch.as_tensor(labels, dtype=torch.float32) - scale["mean"]) / scale["std"]
        return float(F.mse_loss(outputs, teacher_outputs) + F.mse_loss(outputs[:, 0], standardised))

    assert loss(recovered, True) < 0.9 * loss(extract_sub_network(supernet, sub_network), False)
    outputs, labels = logits_on(recovered, run, "test")
    assert report["recovery"]["test_after"]["spearmanr"] == pytest.approx(
        spearmanr(outputs[:, 0].numpy(), labels).statistic, abs=1e-6
    )


@pytest.mark.parametrize("flags", [["--recover_epochs", "1"], ["--recover_lstsq", "True"]])
def test_a_standard_nas_point_is_not_recovered(toy, tmp_path, flags):
    _, _, _, results_files = toy
    results = json.loads(results_files["standard"].read_text())
    results["pareto_set"][0]["trial_checkpoint_dir"] = str(tmp_path / "trial")
    (tmp_path / "results.json").write_text(json.dumps(results))
    with pytest.raises(UsageError, match=f"{flags[0]} applies to sub-networks of a super-network"):
        select_and_extract.main([
            "--results", str(tmp_path / "results.json"), "--pareto_index", "0", *flags,
            "--output_dir", str(tmp_path / "never"),
        ])
    assert not (tmp_path / "never").exists()


@pytest.mark.parametrize("kind", list(SUB_NETWORKS))
def test_lstsq_recovery_keeps_the_size_rescales_the_kept_units_and_records_its_metrics(toy, tmp_path, kind):
    run, supernet, space, results_files = toy
    output_dir = tmp_path / "pruned"
    select_and_extract.main([
        "--results", str(results_files[kind]), "--pareto_index", "0", "--recover_lstsq", "True",
        "--recover_calibration_samples", "16", "--output_dir", str(output_dir),
    ])
    report = json.loads((output_dir / "extraction.json").read_text())
    sub_network = space.to_sub_network(SUB_NETWORKS[kind])
    assert report["checkpoint_kind"] == kind and "recovery" not in report
    assert report["num_parameters"] == count_parameters(supernet, sub_network).total
    lstsq = report["lstsq_recovery"]
    assert lstsq["num_calibration_samples"] == 16 and lstsq["test_before"] == report["test_extracted"]
    extracted = extract_sub_network(supernet, sub_network).state_dict()
    recovered = AutoModelForSequenceClassification.from_pretrained(output_dir, trust_remote_code=True).eval()
    changed = {name for name, tensor in recovered.state_dict().items() if not torch.equal(tensor, extracted[name])}
    # Only the output projections' weights of blocks that lost units change, by one scale per kept unit.
    assert changed and all(name.endswith("output.dense.weight") for name in changed)
    for name in changed:
        ratio = recovered.state_dict()[name] / extracted[name]
        assert torch.allclose(ratio, ratio[:1].expand_as(ratio), rtol=1e-4), name  # columns scaled, rows alike
    logits, labels = logits_on(recovered, run, "test")
    accuracy = float((logits.argmax(-1).numpy() == labels).mean())
    assert accuracy == pytest.approx(lstsq["test_after"]["accuracy"])


@pytest.mark.parametrize("validation_errors, kept", [
    ((0.30, 0.20), True),  # the scales lower the validation error: kept
    ((0.30, 0.30), True),  # a tie keeps them too
    ((0.30, 0.40), False),  # they raise it: the extracted model ships as it was
])
def test_lstsq_if_better_keeps_the_scales_only_where_validation_does_not_get_worse(
    toy, tmp_path, monkeypatch, validation_errors, kept
):
    """The validation scores before and after the tuning are scripted (`evaluate` in recovery.py, called for
    validation then test, before then after); the checkpoint written must be the tuned model or, bit for bit, the
    extracted one, and the record, the model card and the shipped metrics must say which."""
    from nas_llm.extraction import recovery

    run, supernet, space, results_files = toy
    scripted = iter([validation_errors[0], 0.45, validation_errors[1], 0.35])  # val, test before; val, test after

    def scripted_evaluate(*args, **kwargs) -> dict[str, float]:
        error = next(scripted)
        return {"accuracy": 1 - error, "error": error}

    monkeypatch.setattr(recovery, "evaluate", scripted_evaluate)
    output_dir = tmp_path / "pruned"
    select_and_extract.main([
        "--results", str(results_files["custom_code"]), "--pareto_index", "0", "--recover_lstsq", "True",
        "--recover_lstsq_if_better", "True", "--recover_calibration_samples", "16", "--output_dir", str(output_dir),
    ])
    report = json.loads((output_dir / "extraction.json").read_text())
    assert report["lstsq_recovery"]["kept"] is kept
    extracted = extract_sub_network(supernet, space.to_sub_network(SUB_NETWORKS["custom_code"])).state_dict()
    shipped = AutoModelForSequenceClassification.from_pretrained(output_dir, trust_remote_code=True).state_dict()
    unchanged = all(torch.equal(tensor, extracted[name]) for name, tensor in shipped.items())
    assert unchanged is not kept
    recorded = evaluate_checkpoint.recorded_test_metrics(output_dir)
    assert recorded == ({"accuracy": 0.65, "error": 0.35} if kept else report["test_extracted"])
    assert ("left out" in (output_dir / "README.md").read_text()) is not kept


def test_evaluate_checkpoint_gives_the_shipped_models_metric_and_says_whether_it_is_the_recorded_one(toy, tmp_path):
    run, _, _, results_files = toy
    output_dir, report_file = tmp_path / "pruned", tmp_path / "reload.json"
    select_and_extract.main(["--results", str(results_files["custom_code"]), "--pareto_index", "0",
                             "--output_dir", str(output_dir)])
    check = ["--checkpoint", str(output_dir), *run.data_flags(), "--output", str(report_file)]
    evaluate_checkpoint.main(check)
    report = json.loads(report_file.read_text())
    shipped = AutoModelForSequenceClassification.from_pretrained(output_dir, trust_remote_code=True).eval()
    logits, labels = logits_on(shipped, run, "test")
    assert report["test"]["accuracy"] == pytest.approx(float((logits.argmax(-1).numpy() == labels).mean()))
    assert report["matches_recorded"] is True

    extraction_file = output_dir / "extraction.json"
    extraction = json.loads(extraction_file.read_text())
    extraction["test_extracted"]["accuracy"] += 0.25  # a record the model does not reproduce
    extraction_file.write_text(json.dumps(extraction))
    evaluate_checkpoint.main(check)
    assert json.loads(report_file.read_text())["matches_recorded"] is False


@pytest.mark.parametrize("scripted_errors, keep_best, kept_epoch", [
    ([0.30, 0.50, 0.20, 0.40], True, 2),  # the best epoch is neither the first nor the last
    ([0.30, 0.60, 0.70, 0.65], True, 1),  # better before, yet a recovered epoch ships: the start is no candidate
    ([0.30, 0.50, 0.20, 0.40], False, 3),  # without --recover_keep_best: the last epoch
])
def test_recovery_ships_the_epoch_that_validation_scores_best(toy, tmp_path, scripted_errors, keep_best, kept_epoch):
    """The validation scores are scripted, the weights at each scoring snapshotted: the model recovery returns
    must hold exactly the snapshot of the epoch kept, never the extracted weights it started from."""
    run, supernet, space, _ = toy
    model = extract_sub_network(supernet, space.to_sub_network(SUB_NETWORKS["custom_code"]))
    tokenizer = AutoTokenizer.from_pretrained(run.model_dir)
    sentences, labels = run.split("train")
    train_set = datasets.Dataset.from_dict(dict(tokenizer(sentences)) | {"labels": labels.tolist()})
    snapshots = []

    def scripted_validation() -> dict[str, float]:
        snapshots.append(copy.deepcopy(model.state_dict()))
        return {"error": scripted_errors[len(snapshots) - 1]}

    args = RecoveryArguments(recover_epochs=3, recover_learning_rate=3e-3, recover_batch_size=16,
                             recover_keep_best=keep_best, log_dir=str(tmp_path / "tb"))
    teacher = Teacher(copy.deepcopy(supernet), None)
    training = fine_tune(model, teacher, train_set, tokenizer, args, str(tmp_path / "out"), scripted_validation)

    assert training["kept_epoch"] == kept_epoch
    assert training["validation_per_epoch"] == [{"error": error} for error in scripted_errors[1:]]
    assert len(snapshots) == 4 and not torch.equal(snapshots[0]["classifier.weight"], snapshots[3]["classifier.weight"])
    assert not torch.equal(snapshots[0]["classifier.weight"], snapshots[kept_epoch]["classifier.weight"])
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, snapshots[kept_epoch][name]), name
