"""Model loading: decoders get a pad token and classify on the last real token; errors are clear."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import transformers
from support import PAD_ID, tiny_config, tiny_model
from tiny_assets import tiny_tokenizer, write_tiny_model_dir, write_tiny_rte
from transformers import AutoConfig, AutoModel

from nas_llm.common.errors import UsageError
from nas_llm.model.models import load_model, load_tokenizer
from nas_llm.model.search_spaces import make_search_space
from nas_llm.model.slicing import sliced

DECODERS = ["gpt2", "gpt_neox", "llama", "qwen2"]
PROJECT_DIR = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("family", DECODERS)
def test_decoder_classifies_on_the_last_non_pad_token(family):
    model = tiny_model(family)
    ids = torch.tensor([[5, 9, 13, 7, 21]])
    padded = torch.tensor([[5, 9, 13, 7, 21, PAD_ID, PAD_ID]])
    with torch.no_grad():
        alone = model(input_ids=ids).logits
        in_batch = model(input_ids=padded, attention_mask=(padded != PAD_ID).long()).logits
    assert torch.allclose(alone, in_batch, atol=1e-5)


def test_tokenizer_without_pad_token_pads_with_eos(tmp_path):
    tokenizer = tiny_tokenizer()
    tokenizer.pad_token = None
    tokenizer.eos_token = "[SEP]"
    tokenizer.save_pretrained(tmp_path)
    loaded = load_tokenizer(str(tmp_path))
    assert loaded.pad_token == "[SEP]" and loaded.pad_token_id == loaded.eos_token_id


@pytest.mark.parametrize("family", DECODERS)
def test_loaded_decoder_knows_its_pad_token(tmp_path, family):
    model_dir = write_tiny_model_dir(tmp_path, family)
    tokenizer = load_tokenizer(str(model_dir))
    model = load_model(str(model_dir), ("a", "b", "c"), tokenizer)
    assert model.config.pad_token_id == tokenizer.pad_token_id
    assert model.config.num_labels == 3


def test_unsupported_model_type_lists_the_supported_ones(tmp_path):
    from transformers import T5Config

    T5Config(vocab_size=10, d_model=8, num_layers=1, num_heads=2).save_pretrained(tmp_path)
    with pytest.raises(UsageError, match="not supported; supported model types: bert, roberta"):
        load_model(str(tmp_path), ("a", "b"), tiny_tokenizer())


def test_unreachable_hub_names_local_model_directories(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UsageError, match="HF_HUB_OFFLINE is set.*local model directory"):
        load_tokenizer("some-org/some-model-that-is-not-cached")


def test_checkpoints_name_the_task_labels(tmp_path):
    model_dir = write_tiny_model_dir(tmp_path / "model", "bert", num_labels=3)  # fine-tuned for another task
    model = load_model(str(model_dir), ("negative", "positive"), tiny_tokenizer())
    model.save_pretrained(tmp_path / "saved")
    config = AutoConfig.from_pretrained(tmp_path / "saved")
    assert config.id2label == {0: "negative", 1: "positive"}
    assert config.label2id == {"negative": 0, "positive": 1}
    assert load_model(str(model_dir), (), tiny_tokenizer()).config.num_labels == 1  # regression


def test_a_single_process_run_starts_quietly(tmp_path):
    """No transformers load-report table (one line of ours instead) and no DeepSpeed import."""
    model_dir = tmp_path / "base_model"  # a pre-trained body without classification head, like MiniLM
    AutoModel.from_config(tiny_config("bert")).save_pretrained(model_dir)
    tiny_tokenizer().save_pretrained(model_dir)
    data_dir = write_tiny_rte(tmp_path / "glue")
    flags = [
        "--model_name_or_path", str(model_dir), "--task_name", "rte", "--data_dir", str(data_dir),
        "--output_dir", str(tmp_path / "supernet"), "--log_dir", str(tmp_path / "tb"), "--num_train_epochs", "1",
    ]
    code = "import sys, train_supernet; train_supernet.main(sys.argv[1:]); print('deepspeed' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code, *flags], cwd=PROJECT_DIR, capture_output=True, text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "False", "DeepSpeed was imported"
    assert "New classification head initialised for 2 labels (classifier.bias, classifier.weight)" in result.stderr
    assert "LOAD REPORT" not in result.stderr and "Setting accelerator" not in result.stdout + result.stderr
    config = AutoConfig.from_pretrained(tmp_path / "supernet")
    assert config.id2label == {0: "entailment", 1: "not_entailment"}


@pytest.mark.parametrize("family", ["llama", "mistral", "qwen2"])
def test_classifiers_never_build_a_kv_cache(tmp_path, monkeypatch, family):
    """Released configs say use_cache=True; a loaded classifier builds no cache, full or as a sliced sub-network."""
    model_dir = write_tiny_model_dir(tmp_path, family)
    assert AutoConfig.from_pretrained(model_dir).use_cache
    model = load_model(str(model_dir), ("a", "b"), load_tokenizer(str(model_dir)))

    def no_cache(*args, **kwargs):
        raise AssertionError("a KV cache was built")

    monkeypatch.setattr(transformers.cache_utils.DynamicCache, "__init__", no_cache)
    drops_a_layer = make_search_space("layer", model.config).to_sub_network({"layer_0": 1, "layer_1": 0, "layer_2": 1})
    ids = torch.tensor([[5, 9, 13, 7, 21]])
    model(input_ids=ids).logits.sum().backward()
    with sliced(model, drops_a_layer):
        model(input_ids=ids).logits.sum().backward()
