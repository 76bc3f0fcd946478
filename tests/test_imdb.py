"""IMDB (`--task_name imdb`): local copies in the hub's columns, the hub's splits, head truncation of long
reviews, and the whole pipeline (train, search, extract) on a tiny model. No real IMDB data: the tests write
a handful of fake reviews."""

import json
import random
from pathlib import Path

import datasets
import pandas as pd
import pytest
import torch
from tiny_assets import WORDS, tiny_tokenizer, write_tiny_model_dir
from transformers import AutoConfig, AutoModelForSequenceClassification

import run_offline_search
import select_and_extract
import train_supernet
from nas_llm.common.errors import UsageError
from nas_llm.data import data
from nas_llm.data.data import TASKS, DataArguments, TaskInfo, load_raw_splits, task_info_for, tokenize_splits

# Ten training and four test reviews, labels as the hub stores them: 0 = neg, 1 = pos.
TRAIN_REVIEWS = [(f"review {i}: {'a fine' if i % 3 else 'a dull'} film, truly.", int(i % 3 > 0)) for i in range(10)]
TEST_REVIEWS = [("Great acting.", 1), ('A "so-so" plot, NA twists', 0), ("Dreadful.", 0), ("Loved it", 1)]
HUB_NAMES = {0: "neg", 1: "pos"}


def write_reviews(path: Path, reviews: list[tuple[str, int]], label_names: bool = False) -> Path:
    """A file in the hub's columns (text, label), in the format its suffix names; labels as ids or as names."""
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(
        {"text": [text for text, _ in reviews], "label": [HUB_NAMES[y] if label_names else y for _, y in reviews]}
    )
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    elif path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        frame.to_json(path, orient="records", lines=True)
    return path


def records(split: datasets.Dataset) -> list[tuple[str, int]]:
    return list(zip(split["text"], split["label"], strict=True))


# --- loading --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("train_suffix", "test_suffix"), [(".csv", ".jsonl"), (".parquet", ".csv"), (".jsonl", ".parquet")]
)
def test_local_copy_gives_train_validation_from_train_and_test_from_test(tmp_path, train_suffix, test_suffix):
    write_reviews(tmp_path / "imdb" / f"train{train_suffix}", TRAIN_REVIEWS)
    write_reviews(tmp_path / "imdb" / f"test{test_suffix}", TEST_REVIEWS, label_names=True)

    splits = load_raw_splits(DataArguments(task_name="imdb", data_dir=str(tmp_path)))

    assert task_info_for(splits) == TaskInfo(("text",), ("neg", "pos")) == TASKS["imdb"]
    assert records(splits["test"]) == TEST_REVIEWS  # the hub's test split, in file order, names mapped to ids
    assert (len(splits["train"]), len(splits["validation"])) == (7, 3)  # 30 % of train held out for the search
    assert sorted(records(splits["train"]) + records(splits["validation"])) == sorted(TRAIN_REVIEWS)
    # the task folder itself works too
    again = load_raw_splits(DataArguments(task_name="imdb", data_dir=str(tmp_path / "imdb")))
    assert records(again["validation"]) == records(splits["validation"])


def test_train_and_validation_file_work_with_the_task_labels(tmp_path):
    args = DataArguments(
        task_name="imdb",
        train_file=str(write_reviews(tmp_path / "train.csv", TRAIN_REVIEWS, label_names=True)),
        validation_file=str(write_reviews(tmp_path / "test.parquet", TEST_REVIEWS)),
    )
    splits = load_raw_splits(args)
    assert records(splits["test"]) == TEST_REVIEWS
    assert sorted(records(splits["train"]) + records(splits["validation"])) == sorted(TRAIN_REVIEWS)


def test_hub_splits_train_and_test_are_used_and_unsupervised_is_ignored(monkeypatch):
    label = datasets.ClassLabel(names=["neg", "pos"])  # as stanfordnlp/imdb declares it
    features = datasets.Features({"text": datasets.Value("string"), "label": label})

    def split(reviews):
        return datasets.Dataset.from_dict(
            {"text": [t for t, _ in reviews], "label": [y for _, y in reviews]}, features=features
        )

    unlabelled = [(f"unlabelled review {i}", -1) for i in range(5)]
    calls = []

    def fake_load_dataset(path, name=None, **kwargs):
        calls.append((path, name))
        hub_splits = {"train": TRAIN_REVIEWS, "test": TEST_REVIEWS, "unsupervised": unlabelled}
        return datasets.DatasetDict({name: split(reviews) for name, reviews in hub_splits.items()})

    monkeypatch.setattr(data, "hub_unavailable_reason", lambda: None)
    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)

    splits = load_raw_splits(DataArguments(task_name="imdb"))

    assert calls == [("stanfordnlp/imdb", "plain_text")]
    assert records(splits["test"]) == TEST_REVIEWS
    assert sorted(records(splits["train"]) + records(splits["validation"])) == sorted(TRAIN_REVIEWS)
    assert task_info_for(splits) == TASKS["imdb"]


def test_offline_hub_points_to_the_local_imdb_layout(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UsageError, match=r"--data_dir with imdb/train and imdb/test files"):
        load_raw_splits(DataArguments(task_name="imdb"))


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"train.csv": TRAIN_REVIEWS}, r"has no test file; add test.csv, .jsonl or .parquet"),
        ({"test.csv": TEST_REVIEWS}, r"neither a imdb/ folder nor a train.csv or train.json"),
        ({"train.csv": TRAIN_REVIEWS, "train.jsonl": TRAIN_REVIEWS, "test.csv": TEST_REVIEWS},
         r"has 2 train files \(train.csv, train.jsonl\); keep one of them"),
        ({"train.csv": TRAIN_REVIEWS, "test.csv": [("unlabelled", -1)]}, r"labels \['-1'\] that are not among"),
    ],
)
def test_bad_local_copies_are_one_line_usage_errors(tmp_path, files, message):
    for name, reviews in files.items():
        write_reviews(tmp_path / name, reviews)
    with pytest.raises(UsageError, match=message) as error:
        load_raw_splits(DataArguments(task_name="imdb", data_dir=str(tmp_path)))
    assert "\n" not in str(error.value)


def test_other_column_names_are_refused_naming_the_columns_found(tmp_path):
    pd.DataFrame({"review": ["Great."], "sentiment": ["positive"]}).to_csv(tmp_path / "train.csv", index=False)
    write_reviews(tmp_path / "test.csv", TEST_REVIEWS)
    with pytest.raises(UsageError, match=r"train.csv has no column\(s\) \['text', 'label'\] \(found: \['review'"):
        load_raw_splits(DataArguments(task_name="imdb", data_dir=str(tmp_path)))


# --- truncation -----------------------------------------------------------------------------------------------


def test_long_reviews_keep_their_head(tmp_path, tiny_bert_tokenizer):
    """[CLS], the first max_seq_length - 2 word pieces, [SEP]: the tokenizer's own right truncation."""
    long_review = "the movie is good , the cat sat on the mat . a dog ran on the mat . " * 5  # 85 words
    write_reviews(tmp_path / "train.csv", [(long_review, 1), ("bad .", 0)] * 5)
    write_reviews(tmp_path / "test.csv", [(long_review, 1), ("a good movie .", 1)])

    for max_seq_length, kept_words in ((12, 10), (1000, 62)):  # 1000 > the tokenizer's 64: cut to 64
        args = DataArguments(task_name="imdb", data_dir=str(tmp_path), max_seq_length=max_seq_length)
        test = tokenize_splits(load_raw_splits(args), tiny_bert_tokenizer, args, names=("test",))["test"]
        expected = tiny_bert_tokenizer.convert_tokens_to_ids(["[CLS]", *long_review.split()[:kept_words], "[SEP]"])
        assert test[0]["input_ids"] == expected
        assert test[1]["input_ids"] == tiny_bert_tokenizer.convert_tokens_to_ids(
            ["[CLS]", "a", "good", "movie", ".", "[SEP]"]
        )


# --- the pipeline ---------------------------------------------------------------------------------------------

MAX_SEQ_LENGTH = 16


def write_tiny_imdb(root: Path, num_train: int = 48, num_test: int = 16, seed: int = 0) -> Path:
    """<root>/imdb/train.csv and test.jsonl: reviews of 8 to 40 words (most longer than MAX_SEQ_LENGTH), labelled
    positive when w0 outnumbers w1 among their words."""
    rng = random.Random(seed)

    def review() -> tuple[str, int]:
        words = [rng.choice(WORDS[:2] + WORDS[2:20]) for _ in range(rng.randint(8, 40))]
        return " ".join(words), int(words.count(WORDS[0]) > words.count(WORDS[1]))

    write_reviews(root / "imdb" / "train.csv", [review() for _ in range(num_train)])
    write_reviews(root / "imdb" / "test.jsonl", [review() for _ in range(num_test)])
    return root


@torch.no_grad()
def accuracy_by_hand(model_dir: Path, test_file: Path) -> float:
    """The extracted checkpoint on the test file, head-truncated by the tokenizer itself, no code of the project."""
    test = pd.read_json(test_file, lines=True)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, trust_remote_code=True).eval()
    batch = tiny_tokenizer()(
        list(test["text"]), truncation=True, max_length=MAX_SEQ_LENGTH, padding=True, return_tensors="pt"
    )
    predictions = model(**batch).logits.argmax(-1).numpy()
    return float((predictions == test["label"].to_numpy()).mean())


def test_imdb_trains_searches_and_extracts_with_neg_pos_labels(tmp_path):
    model_dir = write_tiny_model_dir(tmp_path / "model", "bert")
    data_dir = write_tiny_imdb(tmp_path / "data")
    data_flags = ["--task_name", "imdb", "--data_dir", str(data_dir), "--max_seq_length", str(MAX_SEQ_LENGTH)]
    checkpoint, search_dir, pruned = tmp_path / "supernet", tmp_path / "search", tmp_path / "pruned"
    train_supernet.main([
        "--model_name_or_path", str(model_dir), *data_flags, "--output_dir", str(checkpoint),
        "--sampling_strategy", "sandwich", "--search_space", "small", "--num_train_epochs", "1",
        "--per_device_train_batch_size", "8", "--learning_rate", "1e-3", "--seed", "0",
    ])
    assert AutoConfig.from_pretrained(checkpoint).id2label == {0: "neg", 1: "pos"}
    run_offline_search.main([
        "--model_name_or_path", str(model_dir), *data_flags, "--checkpoint_dir_model", str(checkpoint),
        "--search_space", "small", "--search_strategy", "random_search", "--num_samples", "5",
        "--output_dir", str(search_dir), "--seed", "0", "--cost_seq_len", str(MAX_SEQ_LENGTH), "--latency_repeats", "1",
    ])
    results = json.loads((search_dir / "results_imdb.json").read_text())
    assert results["task_name"] == "imdb"
    assert all(set(point["test"]) == {"accuracy", "error"} for point in results["pareto_set"])

    select_and_extract.main(["--results", str(search_dir / "results_imdb.json"), "--pareto_index", "0",
                             "--output_dir", str(pruned)])
    report = json.loads((pruned / "extraction.json").read_text())
    assert report["matches_search"], report
    assert report["test_extracted"]["accuracy"] == pytest.approx(
        accuracy_by_hand(pruned, data_dir / "imdb" / "test.jsonl"), abs=1e-6
    )
    assert AutoConfig.from_pretrained(pruned, trust_remote_code=True).id2label == {0: "neg", 1: "pos"}
    card = (pruned / "README.md").read_text()
    assert "# A pruned imdb classifier" in card and "Labels: `0`: neg, `1`: pos." in card
