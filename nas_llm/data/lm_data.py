"""Language-modelling data (`--task_name lm`): text, tokenised and packed into blocks of `--block_size` tokens.

Text comes from the user's files (`--train_file`: plain text, one document per line, or CSV / JSON lines
with a `--text_column`, default `text`) or from a dataset by name (`--dataset_name`, a hub id or a local
folder of text/CSV/JSON files, with `--dataset_config_name`). The splits follow the classification
protocol of `data.py`: a `--validation_fraction` share of the training rows is held out as the
validation split the search scores on, and `--validation_file` (or the dataset's `test` split) is the
test set; without one, a share of the training rows is held out as the test set first. A dataset with
its own `validation` split keeps it.

As in HF's run_clm.py, each split's documents are tokenised, concatenated (in groups of 1,000) and cut into
blocks of `--block_size` tokens (each group's remainder is dropped); a block's labels are its input ids (the
model shifts them). `--max_train_samples` / `--max_eval_samples` / `--max_test_samples` then count blocks, and
`data.make_dataloader` batches them (all blocks have the same length: nothing is padded).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from itertools import chain
from pathlib import Path

import datasets
from transformers import PreTrainedTokenizerBase

from nas_llm.common.errors import UsageError
from nas_llm.common.hub import hub_unavailable_reason
from nas_llm.data.data import (
    LM_TASK,
    TABLE_SUFFIXES,
    DataArguments,
    load_raw_splits,
    random_subset,
    read_user_file,
    split_off,
    task_info_for,
    tokenize_splits,
)
from nas_llm.data.metrics import metric_task

logger = logging.getLogger(__name__)

TEXT_SUFFIXES = (".txt", ".text", ".raw")
DEFAULT_TEXT_COLUMN = "text"
DEFAULT_BLOCK_SIZE = 1024


@dataclass
class LMArguments:
    """Flags of language modelling (--task_name lm) on top of the shared data flags."""

    block_size: int | None = field(
        default=None,
        metadata={"help": "Tokens per training/evaluation block (--task_name lm): the text is tokenised, "
                  f"concatenated and cut into blocks of this length. Default: min({DEFAULT_BLOCK_SIZE}, the "
                  "model's maximum positions); longer than the model's positions is refused."},
    )
    dataset_name: str | None = field(
        default=None,
        metadata={"help": "Language-modelling text by dataset name (--task_name lm): a hub dataset such as "
                  "wikitext, or a local folder of .txt/.csv/.jsonl files; its train, validation and test splits "
                  "are used where present."},
    )
    dataset_config_name: str | None = field(
        default=None, metadata={"help": "Configuration of --dataset_name, e.g. wikitext-2-raw-v1."}
    )
    torch_dtype: str = field(
        default="float32",
        metadata={"help": "dtype the causal LM's weights are loaded in (--task_name lm): float32, bfloat16, "
                  "float16, or auto (the checkpoint's). bfloat16 halves the memory of a search on pre-trained "
                  "weights (--sampling_strategy none); train super-networks in float32 with --bf16 autocast."},
    )

    def __post_init__(self) -> None:
        if self.block_size is not None and self.block_size < 2:
            raise UsageError(f"--block_size must be at least 2 (a token and its successor), got {self.block_size}")
        if self.torch_dtype not in ("float32", "bfloat16", "float16", "auto"):
            raise UsageError(
                f"unknown --torch_dtype '{self.torch_dtype}'; choose one of: float32, bfloat16, float16, auto"
            )


def absolute_lm_flags(args: LMArguments) -> dict:
    """The LM flags as a results file records them; a local --dataset_name folder made absolute."""
    flags = asdict(args)
    if args.dataset_name is not None and Path(args.dataset_name).is_dir():
        flags["dataset_name"] = str(Path(args.dataset_name).resolve())
    return flags


def _read_text_file(path: Path, flag: str, text_column: str) -> datasets.Dataset:
    """Plain text (one document per line) or a CSV / JSON-lines / Parquet table with a text column."""
    if not path.is_file():
        raise UsageError(f"{flag} {path} does not exist.")
    suffix = path.suffix.lower()
    if suffix in TEXT_SUFFIXES:
        lines = path.read_text(encoding="utf-8").splitlines()
        if not any(line.strip() for line in lines):
            raise UsageError(f"{flag} {path} has no text.")
        return datasets.Dataset.from_dict({DEFAULT_TEXT_COLUMN: lines})
    if suffix not in TABLE_SUFFIXES:
        raise UsageError(
            f"{flag} {path} must be plain text ({', '.join(TEXT_SUFFIXES)}), CSV, JSON lines (.json/.jsonl) or Parquet."
        )
    return _text_only(datasets.Dataset.from_pandas(read_user_file(str(path), flag)), text_column, f"{flag} {path}")


def _text_only(dataset: datasets.Dataset, text_column: str, source: str) -> datasets.Dataset:
    if text_column not in dataset.column_names:
        raise UsageError(
            f"{source} has no text column '{text_column}' (found: {dataset.column_names}); name it with --text_column."
        )
    texts = ["" if text is None else str(text) for text in dataset[text_column]]
    return datasets.Dataset.from_dict({DEFAULT_TEXT_COLUMN: texts})


def _load_named_dataset(args: DataArguments, lm_args: LMArguments) -> dict[str, datasets.Dataset]:
    """The splits of a local dataset folder or a hub dataset, with its text column only."""
    name = lm_args.dataset_name
    if not Path(name).is_dir():
        reason = hub_unavailable_reason()
        if reason is not None:
            raise UsageError(
                f"Cannot download --dataset_name {name} from the Hugging Face hub ({reason}); pass a local folder "
                "as --dataset_name, or --train_file."
            )
    try:
        loaded = datasets.load_dataset(name, lm_args.dataset_config_name)
    except (FileNotFoundError, ValueError, ConnectionError, datasets.exceptions.DatasetNotFoundError) as error:
        raise UsageError(f"Cannot load --dataset_name {name}: {str(error).splitlines()[0]}") from None
    text_column = args.text_column or DEFAULT_TEXT_COLUMN
    return {split: _text_only(loaded[split], text_column, f"--dataset_name {name} [{split}]") for split in loaded}


def load_text_splits(args: DataArguments, lm_args: LMArguments) -> datasets.DatasetDict:
    """Untokenised "train", "validation" (the search's split) and "test" splits with one `text` column."""
    if lm_args.dataset_name is not None:
        loaded = _load_named_dataset(args, lm_args)
        if "train" not in loaded:
            raise UsageError(f"--dataset_name {lm_args.dataset_name} has no train split (found: {list(loaded)}).")
        training, validation, test = loaded["train"], loaded.get("validation"), loaded.get("test")
    elif args.train_file is not None:
        text_column = args.text_column or DEFAULT_TEXT_COLUMN
        training = _read_text_file(Path(args.train_file), "--train_file", text_column)
        validation = None
        test = None
        if args.validation_file is not None:
            test = _read_text_file(Path(args.validation_file), "--validation_file", text_column)
    else:
        raise UsageError("--task_name lm needs text: pass --train_file (and --validation_file) or --dataset_name.")
    if test is None:
        logger.warning("No test text: holding out %.0f%% of the training text as the test set.",
                       100 * args.validation_fraction)
        training, test = split_off(training, args.validation_fraction, args.dataset_seed, "a test set")
    if validation is None:
        training, validation = split_off(training, args.validation_fraction, args.dataset_seed, "a validation set")
    return datasets.DatasetDict(train=training, validation=validation, test=test)


def max_positions(config) -> int | None:
    """The longest sequence the model's position embeddings (or RoPE range) cover, if the config says."""
    return getattr(config, "max_position_embeddings", None)


def resolve_block_size(block_size: int | None, config) -> int:
    """--block_size, or its default; longer blocks than the model has positions are refused."""
    positions = max_positions(config)
    if block_size is None:
        return min(DEFAULT_BLOCK_SIZE, positions or DEFAULT_BLOCK_SIZE)
    if positions is not None and block_size > positions:
        raise UsageError(
            f"--block_size {block_size} is longer than the model's {positions} positions; pass --block_size "
            f"{positions} or less"
        )
    return block_size


def pack_blocks(
    splits: datasets.DatasetDict, tokenizer: PreTrainedTokenizerBase, block_size: int, args: DataArguments
) -> datasets.DatasetDict:
    """Tokenise each split, concatenate its documents and cut them into `block_size` blocks (run_clm style)."""

    def tokenize(batch: dict[str, list]) -> dict[str, list]:
        return {"input_ids": tokenizer(batch[DEFAULT_TEXT_COLUMN], add_special_tokens=True)["input_ids"]}

    def group(batch: dict[str, list]) -> dict[str, list]:
        ids = list(chain.from_iterable(batch["input_ids"]))
        usable = len(ids) // block_size * block_size
        blocks = [ids[start : start + block_size] for start in range(0, usable, block_size)]
        return {"input_ids": blocks, "labels": [list(block) for block in blocks]}

    tokenized = splits.map(tokenize, batched=True, remove_columns=[DEFAULT_TEXT_COLUMN], desc="Tokenizing")
    # As run_clm.py: groups of 1,000 documents, each dropping its last partial block (a negligible share of
    # the text), so memory stays bounded for corpora of any size.
    packed = tokenized.map(group, batched=True, batch_size=1000, desc=f"Packing into blocks of {block_size}")
    for name, split in packed.items():
        if len(split) == 0:
            raise UsageError(
                f"the {name} text has fewer than --block_size {block_size} tokens; give more text or a smaller "
                "--block_size"
            )
    limits = {"train": args.max_train_samples, "validation": args.max_eval_samples, "test": args.max_test_samples}
    packed = datasets.DatasetDict(
        {name: random_subset(split, limits[name], args.dataset_seed) for name, split in packed.items()}
    )
    logger.info("Blocks of %d tokens: %s", block_size, {name: len(split) for name, split in packed.items()})
    return packed


def load_blocks(
    args: DataArguments,
    lm_args: LMArguments,
    tokenizer: PreTrainedTokenizerBase,
    model_config,
    names: tuple[str, ...] = ("train", "validation", "test"),
) -> datasets.DatasetDict:
    """The blocks of the splits `names` for a model: text loaded, tokenised and packed."""
    block_size = resolve_block_size(lm_args.block_size, model_config)
    splits = load_text_splits(args, lm_args)
    return pack_blocks(datasets.DatasetDict({name: splits[name] for name in names}), tokenizer, block_size, args)



def load_examples(data_args: DataArguments) -> datasets.DatasetDict | None:
    """The examples of a classification, regression or multiple-choice task, loaded before the model (their labels
    make its head); None for --task_name lm, whose text is cut into blocks once the model's positions are known."""
    return None if data_args.task_name == LM_TASK else load_raw_splits(data_args)


def task_splits(
    data_args: DataArguments,
    lm_args: LMArguments,
    tokenizer: PreTrainedTokenizerBase,
    model_config,
    examples: datasets.DatasetDict | None,
    names: tuple[str, ...] = ("train", "validation", "test"),
) -> datasets.DatasetDict:
    """The tokenized splits `names` of the task: text packed into blocks for --task_name lm, else `examples`
    (from `load_examples`) tokenized; the one place where the two kinds of task load their data differently."""
    if data_args.task_name == LM_TASK:
        return load_blocks(data_args, lm_args, tokenizer, model_config, names)
    return tokenize_splits(examples, tokenizer, data_args, names)


def task_metrics_key(task_name: str | None, examples: datasets.DatasetDict | None) -> str:
    """The metrics' key of the task whose `examples` (None for --task_name lm) were loaded."""
    return metric_task(task_name, examples is not None and task_info_for(examples).is_regression)


def evaluation_splits(
    data_args: DataArguments, lm_args: LMArguments, tokenizer, model_config, split_names: tuple[str, ...]
) -> tuple[dict, str]:
    """The tokenized `split_names` of the task and its metrics key: text blocks for --task_name lm, else examples."""
    examples = load_examples(data_args)
    tokenized = task_splits(data_args, lm_args, tokenizer, model_config, examples, split_names)
    return tokenized, task_metrics_key(data_args.task_name, examples)
