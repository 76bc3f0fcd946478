import csv
import itertools
import json
import socket
from collections.abc import Callable
from dataclasses import dataclass

import datasets
import pytest
import torch

from nas_llm.common.errors import UsageError
from nas_llm.common.hub import OFFLINE_ENV_VARS
from nas_llm.data.data import (
    GLUE_FILES,
    TASKS,
    DataArguments,
    LengthGroupedBatches,
    TaskInfo,
    least_padding_batches,
    load_raw_splits,
    make_dataloader,
    task_info_for,
    tokenize_splits,
)
from nas_llm.data.metrics import MAIN_METRIC

PAIR_TEXTS = [
    ('He called him "the witness".', '"The witness", he said.'),
    ("A man is playing a flute.", "A man plays."),
    ("It's 5 o'clock", 'an "unbalanced quote'),
    ("Short.", "Shorter."),
]
SINGLE_TEXTS = [(first,) for first, _ in PAIR_TEXTS]
MNLI_PARSES = "( parse )\t( parse )\t(ROOT parse)\t(ROOT parse)"
STSB_PREFIX = "main-captions\tMSRvid\t2012test\t0001\tnone\tnone"


@dataclass
class FakeGlueTask:
    """Tiny GLUE files in the original layout, and the records the loader should return for them."""

    folder: str
    header: str | None
    row: Callable[[int, tuple[str, ...], str], str]
    samples: list[tuple[tuple[str, ...], str, int | float]]  # texts, label as written, expected label
    dev_file: str = "dev.tsv"
    dev_header: str | None = None
    dev_row: Callable[[int, tuple[str, ...], str], str] | None = None


FAKE_GLUE = {
    "cola": FakeGlueTask(
        "CoLA",
        None,
        lambda i, texts, label: f"gj04\t{label}\t{'' if label == '1' else '*'}\t{texts[0]}",
        [(texts, label, int(label)) for texts, label in zip(SINGLE_TEXTS, "1001", strict=True)],
    ),
    "sst2": FakeGlueTask(
        "SST-2",
        "sentence\tlabel",
        lambda i, texts, label: f"{texts[0]}\t{label}",
        [((texts[0] + " ",), label, int(label)) for texts, label in zip(SINGLE_TEXTS, "0110", strict=True)],
    ),
    "mrpc": FakeGlueTask(
        "MRPC",
        "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String",
        lambda i, texts, label: f"{label}\t{100 + i}\t{200 + i}\t{texts[0]}\t{texts[1]}",
        [(texts, label, int(label)) for texts, label in zip(PAIR_TEXTS, "1010", strict=True)],
    ),
    "stsb": FakeGlueTask(
        "STS-B",
        "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore",
        lambda i, texts, label: f"{i}\t{STSB_PREFIX}\t{texts[0]}\t{texts[1]}\t{label}",
        [
            (texts, label, float(label))
            for texts, label in zip(PAIR_TEXTS, ["5.000", "3.750", "0.500", "2.250"], strict=True)
        ],
    ),
    "rte": FakeGlueTask(
        "RTE",
        "index\tsentence1\tsentence2\tlabel",
        lambda i, texts, label: f"{i}\t{texts[0]}\t{texts[1]}\t{label}",
        [
            (texts, label, TASKS["rte"].label_names.index(label))
            for texts, label in zip(
                PAIR_TEXTS, ["not_entailment", "entailment", "entailment", "not_entailment"], strict=True
            )
        ],
    ),
    "qnli": FakeGlueTask(
        "QNLI",
        "index\tquestion\tsentence\tlabel",
        lambda i, texts, label: f"{i}\t{texts[0]}\t{texts[1]}\t{label}",
        [
            (texts, label, TASKS["qnli"].label_names.index(label))
            for texts, label in zip(
                PAIR_TEXTS, ["entailment", "not_entailment", "not_entailment", "entailment"], strict=True
            )
        ],
    ),
    "wnli": FakeGlueTask(
        "WNLI",
        "index\tsentence1\tsentence2\tlabel",
        lambda i, texts, label: f"{i}\t{texts[0]}\t{texts[1]}\t{label}",
        [(texts, label, int(label)) for texts, label in zip(PAIR_TEXTS, "0110", strict=True)],
    ),
    "qqp": FakeGlueTask(
        "QQP",
        "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate",
        lambda i, texts, label: f"{i}\t{2 * i}\t{2 * i + 1}\t{texts[0]}\t{texts[1]}\t{label}",
        [(texts, label, int(label)) for texts, label in zip(PAIR_TEXTS, "0101", strict=True)],
    ),
    "mnli": FakeGlueTask(
        "MNLI",
        "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse\t"
        "sentence2_parse\tsentence1\tsentence2\tlabel1\tgold_label",
        lambda i, texts, label: f"{i}\t{i}\t{i}e\tfiction\t{MNLI_PARSES}\t{texts[0]}\t{texts[1]}\t{label}\t{label}",
        [
            (texts, label, TASKS["mnli"].label_names.index(label))
            for texts, label in zip(PAIR_TEXTS, ["neutral", "contradiction", "entailment", "neutral"], strict=True)
        ],
        dev_file="dev_matched.tsv",
        dev_header="index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\t"
        "sentence1_parse\tsentence2_parse\tsentence1\tsentence2\tlabel1\tlabel2\tlabel3\tlabel4\tlabel5\tgold_label",
        dev_row=lambda i, texts, label: (
            f"{i}\t{i}\t{i}e\tslate\t{MNLI_PARSES}\t{texts[0]}\t{texts[1]}\t"
            f"{label}\t{label}\t{label}\tneutral\t{label}\t{label}"
        ),
    ),
}


def write_tsv(path, header: str | None, lines: list[str], final_newline: bool = True) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "\n".join(([header] if header is not None else []) + lines)
    path.write_text(text + ("\n" if final_newline else ""), encoding="utf-8")


def write_fake_glue_task(glue_dir, fake: FakeGlueTask) -> None:
    """train.tsv holds the samples in order, the dev file holds them reversed."""
    numbered = list(enumerate(fake.samples))
    folder = glue_dir / fake.folder
    final_newline = fake.header is not None  # like the original CoLA dev.tsv, leave the last line open
    write_tsv(folder / "train.tsv", fake.header, [fake.row(i, texts, label) for i, (texts, label, _) in numbered])
    dev_row = fake.dev_row or fake.row
    dev_lines = [dev_row(i, texts, label) for i, (texts, label, _) in reversed(numbered)]
    write_tsv(folder / fake.dev_file, fake.dev_header or fake.header, dev_lines, final_newline)


def records(dataset: datasets.Dataset) -> list[tuple]:
    return list(zip(*(dataset[column] for column in dataset.column_names), strict=True))


def expected_records(fake: FakeGlueTask) -> list[tuple]:
    return [(*texts, label) for texts, _, label in fake.samples]


def write_sst2(glue_dir, num_rows: int, num_dev_rows: int = 1) -> list[str]:
    sentences = [f"sentence number {i} ." for i in range(num_rows)]
    write_tsv(glue_dir / "SST-2" / "train.tsv", "sentence\tlabel", [f"{s}\t{i % 2}" for i, s in enumerate(sentences)])
    dev_lines = [f"dev sentence {i} .\t{i % 2}" for i in range(num_dev_rows)]
    write_tsv(glue_dir / "SST-2" / "dev.tsv", "sentence\tlabel", dev_lines)
    return sentences


def write_csv(path, rows: list[dict]) -> str:
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return str(path)


def write_json_lines(path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def test_every_task_has_a_main_metric_and_every_glue_task_a_local_layout():
    assert set(TASKS) == set(MAIN_METRIC) - {"classification", "regression"}
    assert set(GLUE_FILES) == set(FAKE_GLUE) == set(TASKS) - {"imdb", "swag"}


@pytest.mark.parametrize("task_name", sorted(FAKE_GLUE))
def test_glue_dir_layouts_parse_into_hub_columns(tmp_path, task_name):
    fake = FAKE_GLUE[task_name]
    write_fake_glue_task(tmp_path, fake)

    splits = load_raw_splits(DataArguments(task_name=task_name, data_dir=str(tmp_path)))

    expected = expected_records(fake)
    assert splits["test"].column_names == [*TASKS[task_name].text_keys, "label"]
    assert records(splits["test"]) == expected[::-1]
    assert sorted(records(splits["train"]) + records(splits["validation"])) == sorted(expected)
    assert task_info_for(splits) == TASKS[task_name]


def test_data_dir_may_point_at_the_task_folder(tmp_path):
    write_fake_glue_task(tmp_path, FAKE_GLUE["rte"])
    splits = load_raw_splits(DataArguments(task_name="rte", data_dir=str(tmp_path / "RTE")))
    assert records(splits["test"]) == expected_records(FAKE_GLUE["rte"])[::-1]


def test_split_is_70_30_and_deterministic_for_a_dataset_seed(tmp_path):
    sentences = write_sst2(tmp_path, num_rows=50)

    def load(seed: int) -> datasets.DatasetDict:
        return load_raw_splits(DataArguments(task_name="sst2", data_dir=str(tmp_path), dataset_seed=seed))

    first, again, other_seed = load(0), load(0), load(1)
    assert (len(first["train"]), len(first["validation"])) == (35, 15)
    assert sorted([*first["train"]["sentence"], *first["validation"]["sentence"]]) == sorted(sentences)
    assert list(first["validation"]["sentence"]) == list(again["validation"]["sentence"])
    assert list(first["train"]["sentence"]) == list(again["train"]["sentence"])
    assert set(first["validation"]["sentence"]) != set(other_seed["validation"]["sentence"])
    assert list(first["test"]["sentence"]) == ["dev sentence 0 ."]


def test_max_samples_subsample_each_split_without_changing_the_validation_split(tmp_path):
    write_sst2(tmp_path, num_rows=50, num_dev_rows=30)
    full = load_raw_splits(DataArguments(task_name="sst2", data_dir=str(tmp_path)))
    capped_args = DataArguments(task_name="sst2", data_dir=str(tmp_path), max_train_samples=5, max_test_samples=5)
    capped = load_raw_splits(capped_args)

    # the test subset is random (GLUE dev files are often ordered by source) but keeps the file order
    dev_rows = [int(sentence.split()[2]) for sentence in capped["test"]["sentence"]]
    assert len(dev_rows) == 5 and dev_rows == sorted(dev_rows) and dev_rows != list(range(5))

    assert len(capped["train"]) == 5
    assert set(capped["train"]["sentence"]) <= set(full["train"]["sentence"])
    assert list(capped["validation"]["sentence"]) == list(full["validation"]["sentence"])
    assert list(capped["train"]["sentence"]) == list(load_raw_splits(capped_args)["train"]["sentence"])

    eval_capped = load_raw_splits(DataArguments(task_name="sst2", data_dir=str(tmp_path), max_eval_samples=4))
    assert len(eval_capped["validation"]) == 4
    assert set(eval_capped["validation"]["sentence"]) <= set(full["validation"]["sentence"])
    assert list(eval_capped["train"]["sentence"]) == list(full["train"]["sentence"])


def test_user_csv_with_string_labels_maps_them_in_sorted_order(tmp_path):
    train_rows = [{"text": f"review {i}", "stars": "pos" if i % 3 else "neg"} for i in range(10)]
    test_rows = [{"text": 'a, quoted "one"', "stars": "pos"}, {"text": "NA", "stars": "neg"}]
    args = DataArguments(
        train_file=write_csv(tmp_path / "train.csv", train_rows),
        validation_file=write_csv(tmp_path / "test.csv", test_rows),
        text_column="text",
        label_column="stars",
    )

    splits = load_raw_splits(args)

    assert records(splits["test"]) == [('a, quoted "one"', 1), ("NA", 0)]
    assert task_info_for(splits) == TaskInfo(("text",), ("neg", "pos"))
    assert sorted([*splits["train"]["text"], *splits["validation"]["text"]]) == sorted(r["text"] for r in train_rows)


def test_user_json_lines_pairs_with_integer_labels(tmp_path):
    rows = [{"premise": f"p{i}", "hypothesis": f"h{i}", "label": 3 + i % 2} for i in range(10)]
    args = DataArguments(
        train_file=write_json_lines(tmp_path / "train.jsonl", rows),
        validation_file=write_json_lines(tmp_path / "dev.json", rows[:3]),
        text_column="premise",
        text_pair_column="hypothesis",
    )

    splits = load_raw_splits(args)

    assert records(splits["test"]) == [("p0", "h0", 0), ("p1", "h1", 1), ("p2", "h2", 0)]
    info = task_info_for(splits)
    assert (info.text_keys, info.label_names, info.num_labels) == (("premise", "hypothesis"), ("3", "4"), 2)


def test_user_float_labels_mean_regression(tmp_path):
    rows = [{"sentence": f"s{i}", "label": i / 4} for i in range(10)]
    args = DataArguments(train_file=write_json_lines(tmp_path / "train.jsonl", rows))

    splits = load_raw_splits(args)

    info = task_info_for(splits)
    assert info.is_regression and info.num_labels == 1
    all_labels = [label for split in splits.values() for label in split["label"]]
    assert sorted(all_labels) == [row["label"] for row in rows]


def test_user_file_without_validation_file_holds_out_a_test_split(tmp_path):
    rows = [{"sentence": f"s{i}", "label": i % 2} for i in range(20)]
    splits = load_raw_splits(DataArguments(train_file=write_csv(tmp_path / "train.csv", rows)))

    sizes = {name: len(split) for name, split in splits.items()}
    assert sizes == {"train": 9, "validation": 5, "test": 6}
    all_sentences = [s for split in splits.values() for s in split["sentence"]]
    assert sorted(all_sentences) == sorted(row["sentence"] for row in rows)


def test_user_file_with_glue_task_uses_the_task_labels(tmp_path):
    rows = [{"sentence1": f"a{i}", "sentence2": f"b{i}", "label": "not_entailment"} for i in range(4)]
    rows[0]["label"] = "entailment"
    args = DataArguments(
        task_name="rte",
        train_file=write_csv(tmp_path / "rte.csv", rows),
        validation_file=write_csv(tmp_path / "rte_dev.csv", rows[:2]),
    )

    splits = load_raw_splits(args)

    assert records(splits["test"]) == [("a0", "b0", 0), ("a1", "b1", 1)]
    assert task_info_for(splits) == TASKS["rte"]


def test_missing_user_column_names_the_columns_found(tmp_path):
    train_file = write_csv(tmp_path / "train.csv", [{"text": "x", "label": 0}, {"text": "y", "label": 1}])
    with pytest.raises(UsageError, match=r"\['sentence'\].*found: \['text', 'label'\].*--text_column"):
        load_raw_splits(DataArguments(train_file=train_file))


def test_empty_user_labels_are_reported(tmp_path):
    train_file = tmp_path / "train.csv"
    train_file.write_text("sentence,label\na,1\nb,\nc,0\n")
    with pytest.raises(UsageError, match="'label' is empty in 1 row"):
        load_raw_splits(DataArguments(train_file=str(train_file)))


def test_test_labels_unseen_in_training_are_rejected(tmp_path):
    train_file = write_csv(tmp_path / "train.csv", [{"sentence": "a", "label": 1}, {"sentence": "b", "label": 2}])
    test_file = write_csv(tmp_path / "test.csv", [{"sentence": "c", "label": 0}])
    with pytest.raises(UsageError, match=r"labels \['0'\]"):
        load_raw_splits(DataArguments(train_file=train_file, validation_file=test_file))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"task_name": "yelp"}, "choose one of: cola, mnli"),
        ({}, "--task_name"),
        ({"train_file": "missing.csv"}, "does not exist"),
        ({"task_name": "rte", "validation_file": "dev.csv"}, "needs --train_file"),
        ({"task_name": "rte", "data_dir": "no/such/dir"}, "not a directory"),
        ({"task_name": "rte", "validation_fraction": 1.0}, "strictly between 0 and 1"),
        ({"task_name": "rte", "max_train_samples": 0}, "--max_train_samples must be positive"),
    ],
)
def test_bad_arguments_raise_usage_errors(kwargs, message):
    with pytest.raises(UsageError, match=message):
        load_raw_splits(DataArguments(**kwargs))


def test_unsupported_and_empty_user_files(tmp_path):
    (tmp_path / "train.txt").write_text("sentence label\n")
    with pytest.raises(UsageError, match=r"\.csv, a JSON-lines \.json/\.jsonl or a \.parquet file"):
        load_raw_splits(DataArguments(train_file=str(tmp_path / "train.txt")))
    (tmp_path / "train.csv").write_text("sentence,label\n")
    with pytest.raises(UsageError, match="no data rows"):
        load_raw_splits(DataArguments(train_file=str(tmp_path / "train.csv")))


def test_glue_dir_errors_name_the_file(tmp_path):
    write_fake_glue_task(tmp_path, FAKE_GLUE["rte"])
    (tmp_path / "RTE" / "dev.tsv").unlink()
    with pytest.raises(UsageError, match=r"Missing GLUE file .*RTE/dev.tsv"):
        load_raw_splits(DataArguments(task_name="rte", data_dir=str(tmp_path)))
    with pytest.raises(UsageError, match="neither a CoLA/ folder nor a train.tsv"):
        load_raw_splits(DataArguments(task_name="cola", data_dir=str(tmp_path)))


def test_glue_file_with_a_broken_row_names_the_line(tmp_path):
    write_fake_glue_task(tmp_path, FAKE_GLUE["wnli"])
    with (tmp_path / "WNLI" / "train.tsv").open("a") as file:
        file.write("9\tonly two\tfields and a tab\t1\textra\n")
    with pytest.raises(UsageError, match="line 6 has 5 tab-separated fields, expected 4"):
        load_raw_splits(DataArguments(task_name="wnli", data_dir=str(tmp_path)))


def test_unknown_glue_label_is_reported(tmp_path):
    write_fake_glue_task(tmp_path, FAKE_GLUE["rte"])
    with (tmp_path / "RTE" / "train.tsv").open("a") as file:
        file.write("9\ta\tb\tcontradiction\n")
    with pytest.raises(UsageError, match=r"labels \['contradiction'\]"):
        load_raw_splits(DataArguments(task_name="rte", data_dir=str(tmp_path)))


def forbid_hub_download(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("load_dataset must not be called when the hub is unavailable")

    monkeypatch.setattr(datasets, "load_dataset", fail)


def test_offline_hub_fails_fast_naming_the_local_options(monkeypatch):
    forbid_hub_download(monkeypatch)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UsageError, match=r"HF_HUB_OFFLINE is set.*--data_dir.*--train_file"):
        load_raw_splits(DataArguments(task_name="rte"))


def test_unreachable_hub_fails_fast_naming_the_local_options(monkeypatch):
    forbid_hub_download(monkeypatch)
    for name in OFFLINE_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    probes = []

    def unreachable(address, timeout):
        probes.append(timeout)
        raise OSError("Name or service not known")

    monkeypatch.setattr(socket, "create_connection", unreachable)
    with pytest.raises(UsageError, match=r"unreachable.*--data_dir.*--train_file"):
        load_raw_splits(DataArguments(task_name="rte"))
    assert probes and max(probes) <= 5


def tokenized_sst2(tmp_path, tokenizer, **kwargs) -> datasets.DatasetDict:
    rows = [{"sentence": " ".join(["the cat sat"] * (1 + i % 5)), "label": i % 2} for i in range(20)]
    args = DataArguments(train_file=write_csv(tmp_path / "train.csv", rows), **kwargs)
    return tokenize_splits(load_raw_splits(args), tokenizer, args)


def test_tokenize_splits_keeps_only_model_inputs_and_truncates(tmp_path, tiny_bert_tokenizer):
    tokenized = tokenized_sst2(tmp_path, tiny_bert_tokenizer, max_seq_length=8)
    for split in tokenized.values():
        assert set(split.column_names) == {"input_ids", "token_type_ids", "attention_mask", "labels"}
    lengths = [len(ids) for split in tokenized.values() for ids in split["input_ids"]]
    assert max(lengths) == 8 and min(lengths) == 5  # unpadded: [CLS] the cat sat [SEP]


def test_tokenize_splits_encodes_sentence_pairs(tmp_path, tiny_bert_tokenizer):
    write_fake_glue_task(tmp_path, FAKE_GLUE["rte"])
    args = DataArguments(task_name="rte", data_dir=str(tmp_path))
    tokenized = tokenize_splits(load_raw_splits(args), tiny_bert_tokenizer, args)
    first = tokenized["test"][0]  # the dev file is reversed: ("Short.", "Shorter.")
    assert first["token_type_ids"].count(1) > 0
    assert first["input_ids"].count(tiny_bert_tokenizer.sep_token_id) == 2


def test_dataloader_pads_each_batch_to_its_longest_example(tmp_path, tiny_bert_tokenizer):
    tokenized = tokenized_sst2(tmp_path, tiny_bert_tokenizer, max_seq_length=64)
    train = tokenized["train"].add_column("row", list(range(len(tokenized["train"]))))
    loader = make_dataloader(train, tiny_bert_tokenizer, batch_size=4, shuffle=True, seed=0)

    for batch in loader:
        lengths = [len(train[row]["input_ids"]) for row in batch["row"].tolist()]
        assert batch["input_ids"].shape == (len(lengths), max(lengths))
        assert max(lengths) < 64
        assert batch["attention_mask"].sum(dim=1).tolist() == lengths
        assert batch["labels"].dtype == torch.long


def test_evaluation_batches_hold_similar_lengths_longest_first(tmp_path, tiny_bert_tokenizer):
    tokenized = tokenized_sst2(tmp_path, tiny_bert_tokenizer, max_seq_length=64)
    train = tokenized["train"].add_column("row", list(range(len(tokenized["train"]))))
    lengths = [len(ids) for ids in train["input_ids"]]
    assert len(set(lengths)) > 3  # the check below means something only with varied lengths

    batches = list(make_dataloader(train, tiny_bert_tokenizer, batch_size=4, shuffle=False, seed=0))

    rows = [row for batch in batches for row in batch["row"].tolist()]
    assert sorted(rows) == list(range(len(train)))  # every example once
    assert [lengths[row] for row in rows] == sorted(lengths, reverse=True)
    for batch in batches:
        batch_lengths = [lengths[row] for row in batch["row"].tolist()]
        assert batch["input_ids"].shape == (len(batch_lengths), max(batch_lengths))
        assert batch["attention_mask"].sum(dim=1).tolist() == batch_lengths
    file_order_tokens = sum(max(lengths[start:start + 4]) * len(lengths[start:start + 4])
                            for start in range(0, len(lengths), 4))
    assert sum(batch["input_ids"].numel() for batch in batches) < file_order_tokens


def cheapest_cut_by_enumeration(lengths: list[int], max_size: int, overhead: int) -> int:
    """The least padded tokens plus `overhead` per batch over every way of cutting `lengths` (sorted, longest
    first) into consecutive batches of at most `max_size`: all 2^(n-1) cut sets, for the reference."""
    best = None
    for cuts in itertools.product([False, True], repeat=len(lengths) - 1):
        bounds = [0, *[index + 1 for index, cut in enumerate(cuts) if cut], len(lengths)]
        sizes = [end - start for start, end in itertools.pairwise(bounds)]
        if max(sizes) <= max_size:
            cost = sum(lengths[start] * size + overhead for start, size in zip(bounds[:-1], sizes, strict=True))
            best = cost if best is None else min(best, cost)
    return best


def dataset_of_lengths(lengths: list[int]) -> datasets.Dataset:
    return datasets.Dataset.from_dict({"input_ids": [[7] * length for length in lengths]})


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize(("max_size", "overhead"), [(3, 0), (4, 5), (12, 20), (12, 1000)])
def test_least_padding_batches_are_the_cheapest_cut_of_the_length_sorted_examples(seed, max_size, overhead):
    lengths = [int(n) for n in torch.randint(1, 40, (11,), generator=torch.Generator().manual_seed(seed))]
    batches = least_padding_batches(dataset_of_lengths(lengths), max_size, overhead)
    rows = [row for batch in batches for row in batch]
    assert sorted(rows) == list(range(len(lengths)))  # every example once
    assert [lengths[row] for row in rows] == sorted(lengths, reverse=True)  # longest first
    assert max(map(len, batches)) <= max_size
    cost = sum(max(lengths[row] for row in batch) * len(batch) + overhead for batch in batches)
    assert cost == cheapest_cut_by_enumeration(sorted(lengths, reverse=True), max_size, overhead)


def test_least_padding_batches_by_hand():
    # sorted 30, 10, 9, 9, 8: one batch pads to 150 tokens; cutting after the 30 costs 30 + 40 = 70 plus a second
    # batch's overhead of 10, the best; a third batch saves at most 1 x 2 tokens for another 10
    assert least_padding_batches(dataset_of_lengths([9, 30, 8, 10, 9]), 8, 10) == [[1], [3, 0, 4, 2]]
    # at an overhead of 100 one batch is cheapest
    assert least_padding_batches(dataset_of_lengths([9, 30, 8, 10, 9]), 8, 100) == [[1, 3, 0, 4, 2]]
    # at most 2 a batch, overhead 1: 30 | 10 | 9 9 | 8 costs 66 + 4, 30 | 10 9 | 9 8 costs 68 + 3
    assert least_padding_batches(dataset_of_lengths([9, 30, 8, 10, 9]), 2, 1) == [[1], [3], [0, 4], [2]]


def test_least_padding_evaluation_loader_pads_each_batch_to_its_longest(tmp_path, tiny_bert_tokenizer):
    tokenized = tokenized_sst2(tmp_path, tiny_bert_tokenizer, max_seq_length=64)
    train = tokenized["train"].add_column("row", list(range(len(tokenized["train"]))))
    lengths = [len(ids) for ids in train["input_ids"]]
    batches = list(make_dataloader(train, tiny_bert_tokenizer, 4, False, 0, least_padding=True))
    assert sorted(row for batch in batches for row in batch["row"].tolist()) == list(range(len(train)))
    for batch in batches:
        batch_lengths = [lengths[row] for row in batch["row"].tolist()]
        assert batch["input_ids"].shape == (len(batch_lengths), max(batch_lengths)) and len(batch_lengths) <= 4


def test_pad_to_max_length_pads_everything(tmp_path, tiny_bert_tokenizer):
    tokenized = tokenized_sst2(tmp_path, tiny_bert_tokenizer, max_seq_length=24, pad_to_max_length=True)
    batch = next(iter(make_dataloader(tokenized["train"], tiny_bert_tokenizer, batch_size=3, shuffle=False, seed=0)))
    assert batch["input_ids"].shape == (3, 24)


def test_shuffling_is_reproducible_from_the_seed(tmp_path, tiny_bert_tokenizer):
    train = tokenized_sst2(tmp_path, tiny_bert_tokenizer)["train"]
    train = train.add_column("row", list(range(len(train))))

    def order(seed: int) -> list[int]:
        loader = make_dataloader(train, tiny_bert_tokenizer, batch_size=3, shuffle=True, seed=seed)
        return [row for batch in loader for row in batch["row"].tolist()]

    assert order(0) == order(0)
    assert order(0) != order(1)
    assert sorted(order(0)) == list(range(len(train)))


def test_length_grouped_batches_take_every_example_once_in_windows_sorted_by_length():
    """Lengths 1..1000 in a random file order, batches of 8, windows of 5 batches (40 examples)."""
    file_lengths = torch.randperm(1000, generator=torch.Generator().manual_seed(0)).add(1).tolist()
    batches = list(LengthGroupedBatches(file_lengths, 8, torch.Generator().manual_seed(1), window_batches=5))

    assert len(batches) == 125 and all(len(batch) == 8 for batch in batches)
    assert sorted(row for batch in batches for row in batch) == list(range(1000))
    # A batch is 8 neighbours in length among the 40 examples of its window: with lengths spread over 1..1000,
    # their range is about 8 / 40 of the 1000 (random batches span most of it).
    spans = [max(file_lengths[row] for row in batch) - min(file_lengths[row] for row in batch) for batch in batches]
    assert sum(spans) / len(spans) < 350
    padded = sum(8 * max(file_lengths[row] for row in batch) for batch in batches)
    random_batches = [list(range(start, start + 8)) for start in range(0, 1000, 8)]  # file order is random
    padded_random = sum(8 * max(file_lengths[row] for row in batch) for batch in random_batches)
    assert padded < 0.75 * padded_random
    # The batches are shuffled: lengths do not come out sorted, and another seed gives another order.
    assert [max(file_lengths[row] for row in batch) for batch in batches] != sorted(
        [max(file_lengths[row] for row in batch) for batch in batches], reverse=True)
    other = list(LengthGroupedBatches(file_lengths, 8, torch.Generator().manual_seed(2), window_batches=5))
    assert other != batches


def test_grouped_training_batches_follow_the_loaders_generator_so_a_resumed_epoch_repeats(
    tmp_path, tiny_bert_tokenizer
):
    """train_state saves `loader.generator` after an epoch; restoring it must give the next epoch's batches."""
    train = tokenized_sst2(tmp_path, tiny_bert_tokenizer, max_seq_length=64)["train"]
    train = train.add_column("row", list(range(len(train))))

    def loader():
        return make_dataloader(train, tiny_bert_tokenizer, batch_size=3, shuffle=True, seed=0, group_by_length=True)

    def epoch(data_loader) -> list[list[int]]:
        return [batch["row"].tolist() for batch in data_loader]

    uninterrupted = loader()
    first, state = epoch(uninterrupted), uninterrupted.generator.get_state()
    second = epoch(uninterrupted)
    resumed = loader()
    resumed.generator.set_state(state)
    assert epoch(resumed) == second != first
    assert sorted(sum(second, [])) == list(range(len(train)))
    lengths = [len(ids) for ids in train["input_ids"]]
    for batch in loader():
        assert batch["input_ids"].shape == (len(batch["row"]), max(lengths[row] for row in batch["row"].tolist()))
