"""Helpers the test files share: tiny random models of every supported family, checks, the launchers' fake AWS.

A test file imports helpers from here (tiny_assets.py: files on disk; tiny_runs.py: tiny training and search
runs), never from conftest or from another test file; conftest.py holds the fixtures, among them the
session-scoped trained tiny super-network that several files read.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode
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

# The repository on the path, for test files run as scripts too (test_accelerate's worker processes).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nas_llm.common.flags import SEARCH_SPACES  # noqa: E402
from nas_llm.extraction.extract import extract_sub_network  # noqa: E402
from nas_llm.model.cost import count_macs  # noqa: E402
from nas_llm.model.families import family_for  # noqa: E402
from nas_llm.model.search_spaces import ModelShape, SearchSpace, make_search_space  # noqa: E402
from nas_llm.model.sub_network import SubNetwork  # noqa: E402
from nas_llm.model.unit_ranking import UnitScores  # noqa: E402

VOCAB_SIZE = 64
PAD_ID = 0

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


















def reload_in_fresh_process(models: Path, batch_file: Path) -> dict:
    """{folder name: logits on the saved batch, parameter count, module} of every checkpoint folder in `models`,
    loaded by transformers alone in ONE fresh process outside this project (cwd elsewhere, no PYTHONPATH)."""
    root = batch_file.parent
    subprocess.run(
        [sys.executable, "-c", RELOAD_SCRIPT, str(models), str(batch_file)],
        check=True, cwd=root, env={"PATH": "", "HF_HUB_OFFLINE": "1", "PYTHONPATH": "", "HF_HOME": str(root / "hf")},
    )
    return torch.load(f"{batch_file}.out", weights_only=True)


SPACE_NAMES = tuple(SEARCH_SPACES)


def importance_scores(config, seed: int = 0) -> UnitScores:
    """Made-up unit importance for a model's shape, most important first in each layer, as a reordered
    super-network stores its units."""
    shape, generator = ModelShape.of(config), torch.Generator().manual_seed(seed)
    heads = torch.rand(shape.num_layers, shape.num_head_units, generator=generator)
    neurons = torch.rand(shape.num_layers, shape.intermediate_size, generator=generator)
    return UnitScores(heads.sort(1, descending=True).values, neurons.sort(1, descending=True).values)


def make_space(name: str, config) -> SearchSpace:
    """make_search_space for every space; the `importance` one on made-up scores (importance_scores)."""
    return make_search_space(name, config, importance_scores(config) if name == "importance" else None)


def full_sub_network(model) -> SubNetwork:
    family = family_for(model)
    config = model.config
    return SubNetwork.full(
        family.num_layers(config), family.num_head_units(config), family.intermediate_size(config)
    )


def zero_inputs_of(layer, path: str, index: torch.Tensor) -> None:
    weight, input_dim = weight_of(layer, path)
    with torch.no_grad():
        weight.index_fill_(input_dim, index, 0.0)


def assert_macs_equal_torch_flop_counter(model, example_shape: tuple[int, ...]) -> None:
    """An independent count: torch's FlopCounterMode on the extracted dense model (eager attention), run on one
    example of `example_shape` token ids (tokens last)."""
    space = make_search_space("medium", model.config)
    full = full_sub_network(model)
    blocks_dropped = SubNetwork(full.head_mask.clone(), full.ffn_mask.clone())
    blocks_dropped.head_mask[1], blocks_dropped.ffn_mask[2] = False, False  # layer 1 keeps only its FFN, 2 attention
    for sub_network in (space.largest(), space.sample(np.random.default_rng(0)), space.smallest(), blocks_dropped):
        extracted = extract_sub_network(model, sub_network)
        extracted.config._attn_implementation = "eager"
        with FlopCounterMode(display=False) as counter:
            extracted(input_ids=torch.randint(3, 60, (1, *example_shape)))
        macs = count_macs(model, sub_network, seq_len=example_shape[-1])
        assert isinstance(macs, int) and counter.get_total_flops() == 2 * macs


RELOAD_SCRIPT = """
import json, sys, torch
from pathlib import Path
from transformers import AutoModelForSequenceClassification
batch = torch.load(sys.argv[2], weights_only=True)
reloaded = {}
for directory in sorted(Path(sys.argv[1]).iterdir()):
    standard = "auto_map" not in json.loads((directory / "config.json").read_text())
    model = AutoModelForSequenceClassification.from_pretrained(directory, trust_remote_code=not standard).eval()
    with torch.no_grad():
        logits = model(**batch).logits
    params = sum(p.numel() for p in model.parameters())
    reloaded[directory.name] = {"logits": logits, "params": params, "module": type(model).__module__}
torch.save(reloaded, sys.argv[2] + ".out")
"""


def weight_of(layer, path):
    module = layer.get_submodule(path)
    # Conv1D (GPT-2) stores (in, out); nn.Linear stores (out, in): the input axis differs.
    return module.weight, 0 if type(module).__name__ == "Conv1D" else 1


FAKE_ACCESS_KEY_ID = "AKIAFAKEKEYFORTESTS7"


FAKE_SECRET_ACCESS_KEY = "fake-secret-access-key-for-moto-tests"


ACCOUNT = "123456789012"  # moto's account


REGION = "us-east-1"


ROLE = f"arn:aws:iam::{ACCOUNT}:role/NasLlmSageMaker"


BUCKET = "nas-llm-tests"


AWS_FLAGS = ["--role", ROLE, "--bucket", BUCKET, "--region", REGION]


def dry_run(main, argv: list[str], capsys) -> list[dict]:
    main([*argv, "--dry_run"])
    return json.loads(capsys.readouterr().out)


def training_jobs(aws) -> dict[str, dict]:
    """Every training job in moto, described."""
    names = [job["TrainingJobName"] for job in aws.sagemaker.list_training_jobs()["TrainingJobSummaries"]]
    return {name: aws.sagemaker.describe_training_job(TrainingJobName=name) for name in names}


def channel_uris(description: dict) -> dict[str, str]:
    return {
        channel["ChannelName"]: channel["DataSource"]["S3DataSource"]["S3Uri"]
        for channel in description["InputDataConfig"]
    }


def s3_text(aws, uri: str) -> str:
    bucket, key = uri.removeprefix("s3://").split("/", 1)
    return aws.s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode()


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        assert FAKE_ACCESS_KEY_ID not in text and FAKE_SECRET_ACCESS_KEY not in text
