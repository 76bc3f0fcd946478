"""Regression trains on standardised labels; predictions are reported on the label scale, everywhere."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from support import tiny_batch, tiny_model
from tiny_assets import write_tiny_model_dir, write_tiny_stsb
from transformers import AutoModelForSequenceClassification

import train_supernet
from nas_llm.data.data import DataArguments, load_raw_splits, make_dataloader, tokenize_splits
from nas_llm.data.metrics import compute_task_metrics
from nas_llm.extraction.extract import extract_sub_network, load_extracted, save_extracted
from nas_llm.model.label_scale import (
    LabelScale,
    fit_label_scale,
    label_scale_for_training,
    label_scale_of,
    predicting_label_scale,
    rescale,
    set_label_scale,
    unfold_label_scale,
)
from nas_llm.model.models import load_tokenizer
from nas_llm.model.search_spaces import make_search_space
from nas_llm.model.slicing import sliced
from nas_llm.training.evaluation import predict
from nas_llm.training.sampling import PlannedPass, training_step

SCALE = LabelScale(mean=2.75, std=1.5)


def test_statistics_are_the_training_labels_mean_and_population_std():
    labels = [0.0, 1.0, 5.0, 2.0]
    assert fit_label_scale(labels) == LabelScale(mean=2.0, std=float(np.sqrt((4 + 1 + 9 + 0) / 4)))
    assert fit_label_scale([3.0, 3.0]) == LabelScale(mean=3.0, std=1.0)  # constant labels: no division by 0


def test_labels_spread_less_than_one_keep_their_own_std():
    """Only constant labels (std 0) fall back to std 1; labels in [0, 1] are standardised with their std."""
    assert fit_label_scale([0.0, 0.5, 1.0]) == LabelScale(mean=0.5, std=float(np.sqrt((0.25 + 0 + 0.25) / 3)))


@pytest.mark.parametrize(
    ("is_regression", "standardise", "inherited", "expected"),
    [
        (True, True, False, LabelScale(mean=2.0, std=1.0)),  # the training split's: labels 1, 3
        (True, False, False, None),  # raw regression
        (False, True, False, None),  # classification never is
        (False, False, False, None),
        (True, True, True, SCALE),  # trained weights bring theirs
        (True, False, True, SCALE),
    ],
)
def test_a_run_trains_with_the_statistics_of_its_task_and_stores_them(is_regression, standardise, inherited, expected):
    config = tiny_model("bert").config
    set_label_scale(config, SCALE)  # what a resumed or teacher checkpoint brings
    scale = label_scale_for_training(config, is_regression, standardise, [1.0, 3.0], inherited)
    assert scale == expected
    assert label_scale_of(config) == expected
    assert ("label_scale" in config.to_dict()) is (expected is not None)


@pytest.mark.parametrize(
    ("source", "target", "expected"),
    [
        (SCALE, LabelScale(mean=1.0, std=2.0), lambda o: (o * 1.5 + 2.75 - 1.0) / 2.0),
        (SCALE, None, lambda o: o * 1.5 + 2.75),
        (None, SCALE, lambda o: (o - 2.75) / 1.5),
        (None, None, lambda o: o),
    ],
)
def test_a_teachers_outputs_are_rescaled_to_the_students_statistics(source, target, expected):
    """None: a model that outputs the label scale itself."""
    outputs = torch.tensor([[-1.0], [0.0], [2.5]])
    assert torch.allclose(rescale(outputs, source, target), expected(outputs))


def test_a_checkpoint_of_a_head_without_bias_loads_back_standardised_without_the_usage_note(tmp_path):
    """GPT-2's head has no bias: the written config says how to read the outputs; the project's loader drops that."""
    model = tiny_model("gpt2", num_labels=1)
    set_label_scale(model.config, SCALE)
    with predicting_label_scale(model):
        model.save_pretrained(tmp_path)
    written = json.loads((tmp_path / "config.json").read_text())
    assert written["label_scale_usage"].startswith("outputs are standardised labels")
    loaded = unfold_label_scale(AutoModelForSequenceClassification.from_pretrained(tmp_path))
    assert "label_scale_usage" not in loaded.config.to_dict()
    assert label_scale_of(loaded.config) == SCALE
    assert "label_scale_usage" not in model.config.to_dict()  # the model goes on as before the write


def test_the_loss_sees_standardised_labels(family_name):
    model = tiny_model(family_name, num_labels=1)
    batch = tiny_batch(num_labels=1) | {"labels": torch.tensor([0.5, 4.0, 3.0])}
    training_step(model, batch, [PlannedPass("largest", None, False)], sliced, 1.0, label_scale=SCALE)
    gradients = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}

    model.zero_grad()
    inputs = {key: value for key, value in batch.items() if key != "labels"}
    expected_loss = F.mse_loss(model(**inputs).logits.squeeze(-1), (batch["labels"] - 2.75) / 1.5)
    expected_loss.backward()
    for name, gradient in gradients.items():
        assert torch.allclose(gradient, model.get_parameter(name).grad, atol=1e-6), name


def regression_loader(tmp_path, model_dir):
    data_args = DataArguments(task_name="stsb", data_dir=str(write_tiny_stsb(tmp_path / "glue")))
    tokenizer = load_tokenizer(str(model_dir))
    splits = load_raw_splits(data_args)
    tokenized = tokenize_splits(splits, tokenizer, data_args)
    return splits, make_dataloader(tokenized["validation"], tokenizer, 8, False, 0)


def test_predictions_are_mapped_back_to_the_label_scale(tmp_path):
    model_dir = write_tiny_model_dir(tmp_path / "model", "gpt2", num_labels=1)
    _, loader = regression_loader(tmp_path, model_dir)
    model = tiny_model("gpt2", num_labels=1)
    raw, _ = predict(model, loader, torch.device("cpu"))
    set_label_scale(model.config, SCALE)
    scaled, _ = predict(model, loader, torch.device("cpu"))
    np.testing.assert_allclose(scaled, raw * 1.5 + 2.75, rtol=1e-6)


def test_extracted_models_keep_the_statistics_and_report_the_search_metrics(tmp_path, family_name):
    model_dir = write_tiny_model_dir(tmp_path / "model", family_name, num_labels=1)
    _, loader = regression_loader(tmp_path, model_dir)
    model = tiny_model(family_name, num_labels=1)
    set_label_scale(model.config, SCALE)
    space = make_search_space("medium", model.config)
    sub_network = space.sample(np.random.default_rng(0))
    searched, labels = predict(model, loader, torch.device("cpu"), sub_network, sliced)

    save_extracted(extract_sub_network(model, sub_network), load_tokenizer(str(model_dir)), sub_network, tmp_path / "x")
    extracted = load_extracted(tmp_path / "x")
    assert label_scale_of(extracted.config) == SCALE
    reported, _ = predict(extracted, loader, torch.device("cpu"))
    np.testing.assert_allclose(reported, searched, atol=1e-4)
    assert abs(reported.mean() - searched.mean()) < 1e-4 and abs(reported.mean()) > 1  # on the label scale
    expected = compute_task_metrics("stsb", searched, labels)
    # predictions agree to 1e-4; a random tiny model's are nearly constant, so Pearson amplifies float noise
    assert compute_task_metrics("stsb", reported, labels) == pytest.approx(expected, abs=1e-5)


def train_stsb(tmp_path, family, *extra):
    model_dir = write_tiny_model_dir(tmp_path / "model", family, num_labels=1)
    data_dir = write_tiny_stsb(tmp_path / "glue")
    output_dir = tmp_path / "supernet"
    model = train_supernet.main([
        "--model_name_or_path", str(model_dir), "--task_name", "stsb", "--data_dir", str(data_dir),
        "--output_dir", str(output_dir), "--log_dir", str(tmp_path / "tb"), "--sampling_strategy", "one_shot",
        "--num_train_epochs", "4", "--per_device_train_batch_size", "8", "--learning_rate", "3e-3",
        "--seed", "0", *extra,
    ])
    return model, model_dir, output_dir


def test_training_stores_the_training_split_statistics(tmp_path):
    _, model_dir, output_dir = train_stsb(tmp_path, "bert", "--num_train_epochs", "1", "--save_strategy", "no")
    splits, _ = regression_loader(tmp_path, model_dir)
    train_labels = np.asarray(splits["train"]["label"], dtype=np.float64)
    stored = json.loads((output_dir / "config.json").read_text())["label_scale"]
    assert stored == pytest.approx({"mean": train_labels.mean(), "std": train_labels.std()})
    assert json.loads((output_dir / "nas_settings.json").read_text())["standardize_labels"] is True


def test_a_resumed_run_keeps_the_stored_statistics(tmp_path):
    _, _, output_dir = train_stsb(tmp_path, "bert", "--num_train_epochs", "1", "--save_strategy", "epoch")
    config_file = output_dir / "checkpoint-1" / "config.json"
    planted = json.loads(config_file.read_text()) | {"label_scale": {"mean": 10.0, "std": 3.0}}
    config_file.write_text(json.dumps(planted))
    train_stsb(tmp_path, "bert", "--num_train_epochs", "2", "--resume_from_checkpoint", "latest")
    assert json.loads((output_dir / "config.json").read_text())["label_scale"] == {"mean": 10.0, "std": 3.0}


def test_one_shot_full_network_predictions_on_regression_are_not_constant(tmp_path):
    """The STS-B collapse: on raw labels the shared bias-free head of GPT-2 was pulled to a constant."""
    model, model_dir, _ = train_stsb(tmp_path, "gpt2", "--save_strategy", "no")
    _, loader = regression_loader(tmp_path, model_dir)
    predictions, labels = predict(model, loader, torch.device("cpu"))
    assert predictions.std() > 0.25 * labels.std()
    assert compute_task_metrics("stsb", predictions, labels)["spearmanr"] > 0.5


def test_a_standard_nas_trial_trains_regression_on_standardised_labels(tmp_path):
    import standard_nas_trial
    from nas_llm.baselines.standard_nas import SETTINGS_KEY, epoch_checkpoint

    model_dir = write_tiny_model_dir(tmp_path / "model", "bert", num_labels=1)
    data_dir = write_tiny_stsb(tmp_path / "glue")
    settings = tmp_path / "settings.json"
    settings.write_text(json.dumps({"argv": [
        "--model_name_or_path", str(model_dir), "--task_name", "stsb", "--data_dir", str(data_dir),
        "--output_dir", str(tmp_path / "run"), "--max_epochs", "1", "--num_samples", "1",
        "--per_device_train_batch_size", "8",
    ]}))
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"num_layers": 2, "num_heads": 2, "num_units": 10, SETTINGS_KEY: str(settings)}))
    standard_nas_trial.main(["--st_config_json_filename", str(config), "--st_checkpoint_dir", str(tmp_path / "ckpt")])

    splits, _ = regression_loader(tmp_path, model_dir)
    train_labels = np.asarray(splits["train"]["label"], dtype=np.float64)
    # BERT's head has a bias: the checkpoint ships with the statistics folded into it, and records them
    stored = json.loads((epoch_checkpoint(tmp_path / "ckpt", 1) / "config.json").read_text())["label_scale_folded"]
    assert stored == pytest.approx({"mean": train_labels.mean(), "std": train_labels.std()})
