"""Command-line arguments of the entry scripts, as dataclasses for `HfArgumentParser`.

The flag names follow the original example (and HF's TrainingArguments where they overlap), so
its README commands work unchanged; only flags this project acts on exist, each documented.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from transformers import HfArgumentParser, SchedulerType

from nas_llm.common.errors import UsageArgumentParser, UsageError
from nas_llm.common.flags import (
    DISTILLING_STRATEGIES,
    REORDER_UNITS,
    SAMPLING_DISTRIBUTIONS,
    SAMPLING_STRATEGIES,
    SEARCH_SPACES,
    SUB_NETWORK_EXECUTIONS,
)

DISTILLED = ", ".join(DISTILLING_STRATEGIES)  # the strategies a teacher can teach, for the help texts


def run_log_dir(log_dir: str, stage: str, output_dir: str) -> str:
    """The TensorBoard run of one stage writing to `output_dir`, so training, search and recovery show as runs."""
    return str(Path(log_dir) / f"{stage}-{Path(output_dir).resolve().name}")


def check_choice(flag: str, value: str, choices) -> None:
    if value not in choices:
        raise UsageError(f"unknown --{flag} '{value}'; choose one of: {', '.join(choices)}")


def check_positive(arguments: object, *flags: str) -> None:
    for flag in flags:
        if getattr(arguments, flag) <= 0:
            raise UsageError(f"--{flag} must be positive, got {getattr(arguments, flag)}")


@dataclass
class ModelArguments:
    model_name_or_path: str = field(
        metadata={
            "help": "Pre-trained model: a hub id (bert-base-cased, roberta-base, gpt2, EleutherAI/pythia-70m, "
            "meta-llama/..., Qwen/...), a short alias of the original example (bert-small, electra-base, "
            "pythia-70m, ...), or a local save_pretrained directory."
        }
    )
    cache_dir: str | None = field(default=None, metadata={"help": "Where hub downloads are cached."})


@dataclass
class NASArguments:
    search_space: str = field(
        default="small", metadata={"help": f"Sub-network search space, one of: {', '.join(SEARCH_SPACES)}."}
    )
    log_dir: str = field(
        default="./tensorboard_log_dir",
        metadata={"help": "TensorBoard directory; each run writes its events into its own run folder in it, "
                  "<stage>-<name of --output_dir> (stage: train or search)."},
    )
    sub_network_execution: str = field(
        default="slice",
        metadata={
            "help": "How a sub-network runs: 'slice' computes on the kept rows/columns of the shared weights "
            "and skips dropped layers (cost scales with its size); 'mask' zeroes the removed heads and "
            "neurons in the full network (the reference, as in the original example)."
        },
    )

    def run_log_dir(self, stage: str, output_dir: str) -> str:
        return run_log_dir(self.log_dir, stage, output_dir)

    def __post_init__(self) -> None:
        check_choice("search_space", self.search_space, SEARCH_SPACES)
        check_choice("sub_network_execution", self.sub_network_execution, SUB_NETWORK_EXECUTIONS)


@dataclass
class CostArguments:
    """How the costs of sub-networks are measured (MACs and latency), for searches and standard NAS alike."""

    cost_seq_len: int = field(
        default=128, metadata={"help": "Sequence length of the MACs count and of the latency measurement."}
    )
    latency_batch_size: int = field(default=1, metadata={"help": "Batch size of the latency measurement."})
    latency_repeats: int = field(
        default=20,
        metadata={"help": "Timed forward passes per latency measurement, after 3 untimed warm-up passes; the median "
                  "is the latency, the interquartile range its spread."},
    )

    def __post_init__(self) -> None:
        check_positive(self, "cost_seq_len", "latency_batch_size", "latency_repeats")


@dataclass
class SupernetArguments:
    sampling_strategy: str = field(
        default="one_shot",
        metadata={"help": f"Super-network training strategy, one of: {', '.join(SAMPLING_STRATEGIES)}."},
    )
    num_random_sub_nets: int = field(
        default=2, metadata={"help": "k: random sub-networks trained per step (random, linear_random, sandwich, "
                             "one_shot, kd, ats)."}
    )
    temperature: float = field(
        default=1.0, metadata={"help": f"T: softmax temperature of the distillation loss ({DISTILLED})."}
    )
    reorder_units: str = field(
        default="none",
        metadata={"help": "'importance': before training, score every head unit and FFN neuron (Fisher information "
                  "of its mask on --num_importance_batches training batches) and permute the weights so each layer "
                  "stores its units most important first, so prefix search spaces keep the important ones; the "
                  "full network is unchanged. 'none': keep the pre-trained order."},
    )
    num_importance_batches: int = field(
        default=32, metadata={"help": "Training batches the importance scores of --reorder_units importance use."}
    )
    standardize_labels: bool = field(
        default=True,
        metadata={"help": "Regression: train on labels standardised with the training split's mean and standard "
                  "deviation (stored in config.json; predictions are mapped back to the label scale)."},
    )
    teacher_model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "A fine-tuned full model of the same architecture and task (e.g. the output of "
                  f"--sampling_strategy standard) that {DISTILLED} distil the sub-networks from, instead of "
                  "the full network of the same step. Frozen, in eval mode, not saved with the super-network."},
    )
    init_from_teacher: bool = field(
        default=False,
        metadata={"help": "Start the super-network from the teacher's weights (and label statistics) instead of "
                  "the pre-trained model's (DynaBERT)."},
    )
    distill_hidden_states: bool = field(
        default=False,
        metadata={"help": f"{DISTILLED}: add the MSE between the student's and the teacher's hidden states (the "
                  "final output, and every kept layer's output against the teacher's same layer)."},
    )
    distill_full_network: bool = field(
        default=False,
        metadata={"help": "With --teacher_model_name_or_path: the full network learns from the teacher too "
                  "(distillation loss instead of the task loss)."},
    )
    sampling_distribution: str = field(
        default="uniform",
        metadata={"help": "How random sub-networks are drawn: 'uniform' (every hyperparameter uniformly, the "
                  "original's; most draws are small) or 'params' (parameter counts spread evenly between the "
                  "smallest and the largest sub-network)."},
    )

    def __post_init__(self) -> None:
        check_choice("sampling_strategy", self.sampling_strategy, SAMPLING_STRATEGIES)
        check_choice("reorder_units", self.reorder_units, REORDER_UNITS)
        check_choice("sampling_distribution", self.sampling_distribution, SAMPLING_DISTRIBUTIONS)
        check_positive(self, "num_random_sub_nets", "temperature", "num_importance_batches")
        distils = self.sampling_strategy in DISTILLING_STRATEGIES
        for flag in ("teacher_model_name_or_path", "distill_hidden_states"):
            if getattr(self, flag) and not distils:
                raise UsageError(
                    f"--{flag} needs a sampling strategy that distils ({DISTILLED}), not --sampling_strategy "
                    f"{self.sampling_strategy}"
                )
        for flag in ("init_from_teacher", "distill_full_network"):
            if getattr(self, flag) and self.teacher_model_name_or_path is None:
                raise UsageError(f"--{flag} True needs --teacher_model_name_or_path")
        if self.sampling_strategy in ("standard", "none") and self.sampling_distribution != "uniform":
            raise UsageError(
                f"--sampling_distribution applies to random sub-networks, which --sampling_strategy "
                f"{self.sampling_strategy} never draws; drop it or choose another strategy"
            )


@dataclass
class TrainingArguments:
    """The subset of HF TrainingArguments this training loop implements, under the same names."""

    output_dir: str = field(
        default="./supernet_model_checkpoint",
        metadata={"help": "Where the super-network checkpoint (and per-epoch checkpoints) are written."},
    )
    learning_rate: float = field(default=2e-5, metadata={"help": "Peak AdamW learning rate."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay (not on biases and norms)."})
    num_train_epochs: int = field(default=3, metadata={"help": "Passes over the training split."})
    warmup_ratio: float = field(default=0.0, metadata={"help": "Share of steps with linear learning-rate warm-up."})
    lr_scheduler_type: str = field(
        default="linear", metadata={"help": "transformers learning-rate schedule: linear, cosine, constant, ..."}
    )
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm (0 disables clipping)."})
    per_device_train_batch_size: int = field(default=8, metadata={"help": "Training batch size."})
    per_device_eval_batch_size: int = field(default=8, metadata={"help": "Evaluation batch size."})
    seed: int = field(default=42, metadata={"help": "Seed of weights of the new head, shuffling and sampling."})
    group_by_length: bool = field(
        default=False,
        metadata={"help": "Batch training examples of similar length together, batches in random order (as HF's "
                  "Trainer does): far less padding, faster steps on text of mixed lengths (BENCHMARKS.md §11). "
                  "Off by default, so earlier commands keep their data order."},
    )
    fp16: bool = field(
        default=False,
        metadata={
            "help": "fp16 mixed precision on a CUDA GPU (autocast + gradient scaling). Without a GPU it falls "
            "back to fp32 with a warning (CPU fp16 training is not supported by torch autocast)."
        },
    )
    bf16: bool = field(
        default=False, metadata={"help": "bf16 autocast, on CUDA or CPU; on a CPU without native bf16 (AVX512-BF16 "
                                 "or AMX) it is emulated, several times slower than fp32, and a warning says so."}
    )
    save_strategy: str = field(
        default="epoch",
        metadata={"help": "'epoch': also write a checkpoint after every epoch (checkpoint-<epoch>/); 'no': only "
                  "the final one."},
    )
    logging_steps: int = field(default=10, metadata={"help": "Write training losses to TensorBoard every N steps."})
    use_accelerate: bool = field(
        default=False,
        metadata={"help": "Train data-parallel in the processes `accelerate launch` starts (DDP, or DeepSpeed with "
                  "an accelerate config such as default_config.yaml): model, optimizer, data and schedule are "
                  "prepared by accelerate, each process trains on its shard of the data, the main process logs and "
                  "writes the checkpoints. Without a launcher it runs in one process."},
    )
    resume_from_checkpoint: str | None = field(
        default=None,
        metadata={"help": "Continue an interrupted run from a checkpoint-<epoch> folder of --output_dir, or 'latest' "
                  "for the newest one (a fresh start if there is none): weights, optimizer, schedule, RNG states "
                  "and sampling are restored, so the result equals an uninterrupted run."},
    )

    def __post_init__(self) -> None:
        check_choice("save_strategy", self.save_strategy, ("epoch", "no"))
        check_choice("lr_scheduler_type", self.lr_scheduler_type, [kind.value for kind in SchedulerType])
        check_positive(
            self, "learning_rate", "num_train_epochs", "per_device_train_batch_size", "per_device_eval_batch_size",
            "logging_steps",
        )
        if not 0 <= self.warmup_ratio < 1:
            raise UsageError(f"--warmup_ratio must lie in [0, 1), got {self.warmup_ratio}")
        if self.weight_decay < 0 or self.max_grad_norm < 0:
            raise UsageError("--weight_decay and --max_grad_norm must not be negative")
        if self.fp16 and self.bf16:
            raise UsageError("choose one of --fp16 and --bf16")


class _UsageHfArgumentParser(HfArgumentParser, UsageArgumentParser):
    """HfArgumentParser with the flag checks and one-line errors of UsageArgumentParser."""


def parse_arguments(dataclass_types: tuple, args: list[str] | None = None, defaults: dict | None = None) -> tuple:
    """Parse the command line into the dataclasses; `--help` lists every flag with its help text.

    `defaults` replace the dataclasses' defaults (flags on the command line still win). A bad value or an
    unknown flag is a UsageError (a misspelled flag names the closest valid one).
    """
    parser = _UsageHfArgumentParser(dataclass_types)
    parser.set_defaults(**(defaults or {}))
    if args is None:
        args = sys.argv[1:]
    parser.parse_args(args)  # flags and values, before the dataclasses check what they got
    return parser.parse_args_into_dataclasses(args=args)
