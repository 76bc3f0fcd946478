"""Load tokenizers, pre-trained models and super-network checkpoints.

Accepts hub ids (with the short aliases of the original example) and local directories.
Decoder families get their eos token as the pad token (as the original did for GPT-2), so
their classifiers can find the last real token of right-padded batches.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase
from transformers.models.auto.modeling_auto import MODEL_FOR_MULTIPLE_CHOICE_MAPPING_NAMES
from transformers.utils import logging as transformers_logging

from nas_llm.common.errors import UsageError
from nas_llm.common.hub import hub_unavailable_reason
from nas_llm.common.io_utils import follow_umask
from nas_llm.data.data import LM_TASK
from nas_llm.data.multiple_choice import classifier_auto_class, saved_as_multiple_choice
from nas_llm.model.families import SUPPORTED_MODEL_TYPES, family_for_config
from nas_llm.model.label_scale import unfold_label_scale

logger = logging.getLogger(__name__)

NAS_SETTINGS_FILE = "nas_settings.json"

_FIXED_ALIASES = {
    "bert-tiny": "prajjwal1/bert-tiny",
    "bert-mini": "prajjwal1/bert-mini",
    "bert-small": "prajjwal1/bert-small",
    "bert-medium": "prajjwal1/bert-medium",
    "electra-small": "google/electra-small-discriminator",
    "electra-base": "google/electra-base-discriminator",
    "electra-large": "google/electra-large-discriminator",
}


def resolve_model_name(name_or_path: str) -> str:
    """Expand the original example's short names (bert-small, pythia-70m, electra-base, ...)."""
    if os.path.isdir(name_or_path):
        return name_or_path
    if name_or_path in _FIXED_ALIASES:
        return _FIXED_ALIASES[name_or_path]
    if name_or_path.startswith("pythia-"):
        return f"EleutherAI/{name_or_path}"
    return name_or_path


def _from_local_or_hub(load, name: str, cache_dir: str | None, **kwargs):
    """Load from a directory or the local cache first; reach for the hub only if it answers."""
    if os.path.isdir(name):
        return load(name, **kwargs)
    try:
        return load(name, cache_dir=cache_dir, local_files_only=True, **kwargs)
    except OSError:
        pass
    reason = hub_unavailable_reason()
    if reason is not None:
        raise UsageError(
            f"cannot load '{name}': it is not a local directory nor in the local cache, and the Hugging Face hub "
            f"cannot be used ({reason}); pass --model_name_or_path a local model directory (a save_pretrained folder)"
        )
    try:
        return load(name, cache_dir=cache_dir, **kwargs)
    except OSError as error:
        raise UsageError(f"cannot load '{name}' from the hub: {str(error).splitlines()[0]}") from None


def load_config(name_or_path: str, cache_dir: str | None = None, **kwargs):
    """The model's config, checked to be of a supported family before any weights are read."""
    config = _from_local_or_hub(AutoConfig.from_pretrained, name_or_path, cache_dir, **kwargs)
    family_for_config(config)
    return config


def without_kv_cache(config) -> None:
    """Classification and scoring passes never reuse keys and values: build no KV cache.

    A cache sized by the super-network's config breaks on sub-networks that drop layers (Qwen2's
    per-layer cache), and on every other pass it only holds memory. Checkpoints written from such a
    model say `use_cache: false`, which loads everywhere.
    """
    if getattr(config, "use_cache", False):
        config.use_cache = False


def load_tokenizer(name_or_path: str, cache_dir: str | None = None) -> PreTrainedTokenizerBase:
    tokenizer = _from_local_or_hub(AutoTokenizer.from_pretrained, name_or_path, cache_dir)
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise UsageError(f"the tokenizer of '{name_or_path}' has neither a pad nor an eos token")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def set_label_names(config, label_names: tuple[str, ...]) -> None:
    """Name the classes in `config` (id2label/label2id: 'negative', not 'LABEL_0'); no names: one regression output."""
    if label_names:
        config.id2label = dict(enumerate(label_names))
        config.label2id = {name: index for index, name in enumerate(label_names)}
    else:
        config.num_labels = 1


@contextmanager
def _without_transformers_warnings() -> Iterator[None]:
    """Hide transformers' load report (a table of every missing key); `_report_new_weights` says it in a line."""
    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()
    try:
        yield
    finally:
        transformers_logging.set_verbosity(verbosity)


def _report_new_weights(model, loading_info: dict, source: str) -> None:
    new = sorted(set(loading_info["missing_keys"]) | {key for key, *_ in loading_info["mismatched_keys"]})
    head = [key for key in new if not key.startswith(f"{model.base_model_prefix}.")]
    if head:
        logger.info("New classification head initialised for %d labels (%s)", model.config.num_labels, ", ".join(head))
    if len(head) < len(new):
        logger.warning(
            "%d weights of the model body are not in %s and were initialised randomly: %s",
            len(new) - len(head), source, ", ".join(key for key in new if key not in head),
        )
    if loading_info["unexpected_keys"]:
        logger.info(
            "Ignored %d weights of %s that a sequence classifier does not use (e.g. a pre-training head)",
            len(loading_info["unexpected_keys"]), source,
        )


def check_multiple_choice_head(config, name: str) -> None:
    """Refuse a model type that transformers has no multiple-choice head for, naming those it has."""
    if config.model_type not in MODEL_FOR_MULTIPLE_CHOICE_MAPPING_NAMES:
        supported = [t for t in SUPPORTED_MODEL_TYPES if t in MODEL_FOR_MULTIPLE_CHOICE_MAPPING_NAMES]
        raise UsageError(
            f"'{name}' is a {config.model_type} model, for which transformers has no multiple-choice head; a "
            f"multiple-choice task (swag) needs one of the model types {', '.join(supported)}"
        )


def load_model(
    name_or_path: str,
    label_names: tuple[str, ...],
    tokenizer: PreTrainedTokenizerBase,
    cache_dir: str | None = None,
    multiple_choice: bool = False,
):
    """A sequence classifier for the classes `label_names` (none: one regression output) on the pre-trained model;
    with `multiple_choice`, a multiple-choice model scoring one choice per label name (multiple_choice.py)."""
    config = load_config(name_or_path, cache_dir)
    if multiple_choice:
        check_multiple_choice_head(config, name_or_path)
    set_label_names(config, label_names)
    without_kv_cache(config)
    if config.pad_token_id is None:
        config.pad_token_id = tokenizer.pad_token_id
    # A checkpoint fine-tuned with another number of labels gets a new head, as in HF's run_glue.
    with _without_transformers_warnings():
        model, loading_info = _from_local_or_hub(
            classifier_auto_class(multiple_choice).from_pretrained, name_or_path, cache_dir, config=config,
            ignore_mismatched_sizes=True, output_loading_info=True,
        )
    _report_new_weights(model, loading_info, name_or_path)
    return model


def save_model(model, directory: Path, original_format: bool = True) -> None:
    """`save_pretrained` (safetensors), with the weight files readable as the umask allows.

    `original_format=False` keeps today's parameter names instead of the library's legacy checkpoint names.

    save_pretrained unwraps the model through accelerate, which imports DeepSpeed whenever it is installed
    (seconds, and its 'Setting accelerator to CPU' warning) only to check whether the model is a
    DeepSpeedEngine. No model is one unless DeepSpeed was imported already (a DeepSpeed run), so the check
    asks for it only then.
    """
    with mock.patch("accelerate.utils.other.is_deepspeed_available", lambda: "deepspeed" in sys.modules):
        model.save_pretrained(directory, save_original_format=original_format)
    follow_umask(*directory.glob("*.safetensors"))


def load_causal_lm(name_or_path: str, cache_dir: str | None = None, dtype: str = "float32"):
    """A causal language model of a decoder family, in `dtype`, that never builds a KV cache in a forward.

    Training and scoring see each block once; a cache sized for the full network would also break under
    sub-networks that drop layers. Extraction turns the cache back on for generation.
    """
    config = load_config(name_or_path, cache_dir)
    family = family_for_config(config)
    if not family.decoder:
        raise UsageError(
            f"'{name_or_path}' is a {config.model_type} model, an encoder; --task_name lm needs a decoder "
            "(GPT-2, GPT-NeoX, Llama, Mistral, Qwen2)"
        )
    heads = [name for name in config.architectures or [] if not name.endswith(("ForCausalLM", "LMHeadModel", "Model"))]
    if heads:
        raise UsageError(
            f"'{name_or_path}' is a {heads[0]} checkpoint, not a language model; --task_name lm needs a causal LM "
            "(a pre-trained model or the output of train_supernet.py --task_name lm)"
        )
    without_kv_cache(config)
    return _from_local_or_hub(
        AutoModelForCausalLM.from_pretrained, name_or_path, cache_dir, config=config,
        dtype=dtype if dtype == "auto" else getattr(torch, dtype),
    )


def load_saved_classifier(name_or_path: str, cache_dir: str | None = None, **kwargs):
    """A classifier of the class its config names: multiple choice, or a sequence classifier (also for a bare
    pre-trained model, which then gets a new head)."""
    config = load_config(name_or_path, cache_dir)
    auto_class = classifier_auto_class(saved_as_multiple_choice(config))
    return _from_local_or_hub(auto_class.from_pretrained, name_or_path, cache_dir, config=config, **kwargs)


def load_trained_classifier(name_or_path: str, cache_dir: str | None = None) -> tuple[nn.Module, list[str]]:
    """A classifier as saved (regression outputs standardised: label_scale.py), and the names of the weights it
    lacked (a new head: not fine-tuned)."""
    with _without_transformers_warnings():
        model, loading_info = load_saved_classifier(name_or_path, cache_dir, output_loading_info=True)
    return unfold_label_scale(model), list(loading_info["missing_keys"])


def save_supernet(model, tokenizer, directory: str | Path, nas_settings: dict[str, Any]) -> None:
    """A `save_pretrained` checkpoint (safetensors + tokenizer) plus the NAS settings it was trained with."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_model(model, directory)
    tokenizer.save_pretrained(directory)
    (directory / NAS_SETTINGS_FILE).write_text(json.dumps(nas_settings, indent=2))


def load_nas_settings(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / NAS_SETTINGS_FILE
    if not path.is_file():
        raise UsageError(
            f"'{directory}' is not a super-network checkpoint ({NAS_SETTINGS_FILE} is missing); "
            "pass --checkpoint_dir_model the --output_dir of train_supernet.py"
        )
    return json.loads(path.read_text())


def load_supernet(directory: str | Path, dtype: str = "float32"):
    """(model, tokenizer, nas_settings) of a checkpoint written by `save_supernet`.

    A language-modelling checkpoint (task 'lm') loads as a causal LM in `dtype`, a classifier (sequence or
    multiple choice, as saved) in float32.
    """
    if not Path(directory).is_dir():
        raise UsageError(f"checkpoint directory '{directory}' does not exist; run train_supernet.py first")
    nas_settings = load_nas_settings(directory)
    tokenizer = load_tokenizer(str(directory))
    if nas_settings.get("task_name") == LM_TASK:
        model = load_causal_lm(str(directory), dtype=dtype)
    else:
        model = load_saved_classifier(str(directory))
    without_kv_cache(model.config)
    return model, tokenizer, nas_settings
