"""SWAG (multiple choice): data, sub-networks, costs and the scripts, checked against references built here.

Batches are compared with token ids written out by hand, sub-network logits with a copy of the model whose
units are zeroed or deleted by hand, MACs with torch's FLOP counter, and the extracted checkpoints' accuracy with
a fresh process that tokenises the test file itself and loads the model with transformers' Auto class alone.
"""

from __future__ import annotations

import copy
import csv
import json
import subprocess
import sys
from functools import partial
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from support import (
    FAMILY_NAMES,
    INIT_STD,
    assert_macs_equal_torch_flop_counter,
    full_sub_network,
    tiny_config,
    zero_inputs_of,
)
from tiny_assets import SWAG_COLUMNS, tiny_tokenizer, write_tiny_model_dir, write_tiny_swag
from transformers import AutoModelForMultipleChoice, AutoModelForSequenceClassification
from transformers.models.auto.modeling_auto import MODEL_FOR_MULTIPLE_CHOICE_MAPPING_NAMES

import run_offline_search
import run_rfp
import run_standard_nas
import select_and_extract
import train_supernet
from nas_llm.common.errors import UsageError, exit_on_usage_error
from nas_llm.data import data
from nas_llm.data.data import TASKS, DataArguments, load_raw_splits, make_dataloader, task_info_for, tokenize_splits
from nas_llm.data.metrics import trivial_metric
from nas_llm.model.families import family_for, layers_of
from nas_llm.model.mask import masked
from nas_llm.model.slicing import sliced
from nas_llm.training.reorder import reorder_by_importance
from nas_llm.training.sampling import hidden_state_loss
from nas_llm.training.teacher import check_same_architecture

PROJECT_DIR = Path(__file__).resolve().parents[1]
MULTIPLE_CHOICE_FAMILIES = [
    name for name in FAMILY_NAMES if tiny_config(name).model_type in MODEL_FOR_MULTIPLE_CHOICE_MAPPING_NAMES
]
ENDINGS = TASKS["swag"].label_names


def tiny_multiple_choice_model(family: str, seed: int = 0):
    """A random tiny *ForMultipleChoice model with one label per SWAG ending (as load_model names them)."""
    torch.manual_seed(seed)
    config = tiny_config(family, num_labels=len(ENDINGS))
    config.initializer_range = INIT_STD
    return AutoModelForMultipleChoice.from_config(config).eval()


def choice_batch(batch_size: int = 3, seq_len: int = 7, seed: int = 0) -> dict:
    """[batch, 4, tokens] random ids; the last example's choices are right-padded by different amounts."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(3, 60, (batch_size, len(ENDINGS), seq_len), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    for choice in range(len(ENDINGS)):
        attention_mask[-1, choice, seq_len - choice:] = 0
    return {"input_ids": input_ids * attention_mask, "attention_mask": attention_mask}


def write_swag_rows(path: Path, rows: list[tuple[str, str, list[str], int]]) -> Path:
    """A CSV in the SWAG release's columns from (sent1, sent2, endings, label) rows."""
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(SWAG_COLUMNS)
        for index, (sent1, sent2, endings, label) in enumerate(rows):
            writer.writerow([f"v{index}", index, f"{sent1} {sent2}", sent1, sent2, "gold", *endings, label])
    return path


def word_ids(text: str) -> list[int]:
    """tiny_tokenizer's ids written out: [PAD] 0, [UNK] 1, [CLS] 2, [SEP] 3, then w0, w1, ... from 4."""
    return [4 + int(word[1:]) for word in text.split()]


# --- data ------------------------------------------------------------------------------------------------------


HAND_MADE = [
    ("w0 w1", "w2", ["w3", "w4 w5", "w6", "w7 w8 w9"], 3),
    ("w10", "w11 w12", ["w13", "w14", "w15 w16", "w17"], 0),
]


def test_a_batch_is_every_choice_of_every_example_padded_to_the_longest_with_the_labels_aligned(tmp_path):
    train_file = write_swag_rows(tmp_path / "train.csv", HAND_MADE * 5)
    test_file = write_swag_rows(tmp_path / "val.csv", HAND_MADE)
    args = DataArguments(task_name="swag", train_file=str(train_file), validation_file=str(test_file))
    splits = load_raw_splits(args)
    assert splits["test"].column_names == ["sent1", "sent2", *ENDINGS, "label"]
    assert task_info_for(splits) == TASKS["swag"]

    tokenizer = tiny_tokenizer()
    tokenized = tokenize_splits(splits, tokenizer, args, ("test",))
    batch = next(iter(make_dataloader(tokenized["test"], tokenizer, batch_size=2, shuffle=False, seed=0)))

    expected = [
        [[2, *word_ids(sent1), 3, *word_ids(f"{sent2} {ending}"), 3] for ending in endings]
        for sent1, sent2, endings, _ in HAND_MADE
    ]
    longest = max(len(ids) for example in expected for ids in example)
    assert longest == 9 and batch["input_ids"].shape == (2, 4, longest)
    for example, choices in enumerate(expected):
        for choice, ids in enumerate(choices):
            padding = [0] * (longest - len(ids))
            assert batch["input_ids"][example, choice].tolist() == ids + padding
            assert batch["attention_mask"][example, choice].tolist() == [1] * len(ids) + padding
    assert batch["labels"].tolist() == [3, 0] and set(batch) == {"input_ids", "attention_mask", "labels"}


def test_the_hub_s_swag_becomes_our_columns_with_its_validation_split_as_the_test_set(monkeypatch):
    hub_features = datasets.Features(
        {name: datasets.Value("string") for name in SWAG_COLUMNS[:-1]}
        | {"label": datasets.ClassLabel(names=["0", "1", "2", "3"])}
    )

    def hub_split(count: int, offset: int, labelled: bool = True) -> datasets.Dataset:
        rows = {name: [f"{name} {offset + i}" for i in range(count)] for name in SWAG_COLUMNS[:-1]}
        return datasets.Dataset.from_dict(
            rows | {"label": [(offset + i) % 4 if labelled else -1 for i in range(count)]}, features=hub_features
        )

    requested = []

    def load_dataset(path, name):
        requested.append((path, name))
        return datasets.DatasetDict(train=hub_split(20, 0), validation=hub_split(6, 100), test=hub_split(6, 200, False))

    monkeypatch.setattr(data, "hub_unavailable_reason", lambda: None)
    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    splits = load_raw_splits(DataArguments(task_name="swag"))

    assert requested == [("allenai/swag", "regular")]
    assert task_info_for(splits) == TASKS["swag"]
    assert list(splits["test"]["sent1"]) == [f"sent1 {100 + i}" for i in range(6)]
    assert list(splits["test"]["ending2"]) == [f"ending2 {100 + i}" for i in range(6)]
    assert list(splits["test"]["label"]) == [(100 + i) % 4 for i in range(6)]
    assert (len(splits["train"]), len(splits["validation"])) == (14, 6)
    held_out = sorted([*splits["train"]["sent1"], *splits["validation"]["sent1"]])
    assert held_out == sorted(f"sent1 {i}" for i in range(20))


def test_the_trivial_predictor_of_swag_always_picks_the_most_frequent_training_label():
    assert trivial_metric("swag", np.array([2, 2, 1, 0]), np.array([2, 0, 2, 3])) == 0.5


def test_hidden_state_loss_of_multiple_choice_weights_each_choice_s_own_tokens():
    generator = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(2 * 4, 5, 3, generator=generator), torch.randn(2 * 4, 5, 3, generator=generator)
    attention_mask = torch.ones(2, 4, 5, dtype=torch.long)
    attention_mask[1, 2, 3:] = 0
    squared = ((student - teacher) ** 2).mean(-1)  # [8 sequences, 5 tokens]
    real = torch.ones(8, 5, dtype=torch.bool)
    real[1 * 4 + 2, 3:] = False
    assert torch.isclose(hidden_state_loss([(student, teacher)], attention_mask), squared[real].mean())


# --- sub-networks and costs --------------------------------------------------------------------------------------


@pytest.mark.parametrize("family_name", MULTIPLE_CHOICE_FAMILIES)
def test_masked_and_sliced_multiple_choice_logits_equal_the_model_with_the_units_removed_by_hand(family_name):
    model = tiny_multiple_choice_model(family_name)
    family = family_for(model)
    sub_network = full_sub_network(model)
    sub_network.head_mask[1, 0] = False
    removed_neurons = torch.tensor([3, 7, 11])
    sub_network.ffn_mask[0, removed_neurons] = False
    sub_network.head_mask[2] = False
    sub_network.ffn_mask[2] = False

    reference = copy.deepcopy(model)
    head_width = family.head_dim(model.config)
    zero_inputs_of(layers_of(reference)[1], family.attention_out_proj, torch.arange(head_width))
    zero_inputs_of(layers_of(reference)[0], family.ffn_down_proj, removed_neurons)
    del layers_of(reference)[2]

    batch = choice_batch()
    with torch.no_grad():
        expected = reference(**batch).logits
        assert expected.shape == (3, 4)
        for run_as in (masked, sliced):
            with run_as(model, sub_network):
                assert torch.allclose(model(**batch).logits, expected, atol=1e-5), run_as.__name__
        assert not torch.allclose(model(**batch).logits, expected, atol=1e-3)


@pytest.mark.parametrize("family_name", MULTIPLE_CHOICE_FAMILIES)
def test_macs_of_a_multiple_choice_example_equal_torch_flop_counter_over_its_four_sequences(family_name):
    assert_macs_equal_torch_flop_counter(tiny_multiple_choice_model(family_name), (len(ENDINGS), 10))


def test_importance_reordering_of_a_multiple_choice_model_scores_every_unit_and_keeps_its_logits():
    model = tiny_multiple_choice_model("bert")
    batch = choice_batch()
    with torch.no_grad():
        before = model(**batch).logits
    importance = reorder_by_importance(model, [batch | {"labels": torch.tensor([0, 3, 1])}])
    assert importance.heads.shape == (3, 4) and (importance.heads > 0).all() and (importance.neurons > 0).all()
    assert not torch.equal(importance.head_order(), torch.arange(4).expand(3, 4))  # something was permuted
    with torch.no_grad():
        assert torch.allclose(model(**batch).logits, before, atol=1e-5)


def test_a_teacher_for_swag_must_be_a_multiple_choice_model_of_the_same_shapes():
    config = tiny_config("bert", num_labels=len(ENDINGS))
    check_same_architecture(AutoModelForMultipleChoice.from_config(config), config, "mc", multiple_choice=True)
    with pytest.raises(UsageError, match="is a BertForSequenceClassification but the model is a BertForMultipleChoice"):
        check_same_architecture(AutoModelForSequenceClassification.from_config(config), config, "seq", True)


# --- the scripts -------------------------------------------------------------------------------------------------


def extract(results_file: Path, index: int, output_dir: Path) -> Path:
    select_and_extract.main([
        "--results", str(results_file), "--pareto_index", str(index), "--output_dir", str(output_dir),
    ])
    return output_dir


@pytest.fixture(scope="module")
def swag_run(tmp_path_factory):
    """A tiny BERT super-network trained and searched on write_tiny_swag's files, every Pareto point extracted;
    and the retraining-free baseline's model for one budget."""
    root = tmp_path_factory.mktemp("swag")
    model_dir = write_tiny_model_dir(root / "model", "bert")
    train_file, test_file = write_tiny_swag(root / "data")
    data_flags = ["--task_name", "swag", "--train_file", str(train_file), "--validation_file", str(test_file)]
    train_supernet.main([
        "--model_name_or_path", str(model_dir), *data_flags, "--output_dir", str(root / "supernet"),
        "--log_dir", str(root / "tb"), "--sampling_strategy", "one_shot", "--search_space", "small",
        "--num_train_epochs", "3", "--per_device_train_batch_size", "8", "--learning_rate", "3e-3",
        "--save_strategy", "no", "--seed", "0", "--distill_hidden_states", "True",
    ])
    run_offline_search.main([
        "--model_name_or_path", str(model_dir), *data_flags, "--checkpoint_dir_model", str(root / "supernet"),
        "--search_space", "small", "--search_strategy", "random_search", "--num_samples", "12", "--seed", "0",
        "--output_dir", str(root / "search"), "--log_dir", str(root / "tb"), "--cost_seq_len", "16",
        "--latency_repeats", "1",
    ])
    results_file = root / "search" / "results_swag.json"
    results = json.loads(results_file.read_text())
    extracted = [extract(results_file, index, root / f"pruned_{index}") for index in range(len(results["pareto_set"]))]
    run_rfp.main([
        "--checkpoint_dir_model", str(root / "supernet"), *data_flags, "--budgets", "0.7",
        "--num_calibration_samples", "16", "--calibration_batch_size", "8", "--output_dir", str(root / "rfp"),
        "--cost_seq_len", "16", "--latency_repeats", "1",
    ])
    rfp_file = root / "rfp" / "results_swag.json"
    return {
        "root": root, "model_dir": model_dir, "data_flags": data_flags, "test_file": test_file, "results": results,
        "extracted": extracted, "rfp": json.loads(rfp_file.read_text()),
        "rfp_extracted": extract(rfp_file, 0, root / "rfp_0"),
    }


RELOAD = """
import csv, json, sys
import torch
from transformers import AutoModelForMultipleChoice, AutoTokenizer
test_file, directories = sys.argv[1], sys.argv[2:]
rows = list(csv.DictReader(open(test_file)))
scores = []
for directory in directories:
    custom = "auto_map" in json.load(open(f"{directory}/config.json"))
    model = AutoModelForMultipleChoice.from_pretrained(directory, trust_remote_code=custom).eval()
    tokenizer = AutoTokenizer.from_pretrained(directory)
    right = 0
    for row in rows:
        endings = [row[f"ending{k}"] for k in range(4)]
        seconds = [row["sent2"] + " " + ending for ending in endings]
        pairs = tokenizer([row["sent1"]] * 4, seconds, padding=True, return_tensors="pt")
        with torch.no_grad():
            logits = model(**{key: value.unsqueeze(0) for key, value in pairs.items()}).logits
        right += int(logits.argmax(-1).item() == int(row["label"]))
    scores.append({"class": type(model).__name__, "accuracy": right / len(rows),
                   "parameters": sum(p.numel() for p in model.parameters())})
print(json.dumps(scores))
"""


def reload_in_a_fresh_process(test_file: Path, directories: list[Path]) -> list[dict]:
    reloaded = subprocess.run(
        [sys.executable, "-c", RELOAD, str(test_file), *map(str, directories)],
        capture_output=True, text=True, check=True, cwd=PROJECT_DIR,
    )
    return json.loads(reloaded.stdout.strip().splitlines()[-1])


def test_swag_trains_searches_and_extracts_models_whose_fresh_reload_scores_the_recorded_accuracy(swag_run):
    results = swag_run["results"]
    assert results["task_name"] == "swag" and len(results["evaluations"]) == 12
    assert all(point["latency_ms"] > 0 for point in results["pareto_set"])
    reports = [json.loads((path / "extraction.json").read_text()) for path in swag_run["extracted"]]
    assert {report["checkpoint_kind"] for report in reports} == {"standard", "custom_code"}

    points = [*results["pareto_set"], swag_run["rfp"]["pareto_set"][0]]
    reports.append(json.loads((swag_run["rfp_extracted"] / "extraction.json").read_text()))
    scores = reload_in_a_fresh_process(swag_run["test_file"], [*swag_run["extracted"], swag_run["rfp_extracted"]])
    for point, report, score in zip(points, reports, scores, strict=True):
        assert report["matches_search"], report
        assert score["accuracy"] == pytest.approx(point["test"]["accuracy"], abs=1e-9)
        assert score["parameters"] == point["num_parameters"]
        assert score["class"].endswith("BertForMultipleChoice")
        assert score["class"].startswith("NasPruned") == (report["checkpoint_kind"] == "custom_code")


def test_standard_nas_fine_tunes_swag_sub_networks_whose_extraction_scores_the_recorded_accuracy(swag_run, tmp_path):
    run_standard_nas.main([
        "--model_name_or_path", str(swag_run["model_dir"]), *swag_run["data_flags"], "--output_dir", str(tmp_path),
        "--search_space", "small", "--scheduler", "random_search", "--max_epochs", "1", "--n_workers", "2",
        "--num_samples", "2", "--per_device_train_batch_size", "8", "--learning_rate", "1e-3", "--seed", "0",
        "--cost_seq_len", "16", "--latency_repeats", "1",
    ])
    results = json.loads((tmp_path / "results_swag.json").read_text())
    assert len(results["evaluations"]) == 2
    extracted = extract(tmp_path / "results_swag.json", 0, tmp_path / "pruned")
    (score,) = reload_in_a_fresh_process(swag_run["test_file"], [extracted])
    assert score["accuracy"] == pytest.approx(results["pareto_set"][0]["test"]["accuracy"], abs=1e-9)
    assert score["class"].endswith("BertForMultipleChoice")


def test_the_model_card_of_a_swag_model_says_multiple_choice_and_counts_the_choices(swag_run):
    card = (swag_run["extracted"][0] / "README.md").read_text()
    assert "pipeline_tag: multiple-choice" in card
    assert "AutoModelForMultipleChoice.from_pretrained(" in card
    assert "| MACs per example (4 choices of 16 tokens) |" in card
    assert "`3`: ending3" in card


# --- bad input -------------------------------------------------------------------------------------------------


def usage_error_line(capsys, main, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        exit_on_usage_error(partial(main, argv))
    assert exit_info.value.code == 2
    (line,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    return line


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_a_decoder_is_refused_for_swag_naming_the_model_types_with_a_multiple_choice_head(tmp_path, capsys, family):
    model_dir = write_tiny_model_dir(tmp_path / "model", family)
    train_file, test_file = write_tiny_swag(tmp_path / "data", num_train=20, num_test=4)
    line = usage_error_line(capsys, train_supernet.main, [
        "--model_name_or_path", str(model_dir), "--task_name", "swag", "--train_file", str(train_file),
        "--validation_file", str(test_file), "--output_dir", str(tmp_path / "never_written"),
    ])
    assert f"is a {family} model, for which transformers has no multiple-choice head" in line
    assert "bert, roberta, xlm-roberta, electra" in line
    assert not (tmp_path / "never_written").exists()


def test_swag_files_without_an_ending_column_are_refused_naming_it(tmp_path):
    train_file, _ = write_tiny_swag(tmp_path, num_train=8, num_test=4)
    rows = list(csv.reader(train_file.open()))
    ending3 = rows[0].index("ending3")
    with train_file.open("w", newline="") as file:
        csv.writer(file).writerows([row[:ending3] + row[ending3 + 1:] for row in rows])
    with pytest.raises(UsageError, match=r"has no column\(s\) \['ending3'\]"):
        load_raw_splits(DataArguments(task_name="swag", train_file=str(train_file)))


def test_a_local_copy_of_swag_in_data_dir_reads_like_the_hub(tmp_path):
    train_file, test_file = write_tiny_swag(tmp_path / "swag", num_train=20, num_test=6)
    test_file.rename(tmp_path / "swag" / "validation.csv")
    from_dir = load_raw_splits(DataArguments(task_name="swag", data_dir=str(tmp_path)))
    from_files = load_raw_splits(DataArguments(
        task_name="swag", train_file=str(train_file), validation_file=str(tmp_path / "swag" / "validation.csv")
    ))
    assert task_info_for(from_dir) == TASKS["swag"]
    for split in ("train", "validation", "test"):
        assert from_dir[split].to_list() == from_files[split].to_list()
