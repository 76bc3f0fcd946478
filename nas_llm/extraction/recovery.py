"""Recovery: a short fine-tuning of the extracted sub-network, distilled from a teacher, before it ships.

Every strong structured-pruning method ends with such a phase on the chosen architecture (DynaBERT's
final fine-tuning, CoFi's fine-tuning epochs): the shared weights were trained to serve many
sub-networks at once, and a few steps on the one that is kept recover part of what pruning cost.
The extracted model trains as an ordinary model (one pass per step, `training_loop.train_epoch`) with
the distillation loss of sampling.py from a frozen teacher (teacher.py): the super-network's full
network by default, or a fine-tuned model given by --teacher_model_name_or_path. Regression labels
are standardised with the statistics the checkpoint carries (label_scale.py). The extracted model's
shapes never change, so the recovered checkpoint keeps exactly the extracted parameter count.

Not resumable, on purpose: recovery is short (an epoch or two of the training split on a model
smaller than the super-network), and select_and_extract.py writes nothing before it has finished,
so an interrupted run leaves no half-written checkpoint and is simply run again.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace

import datasets
from torch import nn
from transformers import PreTrainedTokenizerBase, set_seed

from nas_llm.common.arguments import check_positive, run_log_dir
from nas_llm.common.errors import UsageError
from nas_llm.common.io_utils import tensorboard_writer
from nas_llm.data.data import TaskInfo, make_dataloader
from nas_llm.extraction.lstsq import calibration_batches, tuned_extraction
from nas_llm.model.label_scale import label_scale_of
from nas_llm.model.slicing import runner_for
from nas_llm.model.sub_network import SubNetwork
from nas_llm.training.distributed import SingleProcess
from nas_llm.training.evaluation import evaluate
from nas_llm.training.sampling import PlannedPass
from nas_llm.training.teacher import Teacher, load_teacher
from nas_llm.training.training_loop import make_lr_schedule, make_optimizer, train_epoch

logger = logging.getLogger(__name__)

RECOVERY_STAGE = "recover"  # TensorBoard run: recover-<name of --output_dir>


@dataclass
class RecoveryArguments:
    recover_epochs: int = field(
        default=0,
        metadata={"help": "Recovery: fine-tune the extracted model for this many epochs on the training split, "
                  "distilled from the teacher, and evaluate it again (0: ship the extracted weights as they are)."},
    )
    recover_learning_rate: float = field(default=5e-5, metadata={"help": "Recovery: peak AdamW learning rate "
                                         "(linear decay to 0, warm-up over --recover_warmup_ratio of the steps)."})
    recover_warmup_ratio: float = field(default=0.1, metadata={"help": "Recovery: share of warm-up steps."})
    recover_batch_size: int = field(default=32, metadata={"help": "Recovery: training batch size."})
    recover_temperature: float = field(
        default=1.0, metadata={"help": "Recovery: softmax temperature T of the distillation loss."}
    )
    recover_seed: int = field(default=42, metadata={"help": "Recovery: seed of the data order and dropout."})
    recover_group_by_length: bool = field(
        default=False,
        metadata={"help": "Recovery: batch training examples of similar length together (see --group_by_length)."},
    )
    recover_keep_best: bool = field(
        default=True,
        metadata={"help": "Recovery: score the validation split after every epoch and ship the recovery epoch with "
                  "the lowest validation error, as Hugging Face's load_best_model_at_end (the extracted weights are "
                  "no candidate: a search's pick was chosen on this split, so its error there is biased low); "
                  "False: ship the last epoch."},
    )
    teacher_model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Recovery: the teacher, a fine-tuned full model of the super-network's architecture and "
                  "task (e.g. the output of --sampling_strategy standard); default: the super-network's full "
                  "network (for a point of run_rfp.py: the fine-tuned model it pruned)."},
    )
    recover_lstsq: bool = field(
        default=False,
        metadata={"help": "Recovery without training (Kwon et al. 2022): least-squares rescaling of the kept heads "
                  "and neurons, block by block, so the residual stream after each block matches the "
                  "super-network's full network's (lstsq.py); before --recover_epochs when both are given."},
    )
    recover_calibration_samples: int = field(
        default=2048, metadata={"help": "Recovery: training examples of the least-squares tuning (--recover_lstsq)."}
    )
    recover_lstsq_if_better: bool = field(
        default=False,
        metadata={"help": "Recovery: keep the least-squares scales of --recover_lstsq only if they do not raise the "
                  "validation error; otherwise go on from the extracted model as it was (extraction.json's "
                  "lstsq_recovery says whether they were kept). A sub-network trained inside a super-network "
                  "can lose by being rescaled towards the full network; a model pruned without training seldom does."},
    )
    log_dir: str = field(
        default="./tensorboard_log_dir",
        metadata={"help": "TensorBoard directory; recovery writes its losses into the run recover-<name of "
                  "--output_dir> in it."},
    )

    def __post_init__(self) -> None:
        if self.recover_epochs < 0:
            raise UsageError(f"--recover_epochs must be 0 (no recovery) or positive, got {self.recover_epochs}")
        check_positive(self, "recover_learning_rate", "recover_batch_size", "recover_temperature",
                       "recover_calibration_samples")
        if not 0 <= self.recover_warmup_ratio < 1:
            raise UsageError(f"--recover_warmup_ratio must lie in [0, 1), got {self.recover_warmup_ratio}")
        if self.teacher_model_name_or_path is not None and self.recover_epochs == 0:
            raise UsageError("--teacher_model_name_or_path is the teacher of recovery: add --recover_epochs N")

    @property
    def recovering(self) -> bool:
        return self.recover_epochs > 0

    @property
    def needs_training_split(self) -> bool:
        return self.recovering or self.recover_lstsq

    def settings(self) -> dict:
        """What extraction.json records of the recovery (the teacher as resolved by the caller)."""
        return {
            "epochs": self.recover_epochs,
            "learning_rate": self.recover_learning_rate,
            "warmup_ratio": self.recover_warmup_ratio,
            "batch_size": self.recover_batch_size,
            "temperature": self.recover_temperature,
            "seed": self.recover_seed,
            "group_by_length": self.recover_group_by_length,
            "keep_best": self.recover_keep_best,
            "loss": "distillation (logits)",
        }


def fine_tune(
    model: nn.Module,
    teacher: Teacher,
    train_set: datasets.Dataset,
    tokenizer: PreTrainedTokenizerBase,
    args: RecoveryArguments,
    output_dir: str,
    validate: Callable[[], dict[str, float]],
) -> dict:
    """Train `model` in place for --recover_epochs epochs, every step distilled from `teacher`, scoring
    `validate()` after each; with --recover_keep_best the model ends with the weights of the epoch that scored the
    lowest validation error, as Hugging Face's load_best_model_at_end. The weights it came with are no candidate:
    a search picked them as the best of many on this very split, so their error there is biased low, and
    comparing it with the recovered epochs' would keep unrecovered picks that are only lucky on validation.

    Returns the steps taken, the mean loss of the first and last epoch (logged to TensorBoard too), the
    validation metrics after every epoch and the epoch kept.
    """
    set_seed(args.recover_seed)
    runtime = SingleProcess(fp16=False, bf16=False)
    loader = make_dataloader(train_set, tokenizer, args.recover_batch_size, True, args.recover_seed,
                             args.recover_group_by_length)
    optimizer = make_optimizer(model, args.recover_learning_rate, weight_decay=0.0)
    total_steps = args.recover_epochs * len(loader)
    schedule = SimpleNamespace(lr_scheduler_type="linear", warmup_ratio=args.recover_warmup_ratio)
    scheduler = make_lr_schedule(optimizer, schedule, total_steps)
    writer = tensorboard_writer(run_log_dir(args.log_dir, RECOVERY_STAGE, output_dir))
    epoch_losses: list[list[float]] = []

    def log_loss(step: int, losses: dict[str, float]) -> None:
        epoch_losses[-1].append(losses["recovery"])
        writer.add_scalar("recover/loss", losses["recovery"], step)
        writer.add_scalar("recover/learning_rate", scheduler.get_last_lr()[0], step)

    model.to(runtime.device)
    # Scored here though the caller has it: the pass draws its loader's seed from the global RNG, so leaving it out
    # would change every recovery's dropout and data order, and the recovered weights of every recorded run with them.
    start_error = validate()["error"]
    best: Checkpoint | None = None
    validation_per_epoch = []
    step = 0
    for epoch in range(args.recover_epochs):
        epoch_losses.append([])
        model.train()
        step = train_epoch(
            model, loader, runtime, optimizer, scheduler,
            plan=lambda _: [PlannedPass("recovery", None, distill=True)], run_as=runner_for("slice"),
            temperature=args.recover_temperature, max_grad_norm=1.0, global_step=step,
            description=f"recovery epoch {epoch + 1}/{args.recover_epochs}", on_step=log_loss,
            label_scale=label_scale_of(model.config), teacher=teacher,
        )
        validation_per_epoch.append(validate())
        writer.add_scalar("recover/validation_error", validation_per_epoch[-1]["error"], epoch + 1)
        error = validation_per_epoch[-1]["error"]
        if args.recover_keep_best and (best is None or error < best.error):
            best = Checkpoint(epoch=epoch + 1, error=error, weights=copy.deepcopy(model.state_dict()))
    writer.close()
    kept_epoch = best.epoch if best is not None else args.recover_epochs
    if kept_epoch != args.recover_epochs:
        model.load_state_dict(best.weights)
    logger.info("Recovery: validation error %.4f before, per epoch %s; shipping epoch %d", start_error,
                [round(metrics["error"], 4) for metrics in validation_per_epoch], kept_epoch)
    model.eval()
    mean = [sum(losses) / len(losses) for losses in epoch_losses]
    return {"num_steps": step, "mean_loss_first_epoch": mean[0], "mean_loss_last_epoch": mean[-1],
            "validation_per_epoch": validation_per_epoch, "kept_epoch": kept_epoch}


@dataclass
class Checkpoint:
    """The weights of the best recovery epoch so far, in memory (the extracted model is small)."""

    epoch: int
    error: float
    weights: dict


def choose_teacher(
    args: RecoveryArguments,
    supernet: nn.Module,
    checkpoint: str,
    task_name: str | None,
    task: TaskInfo,
    pad_token_id: int | None,
) -> tuple[nn.Module, str]:
    """(teacher model, where it comes from): --teacher_model_name_or_path, checked like training's, else the
    super-network's full network, else (a point with weights of its own: no super-network) the full model at
    `checkpoint`."""
    if args.teacher_model_name_or_path is None and supernet is not None:
        return supernet, checkpoint
    source = args.teacher_model_name_or_path or checkpoint
    return load_teacher(source, checkpoint, task_name, task, pad_token_id), source


def recover(
    model: nn.Module,
    teacher: tuple[nn.Module, str],
    tokenized: datasets.DatasetDict,
    tokenizer: PreTrainedTokenizerBase,
    metrics_key: str,
    eval_batch_size: int,
    args: RecoveryArguments,
    output_dir: str,
) -> dict:
    """Score `model` on validation and test, fine-tune it (in place) from `teacher` (choose_teacher), score it
    again; returns the report of extraction.json."""
    teacher_model, teacher_source = teacher
    start = time.time()
    device = next(model.parameters()).device
    loaders = {
        split: make_dataloader(tokenized[split], tokenizer, eval_batch_size, False, 0)
        for split in ("validation", "test")
    }

    def scores() -> dict[str, dict[str, float]]:
        return {split: evaluate(model, loader, metrics_key, device) for split, loader in loaders.items()}

    before = scores()
    frozen_teacher = Teacher(teacher_model.to(device), label_scale_of(model.config))
    logger.info("Recovery: %d epochs on %d training examples", args.recover_epochs, len(tokenized["train"]))

    def validate() -> dict[str, float]:
        model.eval()
        return evaluate(model, loaders["validation"], metrics_key, device)

    training = fine_tune(model, frozen_teacher, tokenized["train"], tokenizer, args, output_dir, validate)
    after = scores()
    logger.info("Recovery: validation %s -> %s, test %s -> %s", before["validation"], after["validation"],
                before["test"], after["test"])
    return {
        "settings": args.settings() | {"teacher": str(teacher_source)},
        "validation_before": before["validation"],
        "test_before": before["test"],
        "validation_after": after["validation"],
        "test_after": after["test"],
        "num_train_examples": len(tokenized["train"]),
        **training,
        "runtime_s": time.time() - start,
    }


def least_squares_recovery(
    supernet: nn.Module,
    sub_network: SubNetwork,
    extracted: nn.Module,
    tokenized: datasets.DatasetDict,
    tokenizer: PreTrainedTokenizerBase,
    metrics_key: str,
    eval_batch_size: int,
    args: RecoveryArguments,
) -> tuple[nn.Module, dict]:
    """(the extracted model with least-squares tuned scales, the report of extraction.json); no gradient steps."""
    start = time.time()
    device = next(extracted.parameters()).device
    loaders = {
        split: make_dataloader(tokenized[split], tokenizer, eval_batch_size, False, 0)
        for split in ("validation", "test")
    }
    batches = calibration_batches(
        tokenized["train"], tokenizer, args.recover_calibration_samples, args.recover_batch_size, args.recover_seed
    )
    before = {split: evaluate(extracted, loader, metrics_key, device) for split, loader in loaders.items()}
    tuned, scales = tuned_extraction(supernet.to(device), sub_network, batches)
    tuned.to(device)
    after = {split: evaluate(tuned, loader, metrics_key, device) for split, loader in loaders.items()}
    kept = not args.recover_lstsq_if_better or after["validation"]["error"] <= before["validation"]["error"]
    logger.info("Least-squares recovery: validation %s -> %s%s", before["validation"], after["validation"],
                "" if kept else "; worse, so the extracted model goes on as it was (--recover_lstsq_if_better)")
    return tuned if kept else extracted, {
        "method": "layer-wise least-squares mask tuning (Kwon et al. 2022) against the super-network's full network",
        "num_calibration_samples": sum(len(batch["labels"]) for batch in batches),
        "validation_before": before["validation"],
        "test_before": before["test"],
        "validation_after": after["validation"],
        "test_after": after["test"],
        "scales": scales,
        "kept": kept,
        "runtime_s": time.time() - start,
    }


def recover_as_asked(
    args: RecoveryArguments, supernet: nn.Module | None, sub_network: SubNetwork, extracted: nn.Module,
    checkpoint: str, task_name: str | None, task: TaskInfo | None, tokenized: datasets.DatasetDict,
    tokenizer: PreTrainedTokenizerBase, metrics_key: str, eval_batch_size: int, output_dir: str,
) -> tuple[nn.Module, dict | None, dict | None]:
    """--recover_lstsq, then --recover_epochs, on the extracted model; the model and each step's record (None if
    not asked). The super-network teaches (for a point with weights of its own, `supernet` None, the full model at
    `checkpoint`), unless --teacher_model_name_or_path names another."""
    lstsq_recovery = recovery = None
    if args.recover_lstsq:
        extracted, lstsq_recovery = least_squares_recovery(
            supernet, sub_network, extracted, tokenized, tokenizer, metrics_key, eval_batch_size, args,
        )
    if args.recovering:
        teacher = choose_teacher(args, supernet, checkpoint, task_name, task, tokenizer.pad_token_id)
        recovery = recover(extracted, teacher, tokenized, tokenizer, metrics_key, eval_batch_size, args, output_dir)
    return extracted, lstsq_recovery, recovery


def check_recovery_possible(
    args: RecoveryArguments, language_modeling: bool, from_trial: bool, trial_has_teacher: bool
) -> None:
    """Refuse recovery where it does not apply, before anything is loaded. A point with weights of its own (RFP,
    standard NAS) can be recovered by epochs from a teacher: the model RFP pruned (`trial_has_teacher`) or
    --teacher_model_name_or_path; least squares needs a super-network."""
    if not args.needs_training_split:
        return
    flag = "--recover_epochs" if args.recovering else "--recover_lstsq"
    if language_modeling:
        raise UsageError(
            f"{flag} works for classification and regression tasks; recover a pruned LM with "
            "train_supernet.py --sampling_strategy standard on the extracted checkpoint (README, 'Pruning a causal "
            "language model')"
        )
    if from_trial and args.recover_lstsq:
        raise UsageError(
            "--recover_lstsq applies to sub-networks of a super-network; a point of run_standard_nas.py or "
            "run_rfp.py is already a model of its own (run_rfp.py tunes its masks by least squares itself)"
        )
    if from_trial and not (trial_has_teacher or args.teacher_model_name_or_path):
        raise UsageError(
            "--recover_epochs applies to sub-networks of a super-network; a point of run_standard_nas.py is a model "
            "of its own: give --teacher_model_name_or_path (a fine-tuned full model) to recover it from that"
        )
