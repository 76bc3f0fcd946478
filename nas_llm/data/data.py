"""Task data for super-network training and sub-network search.

The protocol follows the original NAS-for-LLMs example: the task's *training* file is split into
train/validation (70/30, seeded by ``dataset_seed``) and the search picks sub-networks on that
validation split, so the GLUE *dev* set stays untouched and serves as the test set
(MNLI: dev_matched; IMDB, which has no dev set: its test split; SWAG, whose test labels are hidden: its
validation split).

Data comes from, in this order of precedence: the user's files (``--train_file``), a local copy
(``--data_dir``: the classic GLUE download, or IMDB's splits as CSV/JSON-lines/Parquet files), or the
Hugging Face hub (``nyu-mll/glue``, ``stanfordnlp/imdb``, ``allenai/swag``).
"""

import csv
import logging
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import datasets
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader
from transformers import DataCollatorForMultipleChoice, DataCollatorWithPadding, PreTrainedTokenizerBase

from nas_llm.common.errors import UsageError
from nas_llm.common.hub import hub_unavailable_reason
from nas_llm.data.multiple_choice import is_multiple_choice_data, tokenize_choices

logger = logging.getLogger(__name__)

LABEL = "label"
GLUE_HUB_ID = "nyu-mll/glue"
TABLE_SUFFIXES = (".csv", ".json", ".jsonl", ".parquet")  # the user files' formats, read by pandas
LM_TASK = "lm"  # language modelling: lm_data.py loads the text, language_modeling.py trains and scores
DATA_PATH_FLAGS = ("data_dir", "train_file", "validation_file")
GLUE_DIR_HELP = "--data_dir with a local GLUE copy (<TASK>/train.tsv and dev.tsv) or --train_file/--validation_file"


@dataclass(frozen=True)
class TaskInfo:
    """What the model head and the metrics need to know about a task's data."""

    text_keys: tuple[str, ...]  # one text column, or two for sentence pairs (multiple choice: context, stem)
    label_names: tuple[str, ...]  # class names in label-id order; empty for regression
    # Multiple choice (SWAG): the label names are the columns of the candidate endings, label k = ending k is right.
    multiple_choice: bool = False

    @property
    def is_regression(self) -> bool:
        return not self.label_names

    @property
    def num_labels(self) -> int:
        return 1 if self.is_regression else len(self.label_names)


# Column names and label order as in the hub's ``nyu-mll/glue`` ClassLabel features.
TASKS: dict[str, TaskInfo] = {
    "cola": TaskInfo(("sentence",), ("unacceptable", "acceptable")),
    "mnli": TaskInfo(("premise", "hypothesis"), ("entailment", "neutral", "contradiction")),
    "mrpc": TaskInfo(("sentence1", "sentence2"), ("not_equivalent", "equivalent")),
    "qnli": TaskInfo(("question", "sentence"), ("entailment", "not_entailment")),
    "qqp": TaskInfo(("question1", "question2"), ("not_duplicate", "duplicate")),
    "rte": TaskInfo(("sentence1", "sentence2"), ("entailment", "not_entailment")),
    "sst2": TaskInfo(("sentence",), ("negative", "positive")),
    "stsb": TaskInfo(("sentence1", "sentence2"), ()),
    "wnli": TaskInfo(("sentence1", "sentence2"), ("not_entailment", "entailment")),
    # IMDB movie reviews (binary sentiment), as the hub's ``stanfordnlp/imdb``.
    "imdb": TaskInfo(("text",), ("neg", "pos")),
    # Columns as in the hub's ``allenai/swag`` (and the SWAG release's CSVs); the label is the right ending's index.
    "swag": TaskInfo(("sent1", "sent2"), ("ending0", "ending1", "ending2", "ending3"), multiple_choice=True),
}


@dataclass(frozen=True)
class GlueFiles:
    """Where a task lives in the classic GLUE download and which TSV column holds each field."""

    folder: str
    dev_file: str
    columns: dict[str, str | int]  # output column -> header name, or position in header-less files
    has_header: bool = True


GLUE_FILES: dict[str, GlueFiles] = {
    "cola": GlueFiles("CoLA", "dev.tsv", {"sentence": 3, LABEL: 1}, has_header=False),
    "mnli": GlueFiles(
        "MNLI", "dev_matched.tsv", {"premise": "sentence1", "hypothesis": "sentence2", LABEL: "gold_label"}
    ),
    "mrpc": GlueFiles("MRPC", "dev.tsv", {"sentence1": "#1 String", "sentence2": "#2 String", LABEL: "Quality"}),
    "qnli": GlueFiles("QNLI", "dev.tsv", {"question": "question", "sentence": "sentence", LABEL: "label"}),
    "qqp": GlueFiles("QQP", "dev.tsv", {"question1": "question1", "question2": "question2", LABEL: "is_duplicate"}),
    "rte": GlueFiles("RTE", "dev.tsv", {"sentence1": "sentence1", "sentence2": "sentence2", LABEL: "label"}),
    "sst2": GlueFiles("SST-2", "dev.tsv", {"sentence": "sentence", LABEL: "label"}),
    "stsb": GlueFiles("STS-B", "dev.tsv", {"sentence1": "sentence1", "sentence2": "sentence2", LABEL: "score"}),
    "wnli": GlueFiles("WNLI", "dev.tsv", {"sentence1": "sentence1", "sentence2": "sentence2", LABEL: "label"}),
}


@dataclass(frozen=True)
class HubDataset:
    """Where the hub keeps a task, and which of its splits is the test set (the training split is "train")."""

    path: str
    config: str
    test_split: str


HUB_DATASETS: dict[str, HubDataset] = {
    **{name: HubDataset(GLUE_HUB_ID, name, "validation") for name in GLUE_FILES},
    "mnli": HubDataset(GLUE_HUB_ID, "mnli", "validation_matched"),
    "imdb": HubDataset("stanfordnlp/imdb", "plain_text", "test"),  # its "unsupervised" split (label -1): unused
    "swag": HubDataset("allenai/swag", "regular", "validation"),  # its test split has no labels
}
# Tasks whose local copy (--data_dir) is <task>/{train,<test split>}.<csv|jsonl|parquet> in the hub's columns.
TABLE_TASKS = ("imdb", "swag")


@dataclass
class DataArguments:
    """Which data to load and how to split, subsample and tokenise it."""

    task_name: str | None = field(
        default=None,
        metadata={
            "help": f"Task, one of: {', '.join(TASKS)} (GLUE, imdb: movie-review sentiment, swag: multiple "
            f"choice); or '{LM_TASK}' to prune a causal language model on text (see --block_size). Leave unset to use "
            "--train_file with labels inferred from the file."
        },
    )
    data_dir: str | None = field(
        default=None,
        metadata={
            "help": "Local copy used instead of the hub: the folder with <TASK>/train.tsv and dev.tsv "
            "(MNLI: dev_matched.tsv) as written by download_glue_data.py; for imdb, imdb/train and imdb/test "
            "as .csv, .jsonl or .parquet with the hub's columns (text, label), for swag, swag/train and "
            "swag/validation likewise (sent1, sent2, ending0..ending3, label); or the task folder itself."
        },
    )
    train_file: str | None = field(
        default=None,
        metadata={
            "help": "CSV, JSON-lines or Parquet training file; takes precedence over --data_dir and the hub. It "
            "is split into train/validation like a GLUE training file."
        },
    )
    validation_file: str | None = field(
        default=None,
        metadata={
            "help": "CSV, JSON-lines or Parquet file used as the TEST set (the role of the GLUE dev set). Without "
            "it, a --validation_fraction share of --train_file is held out as the test set first."
        },
    )
    text_column: str | None = field(
        default=None,
        metadata={
            "help": "Column of the (first) text in the user files; default: the task's first text key, "
            "or 'sentence' without --task_name."
        },
    )
    text_pair_column: str | None = field(
        default=None,
        metadata={
            "help": "Column of the second text of a pair in the user files; default: the task's second "
            "text key, or none (single texts) without --task_name."
        },
    )
    label_column: str = field(
        default="label",
        metadata={
            "help": "Column of the labels in the user files. Float labels mean regression; other labels "
            "become class ids in sorted order (with --task_name: the task's class names or ids)."
        },
    )
    max_seq_length: int = field(
        default=128,
        metadata={
            "help": "Tokens per example after tokenisation; longer inputs keep their head (the first tokens). At "
            "most the tokenizer's model_max_length (512 for BERT, MiniLM)."
        },
    )
    dataset_seed: int = field(
        default=0,
        metadata={
            "help": "Seed of the train/validation split and of all subsampling, so that every trial and "
            "every sub-network sees the same data."
        },
    )
    validation_fraction: float = field(
        default=0.3, metadata={"help": "Share of the training file held out as the validation split."}
    )
    max_train_samples: int | None = field(
        default=None,
        metadata={
            "help": "For quick runs: keep a random subset (seeded by --dataset_seed) of this many training "
            "examples, drawn AFTER the train/validation split so the validation split does not change."
        },
    )
    max_eval_samples: int | None = field(
        default=None,
        metadata={
            "help": "Keep a random subset of this many validation examples, the split the search "
            "evaluates every sub-network on (the original used 2048 for sst2, qqp, qnli and mnli)."
        },
    )
    max_test_samples: int | None = field(
        default=None,
        metadata={
            "help": "For quick runs: keep a random subset of this many test examples; leave unset to "
            "report on the full GLUE dev set."
        },
    )
    pad_to_max_length: bool = field(
        default=False,
        metadata={
            "help": "Pad every example to --max_seq_length; by default batches are padded dynamically "
            "to their longest example."
        },
    )

    def __post_init__(self) -> None:
        _check_arguments(self)


def absolute_data_flags(args: DataArguments) -> dict:
    """The data flags as a results file records them, paths made absolute so they work from any directory."""
    return {
        name: str(Path(value).resolve()) if name in DATA_PATH_FLAGS and value is not None else value
        for name, value in asdict(args).items()
    }


def _check_arguments(args: DataArguments) -> None:
    """Reject bad flags before any file is read, with the flag to fix in the message."""
    if args.task_name is not None and args.task_name not in (*TASKS, LM_TASK):
        raise UsageError(f"Unknown --task_name '{args.task_name}'; choose one of: {', '.join(TASKS)}, {LM_TASK}.")
    if args.train_file is None and args.task_name is None:
        raise UsageError(
            "Pass --task_name (a GLUE task, imdb or swag, with --data_dir for a local copy) or --train_file."
        )
    if args.validation_file is not None and args.train_file is None:
        raise UsageError("--validation_file needs --train_file as well: it only replaces the GLUE dev set.")
    if not 0.0 < args.validation_fraction < 1.0:
        raise UsageError(f"--validation_fraction must lie strictly between 0 and 1, got {args.validation_fraction}.")
    if args.max_seq_length < 1:
        raise UsageError(f"--max_seq_length must be positive, got {args.max_seq_length}.")
    for flag in ("max_train_samples", "max_eval_samples", "max_test_samples"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise UsageError(f"--{flag} must be positive, got {value}.")


def _label_feature(label_names: tuple[str, ...]) -> datasets.ClassLabel | datasets.Value:
    return datasets.ClassLabel(names=list(label_names)) if label_names else datasets.Value("float32")


def _make_dataset(texts: dict[str, list[str]], labels: list, label_names: tuple[str, ...]) -> datasets.Dataset:
    """Text columns first, then ``label``: ``task_info_for`` reads the task back from this layout (multiple choice:
    the label's class names are the ending columns)."""
    features = datasets.Features(
        {key: datasets.Value("string") for key in texts} | {LABEL: _label_feature(label_names)}
    )
    return datasets.Dataset.from_dict({**texts, LABEL: labels}, features=features)


def _encode_labels(values: Iterable, label_to_id: dict[str, int] | None, source: str) -> list:
    """Class ids for classification (``label_to_id``), floats for regression (``label_to_id`` is None)."""
    values = list(values)
    if label_to_id is None:
        try:
            return [float(value) for value in values]
        except ValueError as error:
            raise UsageError(f"{source} needs numeric regression labels: {error}.") from error
    unknown = sorted({str(value) for value in values} - label_to_id.keys())
    if unknown:
        raise UsageError(
            f"{source} has labels {unknown[:5]} that are not among the known labels {list(label_to_id)}; "
            "check the label column."
        )
    return [label_to_id[str(value)] for value in values]


def _task_label_to_id(task_name: str) -> dict[str, int] | None:
    """Files write some labels as names (RTE, QNLI, MNLI; IMDB copies may) and others as ids (CoLA, SST-2, ...)."""
    label_names = TASKS[task_name].label_names
    if not label_names:
        return None
    return {name: i for i, name in enumerate(label_names)} | {str(i): i for i in range(len(label_names))}


# --- local GLUE files -------------------------------------------------------------------------------


def _read_tsv_rows(path: Path) -> list[list[str]]:
    """GLUE TSVs contain unbalanced quotes, so quoting must be off; utf-8-sig drops MRPC's BOM."""
    if not path.is_file():
        raise UsageError(f"Missing GLUE file {path}; pass {GLUE_DIR_HELP}.")
    with path.open(encoding="utf-8-sig", newline="") as file:
        return list(csv.reader(file, delimiter="\t", quoting=csv.QUOTE_NONE))


def _column_positions(layout: GlueFiles, header: list[str] | None, path: Path) -> dict[str, int]:
    if header is None:
        return {key: int(column) for key, column in layout.columns.items()}
    missing = [str(column) for column in layout.columns.values() if column not in header]
    if missing:
        raise UsageError(f"{path} lacks the column(s) {missing} (found: {header}); is it the right GLUE task file?")
    return {key: header.index(column) for key, column in layout.columns.items()}


def _read_glue_tsv(path: Path, task_name: str) -> datasets.Dataset:
    """One GLUE TSV as a dataset with the hub's column names and label ids."""
    layout = GLUE_FILES[task_name]
    rows = _read_tsv_rows(path)
    header = rows.pop(0) if layout.has_header and rows else None
    if not rows:
        raise UsageError(f"{path} has no data rows; re-download the GLUE task {task_name}.")
    num_fields = len(header) if header is not None else len(rows[0])
    first_data_line = 2 if header is not None else 1
    for line, row in enumerate(rows, start=first_data_line):
        if len(row) != num_fields:
            raise UsageError(
                f"{path} line {line} has {len(row)} tab-separated fields, expected {num_fields}; "
                "the file is damaged, re-download it."
            )
    positions = _column_positions(layout, header, path)
    texts = {key: [row[position] for row in rows] for key, position in positions.items() if key != LABEL}
    labels = _encode_labels((row[positions[LABEL]] for row in rows), _task_label_to_id(task_name), str(path))
    return _make_dataset(texts, labels, TASKS[task_name].label_names)


def _task_folder(data_dir: Path, folder_name: str, train_files: tuple[str, ...]) -> Path:
    """Accept both the data root (as download_glue_data.py writes it) and the task folder itself."""
    if not data_dir.is_dir():
        raise UsageError(f"--data_dir {data_dir} is not a directory; point it at your local data copy.")
    folder = data_dir / folder_name
    if folder.is_dir():
        return folder
    if any((data_dir / name).is_file() for name in train_files):
        return data_dir
    raise UsageError(
        f"--data_dir {data_dir} has neither a {folder_name}/ folder nor a {' or '.join(train_files)}; point it "
        f"at the data root or at the {folder_name} folder."
    )


def _load_glue_dir(data_dir: Path, task_name: str) -> tuple[datasets.Dataset, datasets.Dataset]:
    folder = _task_folder(data_dir, GLUE_FILES[task_name].folder, ("train.tsv",))
    train = _read_glue_tsv(folder / "train.tsv", task_name)
    return train, _read_glue_tsv(folder / GLUE_FILES[task_name].dev_file, task_name)


# --- Hugging Face hub -------------------------------------------------------------------------------


def _local_data_help(task_name: str) -> str:
    """What to pass instead of the hub, for the task's local layout."""
    if task_name in TABLE_TASKS:
        return (
            f"--data_dir with {task_name}/train and {task_name}/{HUB_DATASETS[task_name].test_split} files "
            f"({', '.join(TABLE_SUFFIXES)}) in the hub's columns, or --train_file/--validation_file"
        )
    return GLUE_DIR_HELP


def _task_columns(task: TaskInfo) -> list[str]:
    """The columns of a task's data: its texts (multiple choice: and endings), then the label."""
    return [*task.text_keys, *(task.label_names if task.multiple_choice else ()), LABEL]


def _load_from_hub(task_name: str) -> tuple[datasets.Dataset, datasets.Dataset]:
    """The training and test splits of HUB_DATASETS (GLUE: train and dev), in our columns and label names;
    offline, even a cached copy is not used, so the error points to --data_dir, which works without the hub."""
    source = HUB_DATASETS[task_name]
    reason = hub_unavailable_reason()
    if reason is not None:
        raise UsageError(
            f"Cannot download task {task_name} from the Hugging Face hub: {reason}; pass {_local_data_help(task_name)}."
        )
    try:
        hub_splits = datasets.load_dataset(source.path, source.config)
    except ConnectionError as error:
        raise UsageError(
            f"Downloading task {task_name} from the hub failed ({error}); pass {_local_data_help(task_name)}."
        ) from error
    task = TASKS[task_name]

    def ours(split: str) -> datasets.Dataset:
        selected = hub_splits[split].select_columns(_task_columns(task))
        label_feature = _label_feature(task.label_names)
        if selected.features[LABEL] != label_feature:  # SWAG's hub labels are named '0'..'3', ours after the endings
            selected = selected.cast_column(LABEL, label_feature)
        return selected

    return ours("train"), ours(source.test_split)


# --- user files -------------------------------------------------------------------------------------


def read_user_file(file_name: str, flag: str) -> pd.DataFrame:
    path = Path(file_name)
    if not path.is_file():
        raise UsageError(f"{flag} {path} does not exist.")
    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise UsageError(f"{flag} {path} must be a .csv, a JSON-lines .json/.jsonl or a .parquet file.")
    try:
        if suffix == ".csv":
            frame = pd.read_csv(path, keep_default_na=False)  # "NA" or "null" are texts, not missing values
        elif suffix == ".parquet":
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_json(path, lines=True, dtype=False)
    except (ValueError, OSError) as error:
        raise UsageError(f"Cannot parse {flag} {path} ({error}); check its format.") from error
    if frame.empty:
        raise UsageError(f"{flag} {path} has no data rows.")
    return frame


def _user_text_columns(args: DataArguments) -> tuple[str, ...]:
    default_keys = TASKS[args.task_name].text_keys if args.task_name else ("sentence",)
    first = args.text_column or default_keys[0]
    pair = args.text_pair_column or (default_keys[1] if len(default_keys) > 1 else None)
    return (first,) if pair is None else (first, pair)


def _check_user_columns(frame: pd.DataFrame, columns: tuple[str, ...], flag: str, file_name: str) -> None:
    """Missing columns or empty cells would otherwise surface as a KeyError or a 'nan' text."""
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise UsageError(
            f"{flag} {file_name} has no column(s) {missing} (found: {list(frame.columns)}); choose columns with "
            "--text_column, --text_pair_column and --label_column."
        )
    for column in columns:
        empty = frame[column].isna() | (frame[column].astype(str).str.strip() == "")
        if empty.any():
            first_row = int(np.flatnonzero(empty.to_numpy())[0])
            raise UsageError(
                f"{flag} {file_name}: column '{column}' is empty in {int(empty.sum())} row(s), "
                f"first at data row {first_row + 1}; fill or drop those rows."
            )


def _infer_label_names(labels: pd.Series) -> tuple[str, ...]:
    """Float labels mean regression (no names); other labels become classes in sorted order, as in run_glue."""
    if pd.api.types.is_float_dtype(labels):
        return ()
    values = labels.unique() if pd.api.types.is_numeric_dtype(labels) else labels.astype(str).unique()
    return tuple(str(value) for value in sorted(values))


def _load_user_files(
    args: DataArguments, files: dict[str, str | None]
) -> tuple[datasets.Dataset, datasets.Dataset | None]:
    """The training file and the optional test file, in this order in `files`, keyed by how errors name them."""
    text_columns = _user_text_columns(args)
    if args.task_name and TASKS[args.task_name].multiple_choice:
        text_columns += TASKS[args.task_name].label_names  # the endings, under the hub's column names
    train_flag, test_flag = files
    file_names = {flag: name for flag, name in files.items() if name is not None}
    frames = {flag: read_user_file(name, flag) for flag, name in file_names.items()}
    for flag, frame in frames.items():
        _check_user_columns(frame, (*text_columns, args.label_column), flag, file_names[flag])

    if args.task_name:
        label_names, label_to_id = TASKS[args.task_name].label_names, _task_label_to_id(args.task_name)
    else:
        label_names = _infer_label_names(frames[train_flag][args.label_column])
        label_to_id = {name: i for i, name in enumerate(label_names)} if label_names else None

    loaded = {
        flag: _make_dataset(
            {column: frame[column].astype(str).tolist() for column in text_columns},
            _encode_labels(frame[args.label_column], label_to_id, f"{flag} {file_names[flag]}"),
            label_names,
        )
        for flag, frame in frames.items()
    }
    return loaded[train_flag], loaded.get(test_flag)


def _table_file(folder: Path, split: str) -> str:
    """The one file of `split` in a local copy of a hub dataset, whatever its format."""
    found = [folder / f"{split}{suffix}" for suffix in TABLE_SUFFIXES if (folder / f"{split}{suffix}").is_file()]
    if not found:
        raise UsageError(
            f"--data_dir {folder} has no {split} file; add {split}.csv, .jsonl or .parquet with the hub's columns."
        )
    if len(found) > 1:
        names = ", ".join(path.name for path in found)
        raise UsageError(f"--data_dir {folder} has {len(found)} {split} files ({names}); keep one of them.")
    return str(found[0])


def _load_table_dir(args: DataArguments) -> tuple[datasets.Dataset, datasets.Dataset]:
    """A local copy of a hub dataset (IMDB): its training and test splits as CSV, JSON-lines or Parquet files."""
    test_split = HUB_DATASETS[args.task_name].test_split
    train_files = tuple(f"train{suffix}" for suffix in TABLE_SUFFIXES)
    folder = _task_folder(Path(args.data_dir), args.task_name, train_files)
    files = {
        "--data_dir train file": _table_file(folder, "train"),
        "--data_dir test file": _table_file(folder, test_split),
    }
    return _load_user_files(args, files)


# --- splits -----------------------------------------------------------------------------------------


def split_off(
    dataset: datasets.Dataset, fraction: float, seed: int, what: str
) -> tuple[datasets.Dataset, datasets.Dataset]:
    """(rest, held-out share); the same seed always gives the same rows, so all trials agree."""
    try:
        split = dataset.train_test_split(train_size=1.0 - fraction, seed=seed)
    except ValueError as error:
        raise UsageError(
            f"Cannot hold out {what} from {len(dataset)} training rows ({error}); "
            "use more data or another --validation_fraction."
        ) from error
    return split["train"], split["test"]


def random_subset(dataset: datasets.Dataset, max_samples: int | None, seed: int) -> datasets.Dataset:
    """Seeded, so quick runs are reproducible; random, because GLUE files are often ordered by source."""
    if max_samples is None or max_samples >= len(dataset):
        return dataset
    rows = np.random.default_rng(seed).choice(len(dataset), size=max_samples, replace=False)
    return dataset.select(np.sort(rows))


def load_raw_splits(args: DataArguments) -> datasets.DatasetDict:
    """Untokenised "train", "validation" (search) and "test" (GLUE dev) splits.

    Each split holds the text column(s) followed by ``label``: a ClassLabel of class ids, or float32
    for regression (multiple choice: context, stem, the endings, and the right ending's index). Without
    --validation_file, the test split is held out of --train_file first (a --validation_fraction share), then
    the rest is split into train/validation as usual.
    """
    if args.train_file is not None:
        training, test = _load_user_files(
            args, {"--train_file": args.train_file, "--validation_file": args.validation_file}
        )
        source = args.train_file
    elif args.data_dir is not None and args.task_name in TABLE_TASKS:
        training, test = _load_table_dir(args)
        source = args.data_dir
    elif args.data_dir is not None:
        training, test = _load_glue_dir(Path(args.data_dir), args.task_name)
        source = args.data_dir
    else:
        training, test = _load_from_hub(args.task_name)
        source = HUB_DATASETS[args.task_name].path
    if test is None:
        logger.warning(
            "No --validation_file: holding out %.0f%% of --train_file as the test set.", 100 * args.validation_fraction
        )
        training, test = split_off(training, args.validation_fraction, args.dataset_seed, "a test set")
    train, validation = split_off(training, args.validation_fraction, args.dataset_seed, "a validation set")
    splits = datasets.DatasetDict(
        train=random_subset(train, args.max_train_samples, args.dataset_seed),
        validation=random_subset(validation, args.max_eval_samples, args.dataset_seed),
        test=random_subset(test, args.max_test_samples, args.dataset_seed),
    )
    logger.info("Loaded %s: %s", source, {name: len(split) for name, split in splits.items()})
    return splits


def task_info_for(splits: datasets.DatasetDict) -> TaskInfo:
    """Text keys, label names and regression flag read off loaded splits, for GLUE and user files alike."""
    features = splits["train"].features
    label_feature = features[LABEL]
    label_names = tuple(label_feature.names) if isinstance(label_feature, datasets.ClassLabel) else ()
    multiple_choice = bool(label_names) and all(name in features for name in label_names)
    not_text = {LABEL, *(label_names if multiple_choice else ())}
    return TaskInfo(tuple(name for name in features if name not in not_text), label_names, multiple_choice)


# --- tokenisation and batching ----------------------------------------------------------------------


def _max_length(max_seq_length: int, tokenizer: PreTrainedTokenizerBase) -> int:
    if max_seq_length > tokenizer.model_max_length:
        logger.warning(
            "--max_seq_length %d exceeds the model's maximum %d; using %d.",
            max_seq_length,
            tokenizer.model_max_length,
            tokenizer.model_max_length,
        )
    return min(max_seq_length, tokenizer.model_max_length)


def tokenize_splits(
    splits: datasets.DatasetDict,
    tokenizer: PreTrainedTokenizerBase,
    args: DataArguments,
    names: tuple[str, ...] = ("train", "validation", "test"),
) -> datasets.DatasetDict:
    """Tokenise the splits `names` once up front, so every epoch and every evaluation reuses the same ids.

    The result holds only collator-ready columns: input_ids, attention_mask, (token_type_ids), labels; for
    multiple choice each of them but labels holds one sequence per choice.
    """
    task = task_info_for(splits)
    splits = datasets.DatasetDict({name: splits[name] for name in names})
    options = dict(padding="max_length" if args.pad_to_max_length else False,
                   max_length=_max_length(args.max_seq_length, tokenizer), truncation=True)

    def tokenize(batch: dict[str, list]) -> dict[str, list]:
        if task.multiple_choice:
            return tokenize_choices(batch, tokenizer, task.text_keys, task.label_names, **options)
        return tokenizer(*(batch[key] for key in task.text_keys), **options)

    text_columns = [name for name in _task_columns(task) if name != LABEL]
    tokenized = splits.map(tokenize, batched=True, remove_columns=text_columns, desc="Tokenizing")
    return tokenized.rename_column(LABEL, "labels")


def make_dataloader(
    dataset: datasets.Dataset,
    tokenizer: PreTrainedTokenizerBase,
    batch_size: int,
    shuffle: bool,
    seed: int,
    group_by_length: bool = False,
    least_padding: bool = False,
) -> DataLoader:
    """Batches padded only to their longest example (multiple choice: [batch, choices, tokens], padded to the
    longest choice); a seeded generator makes the shuffled order reproducible (`loader.generator`, also the
    one `LengthGroupedBatches` draws from). Unshuffled (evaluation) batches group examples of similar length,
    see `length_sorted_batches` (`least_padding`: `least_padding_batches`); shuffled ones do with
    `group_by_length`."""
    collator = (DataCollatorForMultipleChoice if is_multiple_choice_data(dataset) else DataCollatorWithPadding)(
        tokenizer
    )
    if not shuffle:
        batches = (least_padding_batches if least_padding else length_sorted_batches)(dataset, batch_size)
        return DataLoader(dataset, batch_sampler=batches, collate_fn=collator)
    generator = torch.Generator().manual_seed(seed)
    if group_by_length:
        batches = LengthGroupedBatches(example_lengths(dataset), batch_size, generator)
        return DataLoader(dataset, batch_sampler=batches, collate_fn=collator, generator=generator)
    return DataLoader(dataset, batch_size=batch_size, shuffle=True, collate_fn=collator, generator=generator)


def evaluation_loaders(
    tokenized: datasets.DatasetDict, tokenizer: PreTrainedTokenizerBase, batch_size: int,
    names: tuple[str, ...] = ("validation", "test"), least_padding: bool = False,
) -> dict[str, DataLoader]:
    """The unshuffled loaders of the splits `names` that a run scores its networks on."""
    return {name: make_dataloader(tokenized[name], tokenizer, batch_size, False, 0, least_padding=least_padding)
            for name in names}


def example_lengths(dataset: datasets.Dataset) -> list[int]:
    """Tokens of each example (multiple choice: of its longest choice): what its batch is padded to."""
    return [max(map(len, ids)) if ids and isinstance(ids[0], list) else len(ids) for ids in dataset["input_ids"]]


class LengthGroupedBatches:
    """Training batches of examples of similar length, in random order (HF Trainer's `group_by_length`).

    Each epoch shuffles the examples, sorts every window of `window_batches` batches by length and cuts it
    into batches, then shuffles the batches: every batch is as random as a window allows, and padding to its
    longest example wastes little (GLUE training splits: BENCHMARKS.md, "Length-grouped training batches").
    """

    def __init__(self, lengths: list[int], batch_size: int, generator: torch.Generator, window_batches: int = 50):
        self.lengths, self.batch_size, self.generator = lengths, batch_size, generator
        self.window = batch_size * window_batches

    def __len__(self) -> int:
        return -(-len(self.lengths) // self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        order = torch.randperm(len(self.lengths), generator=self.generator).tolist()
        batches = []
        for start in range(0, len(order), self.window):
            window = sorted(order[start:start + self.window], key=lambda index: -self.lengths[index])
            batches += [window[first:first + self.batch_size] for first in range(0, len(window), self.batch_size)]
        yield from (batches[index] for index in torch.randperm(len(batches), generator=self.generator).tolist())


def length_sorted_batches(dataset: datasets.Dataset, batch_size: int) -> list[list[int]]:
    """Evaluation batches of examples sorted by length, longest first (an out-of-memory error shows on the
    first batch). Padding each batch to its longest example then wastes little: on the GLUE validation sets
    of the study 2.6-2.9x fewer tokens than in file order. Every metric here is order-free (predictions and
    labels travel together), and an example's prediction does not depend on its batch's padding."""
    order = longest_first(example_lengths(dataset))
    return [order[start:start + batch_size] for start in range(0, len(order), batch_size)]


def longest_first(lengths: list[int]) -> list[int]:
    """Example indices by decreasing length (ties in file order): the order evaluation batches are cut from."""
    return sorted(range(len(lengths)), key=lambda index: -lengths[index])


# What one more batch costs, in padded tokens: on one thread of a 2-core AMD EPYC (AVX512-BF16), a MiniLM forward
# pass took about 10 ms beyond 0.30 ms a token in fp32 (0.15 ms in bf16), i.e. 35-70 tokens, and batches of a
# handful of examples run their matrix products less efficiently (docs/benchmarks/multi-fidelity-search.md).
BATCH_OVERHEAD_TOKENS = 64


def least_padding_batches(dataset: datasets.Dataset, max_batch_size: int,
                          overhead_tokens: int = BATCH_OVERHEAD_TOKENS) -> list[list[int]]:
    """Evaluation batches of the length-sorted examples (longest first, as `length_sorted_batches`) cut where
    the padded tokens plus `overhead_tokens` per batch are fewest, at most `max_batch_size` examples each.

    A fixed batch size pads a batch of short examples to the longest of a wide range: the quickstart's 200
    SST-2 validation examples hold 2,741 tokens and pad to 4,576 in batches of 64, to 3,074 in these. On a CPU
    the work grows with the padded tokens; the per-batch cost keeps batches from shrinking to single examples.
    Dynamic programming over the cut points: the cheapest cut of the examples from i on is the cheapest first
    batch [i, i + k) (padded to example i, the longest) plus the cheapest cut from i + k on."""
    lengths = example_lengths(dataset)
    order = longest_first(lengths)
    sorted_lengths = np.array([lengths[index] for index in order], dtype=np.int64)
    num_examples = len(order)
    cheapest_from = np.zeros(num_examples + 1, dtype=np.int64)  # cost of the best cut of examples i..end
    first_batch_size = np.zeros(num_examples, dtype=np.int64)
    for start in range(num_examples - 1, -1, -1):
        sizes = np.arange(1, min(max_batch_size, num_examples - start) + 1)
        costs = sizes * sorted_lengths[start] + overhead_tokens + cheapest_from[start + sizes]
        best = len(sizes) - 1 - int(np.argmin(costs[::-1]))  # of equal costs, the largest batch
        cheapest_from[start], first_batch_size[start] = costs[best], sizes[best]
    batches, start = [], 0
    while start < num_examples:
        batches.append(order[start:start + first_batch_size[start]])
        start += int(first_batch_size[start])
    return batches
