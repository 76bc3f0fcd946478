"""Multiple-choice tasks (SWAG): a context, the start of a sentence and candidate endings; the label is the right one.

Every example becomes one sequence pair per ending, (context, start + " " + ending) as HF's run_swag builds them,
and a batch is a [batch, choices, tokens] tensor padded to its longest sequence (transformers'
`DataCollatorForMultipleChoice`). A *ForMultipleChoice model flattens it to [batch * choices, tokens], runs its
encoder on every sequence and scores each with a one-output head into [batch, choices] logits, so masking,
slicing, unit importance and least squares see an ordinary encoder and the losses and metrics ordinary
classification logits. An example costs `choices` sequences. transformers has such a head only for some model
types (of the supported ones: BERT, RoBERTa, XLM-RoBERTa, ELECTRA); the others, every decoder among them, are
refused with the list.
"""

from __future__ import annotations

import datasets
from torch import nn
from transformers import AutoModelForMultipleChoice, AutoModelForSequenceClassification, PreTrainedTokenizerBase

MULTIPLE_CHOICE_SUFFIX = "ForMultipleChoice"  # of the class names: BertForMultipleChoice, ...


def tokenize_choices(
    batch: dict[str, list], tokenizer: PreTrainedTokenizerBase, text_keys: tuple[str, ...],
    choice_keys: tuple[str, ...], **options,
) -> dict[str, list]:
    """Per example, one pair per choice: (the first text, the other texts followed by the choice's ending).

    Every returned column holds, per example, a list of one token list per choice, in the order of `choice_keys`.
    """
    first, *rest = text_keys
    firsts, seconds = [], []
    for row, context in enumerate(batch[first]):
        for key in choice_keys:
            firsts.append(context)
            seconds.append(" ".join([*(batch[other][row] for other in rest), batch[key][row]]))
    encoded = tokenizer(firsts, seconds, **options)
    width = len(choice_keys)
    return {name: [values[i : i + width] for i in range(0, len(values), width)] for name, values in encoded.items()}


def is_multiple_choice_data(dataset: datasets.Dataset) -> bool:
    """Tokenised multiple-choice examples hold one token list per choice."""
    feature = dataset.features.get("input_ids")
    return isinstance(feature, datasets.List) and isinstance(feature.feature, datasets.List)


def is_multiple_choice(model: nn.Module) -> bool:
    """A *ForMultipleChoice model (also the custom-code subclass of an extracted one)."""
    return type(model).__name__.endswith(MULTIPLE_CHOICE_SUFFIX)


def saved_as_multiple_choice(config) -> bool:
    """Whether a checkpoint's config names a multiple-choice class (save_pretrained records the class)."""
    return any(name.endswith(MULTIPLE_CHOICE_SUFFIX) for name in config.architectures or ())


def classifier_auto_class(multiple_choice: bool) -> type:
    """The Auto class of a task's classifier: one score per choice, or one per class."""
    return AutoModelForMultipleChoice if multiple_choice else AutoModelForSequenceClassification


def sequences_per_example(model: nn.Module) -> int:
    """Sequences one example runs: one per choice for multiple choice (the model names one label per choice)."""
    return model.config.num_labels if is_multiple_choice(model) else 1
