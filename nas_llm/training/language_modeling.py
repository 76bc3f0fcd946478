"""Causal language modelling (`--task_name lm`): the training losses and the perplexity the search minimises.

- Loss of the full network: next-token cross-entropy, mean over every predicted token of a block.
- Distillation of sub-networks (one_shot, kd, ats): token-level T^2 * KL(teacher || student) of the
  next-token distributions at temperature T, plus the next-token cross-entropy (the classification
  recipe of sampling.py, per token).
- Score: validation loss (mean over all predicted tokens), perplexity = exp(loss), and the search's
  error = loss / ln(vocabulary size), clipped to 1: the loss as a share of that of a model that guesses
  uniformly, so error 1 is "knows nothing" and the hypervolume (reference point 1) stays meaningful and
  linear in log-perplexity.

No pass builds a KV cache (`use_cache=False`): training and scoring see each block once, and a cache
sized for the full network breaks under sub-networks that drop layers.
"""

from __future__ import annotations

import math
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from nas_llm.model.sub_network import SubNetwork
from nas_llm.training.objective import SubNetworkRunner, TrainingObjective


def lm_logits(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Next-token logits [batch, tokens, vocabulary] of a batch of blocks, without a KV cache."""
    return model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask"), use_cache=False).logits


def _next_token_pairs(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(predictions for positions 0..T-2, the tokens 1..T-1 they predict), flattened over the batch."""
    return logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1)


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy (what HF's `model(labels=...)` computes)."""
    predictions, targets = _next_token_pairs(logits, labels)
    return F.cross_entropy(predictions, targets)


def token_distillation_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor, temperature: float
) -> torch.Tensor:
    """T^2 * KL(teacher || student) per predicted token, averaged, plus the next-token cross-entropy."""
    student, _ = _next_token_pairs(student_logits, labels)
    teacher, _ = _next_token_pairs(teacher_logits, labels)
    kl = F.kl_div(
        F.log_softmax(student / temperature, dim=-1), F.log_softmax(teacher / temperature, dim=-1),
        reduction="batchmean", log_target=True,
    )
    return temperature**2 * kl + causal_lm_loss(student_logits, labels)


LANGUAGE_MODELING = TrainingObjective(lm_logits, causal_lm_loss, token_distillation_loss)


def lm_error(loss: float, vocab_size: int) -> float:
    """The search's error: the loss relative to uniform guessing (ln V), at most 1."""
    return min(1.0, loss / math.log(vocab_size))


@torch.no_grad()
def evaluate_language_model(
    model: nn.Module,
    dataloader: DataLoader,
    device: torch.device,
    sub_network: SubNetwork | None = None,
    run_as: SubNetworkRunner | None = None,
) -> dict[str, float]:
    """Mean next-token loss over every predicted token of the blocks, perplexity, and the search's error."""
    was_training = model.training
    model.eval()
    total_loss, num_tokens = 0.0, 0
    context = nullcontext() if sub_network is None else run_as(model, sub_network)
    with context:
        for batch in dataloader:
            batch = {key: value.to(device) for key, value in batch.items()}
            predictions, targets = _next_token_pairs(lm_logits(model, batch).float(), batch["labels"])
            total_loss += F.cross_entropy(predictions, targets, reduction="sum").item()
            num_tokens += targets.numel()
    model.train(was_training)
    loss = total_loss / num_tokens
    return {"loss": loss, "perplexity": math.exp(loss), "error": lm_error(loss, model.config.vocab_size)}
