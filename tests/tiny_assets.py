"""Tiny on-disk assets for end-to-end tests: a model directory and a GLUE-format data directory."""

from __future__ import annotations

import random
from pathlib import Path

from support import PAD_ID, VOCAB_SIZE, tiny_model
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
WORDS = [f"w{i}" for i in range(VOCAB_SIZE - len(SPECIAL_TOKENS))]


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A whitespace word-level tokenizer over WORDS with BERT-style [CLS] a [SEP] b [SEP] templates."""
    vocab = {token: index for index, token in enumerate(SPECIAL_TOKENS + WORDS)}
    assert vocab["[PAD]"] == PAD_ID
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        eos_token="[PAD]",
        model_max_length=60,
    )


def write_tiny_model_dir(directory: Path, family: str, num_labels: int = 2) -> Path:
    """A save_pretrained folder of a random tiny model of `family`, loadable by path."""
    tiny_model(family, num_labels).save_pretrained(directory)
    tiny_tokenizer().save_pretrained(directory)
    return directory


def _sentence(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12)))


def _write_pair_task(data_dir: Path, folder: str, label_header: str, counts: tuple[int, int], row) -> Path:
    """<data_dir>/<folder>/{train,dev}.tsv: index, sentence1, sentence2, label; `row(index)` gives the last three."""
    task_dir = data_dir / folder
    task_dir.mkdir(parents=True, exist_ok=True)
    for name, count in zip(("train.tsv", "dev.tsv"), counts, strict=True):
        rows = [f"index\tsentence1\tsentence2\t{label_header}"]
        rows += ["\t".join((str(index), *row(index))) for index in range(count)]
        (task_dir / name).write_text("\n".join(rows) + "\n")
    return data_dir


def write_tiny_rte(data_dir: Path, num_train: int = 40, num_dev: int = 16, seed: int = 0) -> Path:
    """<data_dir>/RTE/{train,dev}.tsv in the original GLUE layout (index, sentence1, sentence2, label).

    The label is learnable: 'entailment' when the second sentence starts with the first one's first word.
    """
    rng = random.Random(seed)

    def row(index: int) -> tuple[str, str, str]:
        first, second = _sentence(rng), _sentence(rng)
        entailed = index % 2 == 0
        if entailed:
            second = first.split()[0] + " " + second
        return first, second, "entailment" if entailed else "not_entailment"

    return _write_pair_task(data_dir, "RTE", "label", (num_train, num_dev), row)


def write_tiny_stsb(data_dir: Path, num_train: int = 60, num_dev: int = 20, seed: int = 0) -> Path:
    """<data_dir>/STS-B/{train,dev}.tsv: a regression task with scores in [0, 5] far from 0 (like STS-B's).

    The score is easy to learn: high (3.5-5) when the first sentence starts with the word w0, low (0-2)
    when it starts with w1.
    """
    rng = random.Random(seed)

    def row(index: int) -> tuple[str, str, str]:
        high = index % 2 == 0
        first = f"{WORDS[0] if high else WORDS[1]} {_sentence(rng)}"
        score = rng.uniform(3.5, 5.0) if high else rng.uniform(0.0, 2.0)
        return first, _sentence(rng), f"{score:.3f}"

    return _write_pair_task(data_dir, "STS-B", "score", (num_train, num_dev), row)


POSITIVE_WORDS, NEGATIVE_WORDS = WORDS[:5], WORDS[5:10]


def write_tiny_sentiment(
    directory: Path, num_train: int = 300, num_test: int = 100, regression: bool = False, seed: int = 0
) -> tuple[Path, Path]:
    """(train.csv, test.csv) with a `sentence` and a learnable `label`, for --train_file/--validation_file.

    Half of the words are sentiment words; the label is 1 when positive ones outnumber negative ones
    (one label in ten flipped, so no network is perfect), or the float score #positive - #negative
    plus noise for regression.
    """
    rng = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, count in (("train.csv", num_train), ("test.csv", num_test)):
        rows = ["sentence,label"]
        for _ in range(count):
            words = [
                rng.choice(POSITIVE_WORDS + NEGATIVE_WORDS) if rng.random() < 0.5 else rng.choice(WORDS[10:])
                for _ in range(rng.randint(4, 12))
            ]
            score = sum(word in POSITIVE_WORDS for word in words) - sum(word in NEGATIVE_WORDS for word in words)
            if regression:
                label = f"{score + rng.gauss(0, 0.3):.3f}"
            else:
                label = str(int((score > 0) != (rng.random() < 0.1)))
            rows.append(f"{' '.join(words)},{label}")
        (directory / name).write_text("\n".join(rows) + "\n")
        paths.append(directory / name)
    return paths[0], paths[1]


SWAG_COLUMNS = ["video-id", "fold-ind", "startphrase", "sent1", "sent2", "gold-source", "ending0", "ending1",
                "ending2", "ending3", "label"]


def write_tiny_swag(directory: Path, num_train: int = 120, num_test: int = 40, seed: int = 0) -> tuple[Path, Path]:
    """(train.csv, val.csv) in the columns of the SWAG release and the hub's ``allenai/swag``, for --train_file and
    --validation_file with --task_name swag.

    Learnable: the right ending (at a random position) contains a word of POSITIVE_WORDS, the others none.
    """
    rng = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, count in (("train.csv", num_train), ("val.csv", num_test)):
        rows = [",".join(SWAG_COLUMNS)]
        for index in range(count):
            sent1, sent2 = _sentence(rng), " ".join(rng.choice(WORDS[10:]) for _ in range(rng.randint(1, 3)))
            label = rng.randrange(4)
            endings = [" ".join(rng.choice(WORDS[10:]) for _ in range(rng.randint(2, 6))) for _ in range(4)]
            endings[label] += f" {rng.choice(POSITIVE_WORDS)}"
            rows.append(",".join([f"v{index}", str(index), f"{sent1} {sent2}", sent1, sent2, "gen", *endings,
                                  str(label)]))
        (directory / name).write_text("\n".join(rows) + "\n")
        paths.append(directory / name)
    return paths[0], paths[1]
