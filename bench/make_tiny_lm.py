"""Write a tiny random causal LM and a small text corpus, for the CPU language-modelling example and tests.

No weights or data from the hub: the model is built from its family's library-default config with tiny
sizes (so defaults such as Qwen2's use_cache=True stay as released checkpoints ship them), the tokenizer is
a byte-level BPE over the corpus' words, and the corpus is sentences of a small random grammar with subject-verb
agreement across a prepositional phrase, which a few training steps start to learn.

    python bench/make_tiny_lm.py --family qwen2 --output_dir ./tiny_lm
    # -> ./tiny_lm/model (save_pretrained: weights, config, tokenizer), ./tiny_lm/train.txt, ./tiny_lm/test.txt
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoModelForCausalLM,
    GPT2Config,
    GPTNeoXConfig,
    LlamaConfig,
    MistralConfig,
    PreTrainedTokenizerFast,
    Qwen2Config,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nas_llm.common.errors import UsageArgumentParser, exit_on_usage_error  # noqa: E402

EOS = "<eos>"
DETERMINERS = {"singular": ["a", "every", "the"], "plural": ["some", "all", "the"]}
ADJECTIVES = ["big", "small", "red", "old", "quick", "lazy"]
NOUNS = {"singular": ["cat", "dog", "bird", "fox", "tree", "house"], "plural": ["cats", "dogs", "birds", "foxes",
                                                                             "trees", "houses"]}
VERBS = {"singular": ["sees", "likes", "chases", "finds"], "plural": ["see", "like", "chase", "find"]}
PREPOSITIONS = ["on", "near", "under", "behind"]
WORDS = sorted({*sum(DETERMINERS.values(), []), *ADJECTIVES, *sum(NOUNS.values(), []), *sum(VERBS.values(), []),
                *PREPOSITIONS, "."})
FAMILIES = ("gpt2", "gpt_neox", "llama", "mistral", "qwen2")


def tiny_tokenizer(model_max_length: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE over WORDS, the scheme GPT-2 and Qwen2 tokenizers use (AutoTokenizer rebuilds a Qwen2
    tokenizer from the vocabulary and merges, so a word-level one would not survive reloading); <eos> pads."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=200, special_tokens=[EOS], show_progress=False)
    # merges up to every whole word, with and without its leading space
    backend.train_from_iterator([" ".join(WORDS), " ".join(reversed(WORDS))] * 3 + WORDS, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token=EOS, pad_token=EOS, model_max_length=model_max_length
    )


def tiny_config(family: str, vocab_size: int, eos_token_id: int, max_positions: int = 64):
    """The family's library-default config except for sizes (3 layers, 4 heads, 2 KV groups, hidden 32)."""
    tokens = dict(vocab_size=vocab_size, bos_token_id=eos_token_id, eos_token_id=eos_token_id)
    if family == "gpt2":
        return GPT2Config(n_embd=32, n_layer=3, n_head=4, n_inner=48, n_positions=max_positions, **tokens)
    if family == "gpt_neox":
        return GPTNeoXConfig(
            hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=48,
            max_position_embeddings=max_positions, **tokens,
        )
    config_class = {"llama": LlamaConfig, "mistral": MistralConfig, "qwen2": Qwen2Config}[family]
    return config_class(
        hidden_size=32, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2, intermediate_size=48,
        max_position_embeddings=max_positions, **tokens,
    )


def sentence(rng: random.Random) -> str:
    """subject [preposition noun phrase] verb object . -- the verb agrees with the subject, which a model
    has to look past the prepositional phrase for (a bigram model cannot)."""

    def noun_phrase(number: str) -> list[str]:
        adjective = [rng.choice(ADJECTIVES)] if rng.random() < 0.5 else []
        return [rng.choice(DETERMINERS[number]), *adjective, rng.choice(NOUNS[number])]

    number = rng.choice(["singular", "plural"])
    words = noun_phrase(number)
    if rng.random() < 0.6:
        words += [rng.choice(PREPOSITIONS), *noun_phrase(rng.choice(["singular", "plural"]))]
    words += [rng.choice(VERBS[number]), *noun_phrase(rng.choice(["singular", "plural"])), "."]
    return " ".join(words)


def write_corpus(path: Path, num_lines: int, seed: int) -> Path:
    rng = random.Random(seed)
    path.write_text("\n".join(sentence(rng) for _ in range(num_lines)) + "\n")
    return path


def write_tiny_lm(directory: Path, family: str, seed: int = 0, max_positions: int = 64) -> Path:
    """A save_pretrained folder with a random tiny causal LM of `family` and its tokenizer."""
    tokenizer = tiny_tokenizer(max_positions)
    torch.manual_seed(seed)
    config = tiny_config(family, len(tokenizer), tokenizer.eos_token_id, max_positions)
    AutoModelForCausalLM.from_config(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def main(argv: list[str] | None = None) -> None:
    parser = UsageArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", choices=FAMILIES, default="qwen2", help="the model family, at its library defaults")
    parser.add_argument("--output_dir", type=Path, default=Path("./tiny_lm"),
                        help="model/, train.txt and test.txt go here")
    parser.add_argument("--num_train_lines", type=int, default=2000, help="sentences in train.txt")
    parser.add_argument("--num_test_lines", type=int, default=300, help="sentences in test.txt")
    parser.add_argument("--seed", type=int, default=0, help="seeds the weights and the corpus")
    args = parser.parse_args(argv)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    write_tiny_lm(args.output_dir / "model", args.family, args.seed)
    write_corpus(args.output_dir / "train.txt", args.num_train_lines, args.seed)
    write_corpus(args.output_dir / "test.txt", args.num_test_lines, args.seed + 1)
    print(f"wrote {args.output_dir}/model ({args.family}), {args.output_dir}/train.txt, {args.output_dir}/test.txt")


if __name__ == "__main__":
    exit_on_usage_error(main)
