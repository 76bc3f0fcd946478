"""Shared fixtures: tiny random models of every supported family, built offline from configs."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from transformers import (
    AutoModelForSequenceClassification,
    BertConfig,
    ElectraConfig,
    GPT2Config,
    GPTNeoXConfig,
    LlamaConfig,
    MistralConfig,
    Qwen2Config,
    RobertaConfig,
    XLMRobertaConfig,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

VOCAB_SIZE = 64
PAD_ID = 0

torch.set_num_threads(1)  # tiny models: more threads only add synchronisation overhead


ENCODER_CONFIGS = {
    "bert": BertConfig,
    "roberta": RobertaConfig,
    "xlm-roberta": XLMRobertaConfig,
    "electra": ElectraConfig,
    "electra-projected": ElectraConfig,
}
DECODER_CONFIGS = {"llama": LlamaConfig, "mistral": MistralConfig, "qwen2": Qwen2Config}


def tiny_config(family: str, num_labels: int = 2, token_ids: bool = True):
    """A 3-layer, 4-head, hidden-16 config of a model type; decoders use the pad id as eos, as the original did.

    Everything but sizes and token ids keeps the library's defaults (Qwen2's `use_cache=True`, Mistral's
    sliding window, ...), so the tests see what released checkpoints ship. `electra-projected` is ELECTRA with
    embeddings narrower than the hidden size (its `embeddings_project`), as in the released ELECTRA checkpoints.
    `token_ids=False` keeps the library's token ids too: no pad token for GPT-2, Llama or Qwen2, as released.
    """
    common = dict(num_labels=num_labels, pad_token_id=PAD_ID) if token_ids else dict(num_labels=num_labels)
    sizes = dict(
        vocab_size=VOCAB_SIZE, hidden_size=16, num_hidden_layers=3, num_attention_heads=4, intermediate_size=20
    )
    if family in ENCODER_CONFIGS:
        if family == "electra":
            sizes["embedding_size"] = 16
        if family == "electra-projected":
            sizes["embedding_size"] = 8
        # RoBERTa-style position ids start after the padding index.
        max_positions = 70 if "roberta" in family else 64
        return ENCODER_CONFIGS[family](**sizes, max_position_embeddings=max_positions, **common)
    decoder_ids = dict(eos_token_id=PAD_ID, bos_token_id=PAD_ID) if token_ids else {}
    if family == "gpt2":
        return GPT2Config(
            vocab_size=VOCAB_SIZE, n_embd=16, n_layer=3, n_head=4, n_inner=20, n_positions=64, **decoder_ids, **common,
        )
    decoder_ids["max_position_embeddings"] = 64
    if family == "gpt_neox":
        return GPTNeoXConfig(**sizes, **decoder_ids, **common)
    if family in DECODER_CONFIGS:
        return DECODER_CONFIGS[family](**sizes, num_key_value_heads=2, **decoder_ids, **common)
    raise ValueError(family)


# Every family of families.py and every model type of the README's family table; ELECTRA in both embedding layouts.
FAMILY_NAMES = (
    "bert", "roberta", "xlm-roberta", "electra", "electra-projected", "gpt2", "gpt_neox", "llama", "mistral", "qwen2",
)


INIT_STD = 0.2  # ten times a released model's: every head and neuron changes the logits visibly


def tiny_model(family: str, num_labels: int = 2, seed: int = 0, token_ids: bool = True):
    """A random tiny model: weights drawn with std INIT_STD; its config keeps the library's initializer_range."""
    torch.manual_seed(seed)
    config = tiny_config(family, num_labels, token_ids)
    library_std, config.initializer_range = config.initializer_range, INIT_STD
    model = AutoModelForSequenceClassification.from_config(config)
    model.config.initializer_range = library_std
    return model.eval()


def tiny_batch(batch_size: int = 3, seq_len: int = 7, seed: int = 0, num_labels: int = 2) -> dict:
    """Random token ids with right padding in the last row."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(3, VOCAB_SIZE, (batch_size, seq_len), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    input_ids[-1, -2:] = PAD_ID
    attention_mask[-1, -2:] = 0
    labels = torch.randint(0, max(num_labels, 2), (batch_size,), generator=generator)
    if num_labels == 1:
        labels = torch.rand(batch_size, generator=generator)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


@pytest.fixture(params=FAMILY_NAMES)
def family_name(request) -> str:
    return request.param


TINY_BERT_WORDS = ("the", "a", "cat", "dog", "sat", "ran", "on", "mat", "is", "good", "bad", "movie", ".", ",", '"')


@pytest.fixture
def tiny_bert_tokenizer(tmp_path_factory):
    """A lower-casing BERT WordPiece tokenizer over a few words, built offline from a vocab.txt."""
    from transformers import BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny_bert_tokenizer")
    special_tokens = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
    (folder / "vocab.txt").write_text("\n".join(special_tokens + TINY_BERT_WORDS) + "\n")
    return BertTokenizerFast.from_pretrained(str(folder), model_max_length=64)
