"""Language modelling (--task_name lm): losses against hand computations and HF's own loss, the data, and the
whole pipeline per decoder family down to a causal LM that reloads in a fresh process."""

import json
import math
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import transformers

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from make_tiny_lm import write_corpus, write_tiny_lm  # noqa: E402
from tiny_assets import write_tiny_model_dir  # noqa: E402
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer  # noqa: E402

import run_offline_search  # noqa: E402
import run_standard_nas  # noqa: E402
import select_and_extract  # noqa: E402
import train_supernet  # noqa: E402
from nas_llm.common.errors import exit_on_usage_error  # noqa: E402
from nas_llm.data.data import DataArguments, make_dataloader  # noqa: E402
from nas_llm.data.lm_data import LMArguments, load_blocks  # noqa: E402
from nas_llm.extraction.extract import extract_sub_network  # noqa: E402
from nas_llm.model.cost import count_macs  # noqa: E402
from nas_llm.model.families import layers_of  # noqa: E402
from nas_llm.model.models import load_causal_lm, save_supernet  # noqa: E402
from nas_llm.model.search_spaces import make_search_space  # noqa: E402
from nas_llm.model.slicing import sliced  # noqa: E402
from nas_llm.model.sub_network import SubNetwork  # noqa: E402
from nas_llm.training.language_modeling import (  # noqa: E402
    LANGUAGE_MODELING,
    causal_lm_loss,
    evaluate_language_model,
    lm_error,
    token_distillation_loss,
)
from nas_llm.training.sampling import PlannedPass, training_step  # noqa: E402

BLOCK_SIZE = 16
PROMPT = "the big cat"
NEW_TOKENS = 10


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    return write_corpus(root / "train.txt", 300, seed=0), write_corpus(root / "test.txt", 60, seed=1)


def data_argv(corpus) -> list[str]:
    return ["--task_name", "lm", "--train_file", str(corpus[0]), "--validation_file", str(corpus[1]),
            "--block_size", str(BLOCK_SIZE)]


def blocks_of(corpus, model_dir, split: str, batch_size: int = 4):
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    args = DataArguments(task_name="lm", train_file=str(corpus[0]), validation_file=str(corpus[1]))
    config = AutoModelForCausalLM.from_pretrained(model_dir).config
    blocks = load_blocks(args, LMArguments(block_size=BLOCK_SIZE), tokenizer, config)
    return make_dataloader(blocks[split], tokenizer, batch_size, False, 0)


def test_token_distillation_loss_is_the_per_token_kl_plus_the_next_token_loss():
    generator = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(2, 5, 7, generator=generator), torch.randn(2, 5, 7, generator=generator)
    labels = torch.randint(0, 7, (2, 5), generator=generator)
    temperature = 2.0
    p = F.softmax(teacher[:, :-1] / temperature, dim=-1)
    q = F.softmax(student[:, :-1] / temperature, dim=-1)
    kl_per_token = (p * (p.log() - q.log())).sum(-1)  # [2, 4]
    log_q = F.log_softmax(student[:, :-1], dim=-1)
    next_token = -log_q.gather(-1, labels[:, 1:, None]).squeeze(-1)
    expected = temperature**2 * kl_per_token.mean() + next_token.mean()
    assert torch.allclose(token_distillation_loss(student, teacher, labels, temperature), expected, atol=1e-6)
    assert torch.allclose(causal_lm_loss(student, labels), next_token.mean(), atol=1e-6)
    self_distilled = token_distillation_loss(teacher, teacher, labels, 1.0)
    assert self_distilled.item() == pytest.approx(causal_lm_loss(teacher, labels).item())


def test_error_is_the_loss_relative_to_uniform_guessing():
    assert lm_error(math.log(50), 50) == pytest.approx(1.0)
    assert lm_error(0.5 * math.log(50), 50) == pytest.approx(0.5)
    assert lm_error(10.0, 50) == 1.0


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_perplexity_is_hf_s_own_loss_over_the_blocks(tmp_path, corpus, family):
    model_dir = write_tiny_lm(tmp_path / "model", family)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    loader = blocks_of(corpus, model_dir, "validation", batch_size=3)
    with torch.no_grad():  # every block has BLOCK_SIZE - 1 predicted tokens: the mean of block means is the mean
        reference = torch.stack([
            model(input_ids=block[None], labels=block[None]).loss for batch in loader for block in batch["input_ids"]
        ]).mean().item()
    scores = evaluate_language_model(model, loader, torch.device("cpu"))
    assert scores["loss"] == pytest.approx(reference, rel=1e-6)
    assert scores["perplexity"] == pytest.approx(math.exp(reference), rel=1e-6)


def test_blocks_are_the_concatenated_token_stream(tmp_path, corpus):
    model_dir = write_tiny_lm(tmp_path / "model", "gpt2")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    args = DataArguments(task_name="lm", train_file=str(corpus[0]), validation_file=str(corpus[1]))
    config = AutoModelForCausalLM.from_pretrained(model_dir).config
    blocks = load_blocks(args, LMArguments(block_size=BLOCK_SIZE), tokenizer, config)
    stream = [token for line in corpus[1].read_text().splitlines() for token in tokenizer(line)["input_ids"]]
    num_blocks = len(stream) // BLOCK_SIZE
    assert len(blocks["test"]) == num_blocks
    assert [token for block in blocks["test"]["input_ids"] for token in block] == stream[: num_blocks * BLOCK_SIZE]
    assert blocks["test"]["labels"] == blocks["test"]["input_ids"]


def test_a_tied_lm_head_costs_its_macs_per_token(tmp_path):
    model = AutoModelForCausalLM.from_pretrained(write_tiny_lm(tmp_path / "model", "gpt2"))
    assert model.config.tie_word_embeddings
    full = make_search_space("small", model.config).largest()
    seq_len, config = 8, model.config
    layer_matrices = sum(p.numel() for p in layers_of(model).parameters() if p.dim() == 2)
    attention = config.n_layer * 2 * seq_len * config.n_embd
    expected = seq_len * (layer_matrices + attention + config.vocab_size * config.n_embd)
    assert count_macs(model, full, seq_len) == expected


def train(tmp_path, corpus, model_dir, space: str, strategy: str = "one_shot", epochs: int = 1, lr: str = "3e-3",
          extra=()):
    checkpoint = tmp_path / f"supernet_{strategy}"
    train_supernet.main([
        "--model_name_or_path", str(model_dir), *data_argv(corpus), "--output_dir", str(checkpoint),
        "--log_dir", str(tmp_path / "tb"), "--sampling_strategy", strategy, "--search_space", space,
        "--num_train_epochs", str(epochs), "--per_device_train_batch_size", "4", "--learning_rate", lr,
        "--seed", "0", "--save_strategy", "no", *extra,
    ])
    return checkpoint


def search(tmp_path, corpus, model_dir, checkpoint, space: str) -> dict:
    output_dir = tmp_path / "search"
    run_offline_search.main([
        "--model_name_or_path", str(model_dir), *data_argv(corpus), "--checkpoint_dir_model", str(checkpoint),
        "--search_space", space, "--search_strategy", "random_search", "--num_samples", "10", "--seed", "1",
        "--output_dir", str(output_dir), "--log_dir", str(tmp_path / "tb"), "--cost_seq_len", str(BLOCK_SIZE),
        "--latency_repeats", "1", "--per_device_eval_batch_size", "4",
    ])
    return json.loads((output_dir / "results_lm.json").read_text())


@torch.no_grad()
def greedy_reference(model, sub_network, prompt_ids: torch.Tensor, eos_token_id: int) -> list[int]:
    """Greedy decoding by full forward passes of the super-network under the sub-network (no KV cache)."""
    ids = prompt_ids
    with sliced(model, sub_network):
        for _ in range(NEW_TOKENS):
            next_id = model(input_ids=ids, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)
            ids = torch.cat([ids, next_id], dim=1)
            if next_id.item() == eos_token_id:
                break
    return ids[0].tolist()


RELOAD_SCRIPT = """
import json, math, sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
model = AutoModelForCausalLM.from_pretrained(sys.argv[1], trust_remote_code=True).eval()
tokenizer = AutoTokenizer.from_pretrained(sys.argv[1])
blocks = torch.load(sys.argv[2], weights_only=True)
with torch.no_grad():
    loss = torch.stack([model(input_ids=block[None], labels=block[None]).loss for block in blocks]).mean().item()
    prompt = tokenizer(sys.argv[3], add_special_tokens=False, return_tensors="pt").input_ids
    generated = model.generate(prompt, max_new_tokens=int(sys.argv[4]), do_sample=False)
print(json.dumps({"perplexity": math.exp(loss), "generated": generated[0].tolist(),
                  "params": sum(p.numel() for p in model.parameters())}))
"""


@pytest.mark.parametrize("family, space, kind", [
    ("gpt2", "medium", "custom_code"), ("gpt_neox", "layer_block", "custom_code"), ("llama", "small", "standard"),
    ("qwen2", "medium", "custom_code"),
])
def test_train_search_extract_and_reload_a_causal_lm(tmp_path, corpus, family, space, kind):
    """Library-default configs (Qwen2: use_cache=True); a Llama with GQA gives a standard checkpoint."""
    model_dir = write_tiny_lm(tmp_path / "model", family)
    checkpoint = train(tmp_path, corpus, model_dir, space)
    results = search(tmp_path, corpus, model_dir, checkpoint, space)
    assert len(results["evaluations"]) == 10
    assert all(0 < e["error"] <= 1 and 0 < e["params"] <= 1 for e in results["evaluations"])
    # the cheapest Pareto point past the initial design (the largest, smallest and mid-size sub-network,
    # which every search evaluates first and whose uniform shapes often extract to standard checkpoints)
    index, point = next((i, p) for i, p in enumerate(results["pareto_set"]) if p["iteration"] >= 3)
    assert point["params"] < 1
    select_and_extract.main([
        "--results", str(tmp_path / "search" / "results_lm.json"), "--pareto_index", str(index), *data_argv(corpus),
        "--output_dir", str(tmp_path / "pruned"),
    ])
    report = json.loads((tmp_path / "pruned" / "extraction.json").read_text())
    assert report["matches_search"] and report["num_parameters"] == point["num_parameters"]
    assert report["checkpoint_kind"] == kind
    card = (tmp_path / "pruned" / "README.md").read_text()
    assert "pipeline_tag: text-generation" in card and "AutoModelForCausalLM.from_pretrained" in card

    test_blocks = torch.stack([block for batch in blocks_of(corpus, model_dir, "test") for block in batch["input_ids"]])
    torch.save(test_blocks, tmp_path / "blocks.pt")
    reloaded = json.loads(subprocess.run(
        [sys.executable, "-c", RELOAD_SCRIPT, str(tmp_path / "pruned"), str(tmp_path / "blocks.pt"), PROMPT,
         str(NEW_TOKENS)],
        check=True, cwd=tmp_path, capture_output=True, text=True,
        env={"PATH": "", "HF_HUB_OFFLINE": "1", "PYTHONPATH": "", "TRANSFORMERS_VERBOSITY": "error"},
    ).stdout.splitlines()[-1])
    assert reloaded["perplexity"] == pytest.approx(point["test"]["perplexity"], rel=1e-4)
    assert reloaded["params"] == point["num_parameters"]

    supernet = AutoModelForCausalLM.from_pretrained(checkpoint).eval()
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    prompt_ids = tokenizer(PROMPT, add_special_tokens=False, return_tensors="pt").input_ids
    sub_network = SubNetwork.from_json_dict(point["sub_network"])
    assert reloaded["generated"] == greedy_reference(supernet, sub_network, prompt_ids, tokenizer.eos_token_id)


def test_perplexity_falls_during_training_for_the_full_and_the_smallest_network(tmp_path, corpus):
    model_dir = write_tiny_lm(tmp_path / "model", "llama")
    pretrained = AutoModelForCausalLM.from_pretrained(model_dir)
    smallest = make_search_space("small", pretrained.config).smallest()
    loader = blocks_of(corpus, model_dir, "validation")
    before = {
        "largest": evaluate_language_model(pretrained, loader, torch.device("cpu"))["perplexity"],
        "smallest": evaluate_language_model(pretrained, loader, torch.device("cpu"), smallest, sliced)["perplexity"],
    }
    checkpoint = train(tmp_path, corpus, model_dir, "small", epochs=2)
    results = json.loads((checkpoint / "results.json").read_text())
    assert results["validation"]["perplexity"] < 0.8 * before["largest"]
    assert results["smallest_sub_network"]["validation"]["perplexity"] < 0.8 * before["smallest"]


def test_no_training_keeps_the_pretrained_weights_and_searches_them(tmp_path, corpus):
    model_dir = write_tiny_lm(tmp_path / "model", "qwen2")
    checkpoint = train(tmp_path, corpus, model_dir, "small", strategy="none")
    pretrained = AutoModelForCausalLM.from_pretrained(model_dir).state_dict()
    saved = AutoModelForCausalLM.from_pretrained(checkpoint).state_dict()
    assert pretrained.keys() == saved.keys() and all(torch.equal(pretrained[k], saved[k]) for k in pretrained)
    results = search(tmp_path, corpus, model_dir, checkpoint, "small")
    assert results["sampling_strategy"] == "none" and len(results["evaluations"]) == 10


def test_no_training_on_importance_ordered_weights_keeps_the_full_network(tmp_path, corpus):
    """Minitron-style: units reordered by their next-token-loss Fisher importance, nothing trained."""
    model_dir = write_tiny_lm(tmp_path / "model", "llama")
    pretrained = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    checkpoint = train(tmp_path, corpus, model_dir, "small", strategy="none",
                       extra=["--reorder_units", "importance", "--num_importance_batches", "4"])
    reordered = AutoModelForCausalLM.from_pretrained(checkpoint).eval()
    assert (checkpoint / "unit_importance.json").is_file()
    assert not torch.equal(reordered.model.layers[0].mlp.up_proj.weight, pretrained.model.layers[0].mlp.up_proj.weight)
    loader = blocks_of(corpus, model_dir, "validation")
    with torch.no_grad():
        for batch in loader:
            ids = batch["input_ids"]
            assert torch.allclose(reordered(input_ids=ids).logits, pretrained(input_ids=ids).logits, atol=1e-5)


@pytest.fixture(scope="module")
def bad_input_assets(tmp_path_factory, corpus):
    """A tiny LM, a classification checkpoint of a decoder, an encoder, and bad text files."""
    root = tmp_path_factory.mktemp("lm_bad_input")
    model_dir = write_tiny_lm(root / "model", "gpt2")
    classifier = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=2)
    save_supernet(classifier, AutoTokenizer.from_pretrained(model_dir), root / "classifier",
                  {"model_name_or_path": str(model_dir), "task_name": "rte", "search_space": "small"})
    write_tiny_model_dir(root / "encoder", "bert")
    (root / "no_text.csv").write_text("sentence,label\nthe cat,1\na dog,0\n")
    (root / "empty.txt").write_text("\n\n")
    (root / "short.txt").write_text("the cat sees a dog .\n" * 3)
    return {"root": root, "model": str(model_dir), "train": str(corpus[0]), "test": str(corpus[1])}


def lm_argv(assets, model=None, train=None, *extra):
    return ["--model_name_or_path", model or assets["model"], "--task_name", "lm", "--train_file",
            train or assets["train"], "--validation_file", assets["test"], "--block_size", "16",
            "--output_dir", str(assets["root"] / "never_written"), *extra]


LM_CASES = [
    (train_supernet, lambda a: lm_argv(a, None, str(a["root"] / "no_text.csv")), "has no text column 'text'"),
    (train_supernet, lambda a: lm_argv(a, None, str(a["root"] / "empty.txt")), "has no text"),
    (train_supernet, lambda a: lm_argv(a, None, str(a["root"] / "short.txt"), "--block_size", "64"),
     "fewer than --block_size 64 tokens"),
    (train_supernet, lambda a: lm_argv(a, None, None, "--block_size", "128"),
     "--block_size 128 is longer than the model's 64 positions"),
    (train_supernet, lambda a: lm_argv(a, str(a["root"] / "classifier")), "is a GPT2ForSequenceClassification"),
    (train_supernet, lambda a: lm_argv(a, str(a["root"] / "encoder")), "an encoder; --task_name lm needs a decoder"),
    (train_supernet, lambda a: lm_argv(a)[:4] + ["--output_dir", str(a["root"] / "never_written")], "needs text"),
    (train_supernet, lambda a: lm_argv(a, None, None, "--torch_dtype", "fp8"), "unknown --torch_dtype 'fp8'"),
    (run_offline_search, lambda a: lm_argv(a, None, None, "--checkpoint_dir_model", str(a["root"] / "classifier")),
     "trained with --task_name rte but the search asks for --task_name lm"),
    (run_standard_nas, lambda a: [arg for arg in lm_argv(a, None, None, "--num_samples", "2")
                                  if arg not in ("--block_size", "16")], "run_standard_nas.py fine-tunes classifiers"),
]


@pytest.mark.parametrize("script, make_argv, message", LM_CASES, ids=[str(i) for i in range(len(LM_CASES))])
def test_bad_lm_input_is_one_clear_line(bad_input_assets, capsys, monkeypatch, script, make_argv, message):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SystemExit) as exit_info:
        exit_on_usage_error(partial(script.main, make_argv(bad_input_assets)))
    assert exit_info.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0], errors
    assert not (bad_input_assets["root"] / "never_written").exists()


@pytest.mark.parametrize("family", ["gpt2", "gpt_neox", "llama", "qwen2"])
def test_a_model_whose_first_layer_lost_its_attention_generates_with_the_cache(tmp_path, family):
    """The empty cache of that layer must not shift the positions of the tokens generated with the cache."""
    model = AutoModelForCausalLM.from_pretrained(write_tiny_lm(tmp_path / "model", family)).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():  # larger matrices than the init's: varied, position-dependent output
            if param.dim() > 1:
                param.normal_(0, 0.1, generator=generator)
    space = make_search_space("layer_block", model.config)
    sub_network = space.to_sub_network({name: int(name != "layer_mha_0") for name in space.config_space})
    extracted = extract_sub_network(model, sub_network)
    assert extracted.generation_config.use_cache and not extracted.config.use_cache
    extracted.generation_config.eos_token_id = None  # random weights: no stop at <eos>, all NEW_TOKENS count
    prompt = torch.tensor([[5, 9, 13, 17, 21]])
    generated = extracted.generate(prompt, max_new_tokens=NEW_TOKENS, do_sample=False)[0].tolist()
    assert len(set(generated[prompt.shape[1]:])) > 1, "a constant output would not show misplaced positions"
    assert generated == greedy_reference(model, sub_network, prompt, eos_token_id=-1)


def test_a_dataset_folder_by_name_keeps_its_splits(tmp_path, corpus):
    """--dataset_name with a local folder (the offline stand-in for a hub dataset): train/validation/test files."""
    folder = tmp_path / "wikitext_like"
    folder.mkdir()
    for split, source in (("train", corpus[0]), ("validation", corpus[1]), ("test", corpus[1])):
        (folder / f"{split}.txt").write_text(source.read_text())
    model_dir = write_tiny_lm(tmp_path / "model", "gpt2")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    config = AutoModelForCausalLM.from_pretrained(model_dir).config
    lm_args = LMArguments(block_size=BLOCK_SIZE, dataset_name=str(folder))
    blocks = load_blocks(DataArguments(task_name="lm"), lm_args, tokenizer, config)
    from_files = load_blocks(
        DataArguments(task_name="lm", train_file=str(corpus[0]), validation_file=str(corpus[1])),
        LMArguments(block_size=BLOCK_SIZE), tokenizer, config,
    )
    assert blocks["validation"]["input_ids"] == blocks["test"]["input_ids"] == from_files["test"]["input_ids"]
    assert len(blocks["train"]) > len(from_files["train"])  # nothing held out of the training text


def test_a_bfloat16_search_scores_close_to_float32(tmp_path, corpus):
    model_dir = write_tiny_lm(tmp_path / "model", "qwen2")
    loader = blocks_of(corpus, model_dir, "validation")
    sub_network = make_search_space("small", AutoModelForCausalLM.from_pretrained(model_dir).config).smallest()
    scores = {
        dtype: evaluate_language_model(load_causal_lm(str(model_dir), dtype=dtype), loader, torch.device("cpu"),
                                       sub_network, sliced)
        for dtype in ("float32", "bfloat16")
    }
    assert scores["bfloat16"]["loss"] == pytest.approx(scores["float32"]["loss"], rel=1e-2)


def test_no_kv_cache_is_built_in_training_or_scoring(tmp_path, corpus, monkeypatch):
    """Qwen2 ships use_cache=True; a cache sized for the full network breaks sub-networks that drop layers."""
    model_dir = write_tiny_lm(tmp_path / "model", "qwen2")
    model = load_causal_lm(str(model_dir))
    assert AutoModelForCausalLM.from_pretrained(model_dir).config.use_cache  # the library default, kept on disk

    def no_cache(*args, **kwargs):
        raise AssertionError("a KV cache was built")

    monkeypatch.setattr(transformers.cache_utils.DynamicCache, "__init__", no_cache)
    space = make_search_space("medium", model.config)
    drops_a_layer = space.to_sub_network({name: 0 if name.endswith("_1") else 1 for name in space.config_space})
    assert not drops_a_layer.keeps_layer(1)
    loader = blocks_of(corpus, model_dir, "validation")
    evaluate_language_model(model, loader, torch.device("cpu"), drops_a_layer, sliced)
    batch = next(iter(loader))
    passes = [PlannedPass("largest", None, False), PlannedPass("random", drops_a_layer, True)]
    training_step(model.train(), batch, passes, sliced, 1.0, objective=LANGUAGE_MODELING)
