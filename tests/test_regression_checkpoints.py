"""Regression checkpoints that the project ships (extraction, RFP, recovery, standard-NAS trials) predict on the
labels' scale when loaded with plain transformers; RFP scores units with the standardised labels the model was
trained on. References: the labels themselves, and the loss's mask gradients by finite differences."""

from __future__ import annotations

import copy
import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from support import FAMILY_NAMES, reload_in_fresh_process
from tiny_assets import write_tiny_model_dir, write_tiny_stsb
from transformers import AutoModelForSequenceClassification, AutoTokenizer

import run_offline_search
import run_rfp
import select_and_extract
import standard_nas_trial
import train_supernet
from nas_llm.baselines import rfp
from nas_llm.baselines.standard_nas import SETTINGS_KEY, epoch_checkpoint
from nas_llm.data.data import DataArguments, load_raw_splits, make_dataloader, tokenize_splits
from nas_llm.model.search_spaces import make_search_space

# Their transformers classes end the head in a linear layer with a bias, into which the labels' mean can go; the
# GPT-2, GPT-NeoX and Llama-family heads have none, and their config says how to map the outputs.
HEADS_WITH_BIAS = {"bert", "roberta", "xlm-roberta", "electra", "electra-projected"}


def train_regression(root: Path, family: str) -> tuple[Path, Path, Path]:
    """(model_dir, data_dir, checkpoint) of a tiny model fine-tuned on STS-B-like scores (mean ~2.6, std ~1.7)
    long enough to predict them (test Spearman 0.5-0.85 for every family)."""
    model_dir = write_tiny_model_dir(root / "model", family, num_labels=1)
    data_dir = write_tiny_stsb(root / "glue")
    checkpoint = root / "trained"
    train_supernet.main([
        "--model_name_or_path", str(model_dir), "--task_name", "stsb", "--data_dir", str(data_dir),
        "--output_dir", str(checkpoint), "--log_dir", str(root / "tb"), "--sampling_strategy", "standard",
        "--num_train_epochs", "20", "--per_device_train_batch_size", "8", "--learning_rate", "3e-3",
        "--seed", "0", "--save_strategy", "no",
    ])
    return model_dir, data_dir, checkpoint


def dev_rows(data_dir: Path) -> tuple[list[str], list[str], np.ndarray]:
    """The GLUE dev file read with csv (the project's test split): sentence pairs and scores."""
    with open(data_dir / "STS-B" / "dev.tsv", newline="") as file:
        rows = list(csv.DictReader(file, delimiter="\t"))
    return [row["sentence1"] for row in rows], [row["sentence2"] for row in rows], np.array(
        [float(row["score"]) for row in rows]
    )


def plain_predictions(checkpoints: dict[str, Path], data_dir: Path, root: Path) -> tuple[dict, np.ndarray]:
    """{name: (predictions as a user reads them, config.json, model card or "")} of checkpoints loaded by
    transformers alone in a fresh process, on the dev pairs; a config with `label_scale` is mapped as its model card
    says."""
    models = root / "models"
    models.mkdir()
    for name, directory in checkpoints.items():
        (models / name).symlink_to(directory)
    first, second, labels = dev_rows(data_dir)
    tokenizer = AutoTokenizer.from_pretrained(next(iter(checkpoints.values())))
    torch.save(dict(tokenizer(first, second, padding=True, return_tensors="pt")), root / "batch.pt")
    reloaded = reload_in_fresh_process(models, root / "batch.pt")
    predictions = {}
    for name, directory in checkpoints.items():
        config = json.loads((directory / "config.json").read_text())
        outputs = reloaded[name]["logits"][:, 0].numpy().astype(np.float64)
        if "label_scale" in config:  # the model card's two lines for a head without a bias
            outputs = outputs * config["label_scale"]["std"] + config["label_scale"]["mean"]
        card = directory / "README.md"
        predictions[name] = (outputs, config, card.read_text() if card.is_file() else "")
    return predictions, labels


def assert_on_the_labels_scale(name: str, predictions: np.ndarray, labels: np.ndarray) -> None:
    """Mean within half a label standard deviation, spread within a factor of 4 of the labels' (standardised
    outputs: mean ~0 against ~2.6)."""
    statistics = f"{name}: predictions {predictions.mean():.3f} +- {predictions.std():.3f}, labels " \
        f"{labels.mean():.3f} +- {labels.std():.3f}"
    assert abs(predictions.mean() - labels.mean()) < 0.5 * labels.std(), statistics
    assert 0.25 * labels.std() < predictions.std() < 2 * labels.std(), statistics


# transformers 5 loads any qwen2 folder's tokenizer as a Qwen2Tokenizer, which reads the tiny word-level vocabulary
# as [CLS] [SEP] alone: the tiny data carries no signal for it. Its family (llama) is covered by llama and mistral.
REGRESSION_FAMILIES = tuple(name for name in FAMILY_NAMES if name != "qwen2")


def results_with_one_point(root: Path, model_dir: Path, data_dir: Path, checkpoint: Path, units: dict) -> Path:
    """A real search's results file whose one Pareto point is the sub-network `units` (all heads: "num_heads" -1)."""
    search_dir = root / "search"
    run_offline_search.main([
        "--model_name_or_path", str(model_dir), "--task_name", "stsb", "--data_dir", str(data_dir),
        "--checkpoint_dir_model", str(checkpoint), "--search_space", "small", "--search_strategy", "random_search",
        "--num_samples", "2", "--output_dir", str(search_dir), "--log_dir", str(root / "tb"),
        "--cost_seq_len", "16", "--latency_repeats", "1",
    ])
    results = json.loads((search_dir / "results_stsb.json").read_text())
    space = make_search_space("small", AutoModelForSequenceClassification.from_pretrained(checkpoint).config)
    heads = space.largest().head_mask.shape[1] if units["num_heads"] == -1 else units["num_heads"]
    sub_network = space.to_sub_network(units | {"num_heads": heads})
    results["pareto_set"][0]["sub_network"] = sub_network.to_json_dict()
    (search_dir / "one_point.json").write_text(json.dumps(results))
    return search_dir / "one_point.json"


@pytest.fixture(scope="module")
def extracted_per_family(tmp_path_factory) -> tuple[dict, np.ndarray]:
    """One fine-tuned tiny regression model per family, a sub-network of each extracted with
    select_and_extract.py from a search's results, and all of them reloaded in one fresh process."""
    root = tmp_path_factory.mktemp("regression_extracted")
    checkpoints = {}
    for family in REGRESSION_FAMILIES:
        model_dir, data_dir, fine_tuned = train_regression(root / family, family)
        results = results_with_one_point(
            root / family, model_dir, data_dir, fine_tuned, {"num_layers": 3, "num_heads": -1, "num_units": 18}
        )
        checkpoints[family] = root / family / "extracted"
        select_and_extract.main(["--results", str(results), "--pareto_index", "0", "--output_dir",
                                 str(checkpoints[family])])
    return plain_predictions(checkpoints, data_dir, root)


@pytest.mark.parametrize("family_name", REGRESSION_FAMILIES)
def test_an_extracted_regression_model_predicts_on_the_labels_scale_with_plain_transformers(
    extracted_per_family, family_name
):
    predictions, labels = extracted_per_family
    outputs, config, card = predictions[family_name]
    if family_name in HEADS_WITH_BIAS:  # folded into the head: nothing left for the user to map
        assert "label_scale" not in config and "label_scale_folded" in config
        assert "on the scale of the task's labels" in card
    else:
        assert "label_scale_usage" in config
        assert 'logits[..., 0] * scale["std"] + scale["mean"]' in card
    assert_on_the_labels_scale(family_name, outputs, labels)


@pytest.fixture(scope="module")
def fine_tuned_bert(tmp_path_factory) -> tuple[Path, Path, Path]:
    return train_regression(tmp_path_factory.mktemp("regression_fine_tuned"), "bert")


def test_rfp_recovery_rfp_recovered_and_standard_nas_trials_ship_regression_models_on_the_labels_scale(
    fine_tuned_bert, tmp_path
):
    model_dir, data_dir, fine_tuned = fine_tuned_bert
    data_flags = ["--task_name", "stsb", "--data_dir", str(data_dir)]
    run_rfp.main([
        "--checkpoint_dir_model", str(fine_tuned), *data_flags, "--budgets", "0.8", "--num_calibration_samples",
        "32", "--calibration_batch_size", "16", "--cost_seq_len", "16", "--latency_repeats", "1",
        "--output_dir", str(tmp_path / "rfp"),
    ])
    # half the heads (custom code) and fewer neurons: recovery has something to recover
    results = results_with_one_point(
        tmp_path, model_dir, data_dir, fine_tuned, {"num_layers": 3, "num_heads": 2, "num_units": 15}
    )
    select_and_extract.main([
        "--results", str(results), "--pareto_index", "0", "--recover_epochs", "3", "--recover_learning_rate", "3e-3",
        "--recover_batch_size", "8", "--output_dir", str(tmp_path / "recovered"),
    ])
    select_and_extract.main([  # RFP + recovery: the RFP point distilled from the model it pruned
        "--results", str(tmp_path / "rfp" / "results_stsb.json"), "--pareto_index", "0", "--recover_epochs", "2",
        "--recover_keep_best", "False", "--recover_batch_size", "8", "--output_dir", str(tmp_path / "rfp_recovered"),
    ])
    settings = tmp_path / "settings.json"
    settings.write_text(json.dumps({"argv": [
        "--model_name_or_path", str(model_dir), *data_flags, "--output_dir", str(tmp_path / "nas"),
        "--max_epochs", "20", "--num_samples", "1", "--per_device_train_batch_size", "8", "--learning_rate", "3e-3",
    ]}))
    trial_config = tmp_path / "trial.json"
    trial_config.write_text(json.dumps({"num_layers": 3, "num_heads": 4, "num_units": 20, SETTINGS_KEY: str(settings)}))
    standard_nas_trial.main(["--st_config_json_filename", str(trial_config), "--st_checkpoint_dir", str(tmp_path)])

    predictions, labels = plain_predictions({
        "rfp": tmp_path / "rfp" / "budget-0.8",
        "recovered": tmp_path / "recovered",
        "rfp_recovered": tmp_path / "rfp_recovered",
        "trial": epoch_checkpoint(tmp_path, 20),
    }, data_dir, tmp_path)
    for name, (outputs, config, _) in predictions.items():
        assert "label_scale" not in config, name
        assert_on_the_labels_scale(name, outputs, labels)


def finite_difference_mask_gradients(model, batch: dict, targets: torch.Tensor, step: float = 1e-4):
    """dMSE/dmask of every head and FFN neuron of a BERT, by central differences in float64: a head's (neuron's)
    mask scales its columns of the attention (FFN) output projection, so the loss is evaluated with those columns
    scaled by 1 +- step."""
    model = copy.deepcopy(model).double().eval()
    inputs = {key: value for key, value in batch.items() if key != "labels"}
    config = model.config
    head_size = config.hidden_size // config.num_attention_heads

    def loss() -> float:
        with torch.no_grad():
            return float(F.mse_loss(model(**inputs).logits[:, 0], targets.double()))

    def derivative(weight: torch.Tensor, columns: slice) -> float:
        original = weight[:, columns].clone()
        values = []
        for sign in (1, -1):
            weight.data[:, columns] = original * (1 + sign * step)
            values.append(loss())
        weight.data[:, columns] = original
        return (values[0] - values[1]) / (2 * step)

    heads, neurons = [], []
    for layer in model.bert.encoder.layer:
        attention_out, ffn_out = layer.attention.output.dense.weight, layer.output.dense.weight
        heads.append([derivative(attention_out, slice(h * head_size, (h + 1) * head_size))
                      for h in range(config.num_attention_heads)])
        neurons.append([derivative(ffn_out, slice(n, n + 1)) for n in range(config.intermediate_size)])
    return torch.tensor(heads), torch.tensor(neurons)


def test_rfp_fisher_scores_use_the_standardised_labels_the_model_was_trained_on(
    fine_tuned_bert, tmp_path, monkeypatch
):
    model_dir, data_dir, fine_tuned = fine_tuned_bert
    computed = []

    def recording(model, batches, *args):
        computed.append(real_mask_gradients(model, batches, *args))
        return computed[-1]

    real_mask_gradients = rfp.mask_gradients
    monkeypatch.setattr(rfp, "mask_gradients", recording)
    run_rfp.main([
        "--checkpoint_dir_model", str(fine_tuned), "--task_name", "stsb", "--data_dir", str(data_dir),
        "--budgets", "0.8", "--num_calibration_samples", "1000", "--calibration_batch_size", "1000",
        "--tune_masks", "False", "--cost_seq_len", "16", "--latency_repeats", "1", "--output_dir", str(tmp_path),
    ])
    (gradients,) = computed
    assert gradients.heads.shape[0] == 1  # the whole training split in one batch

    data_args = DataArguments(task_name="stsb", data_dir=str(data_dir))
    tokenizer = AutoTokenizer.from_pretrained(fine_tuned)
    train_split = tokenize_splits(load_raw_splits(data_args), tokenizer, data_args)["train"]
    (batch,) = make_dataloader(train_split, tokenizer, len(train_split), False, 0)
    labels = batch["labels"].double()
    model = AutoModelForSequenceClassification.from_pretrained(fine_tuned)
    standardised = (labels - labels.mean()) / labels.std(unbiased=False)  # the training split's statistics
    heads, neurons = finite_difference_mask_gradients(model, batch, standardised)
    np.testing.assert_allclose(gradients.heads[0].double(), heads, rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(gradients.neurons[0].double(), neurons, rtol=1e-3, atol=1e-6)
    fisher = (gradients.heads[0].double() ** 2).sum()
    assert fisher == pytest.approx(float((heads**2).sum()), rel=2e-3)
    raw_heads, _ = finite_difference_mask_gradients(model, batch, labels)
    assert not torch.allclose(raw_heads, heads, rtol=0.1)  # raw labels would give other scores
