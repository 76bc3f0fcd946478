"""A fine-tuned teacher: a frozen full model that super-network training distils sub-networks from.

The in-place teacher of one_shot, kd and ats (the full network of the same step) starts from
pre-trained weights and knows little about the task early on. DynaBERT and CoFi distil from a
model already fine-tuned on the task instead (e.g. the output of `--sampling_strategy standard`);
DynaBERT also starts the super-network from its weights (`--init_from_teacher`).

The teacher must be a fine-tuned full model of the super-network's architecture and task: same
model class, the same parameter shapes (so its hidden states correspond layer by layer), the task's
number of labels and, for a checkpoint of this project, the same task. It runs without gradients, in
eval mode, and is never saved with the super-network. Regression teachers' outputs are mapped to
the student's standardised label scale (label_scale.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import torch
from torch import nn
from transformers import PretrainedConfig

from nas_llm.common.errors import UsageError
from nas_llm.data.data import TaskInfo
from nas_llm.data.multiple_choice import classifier_auto_class
from nas_llm.model.label_scale import LabelScale, label_scale_of, rescale
from nas_llm.model.models import NAS_SETTINGS_FILE, load_config, load_trained_classifier, resolve_model_name
from nas_llm.training.objective import DistillationTargets


class Teacher:
    """A frozen model that gives distilled passes their targets."""

    def __init__(self, model: nn.Module, student_scale: LabelScale | None):
        self.model = model.eval().requires_grad_(False)
        self.own_scale = label_scale_of(model.config)
        self.student_scale = student_scale

    @torch.no_grad()
    def targets(
        self,
        inputs: dict[str, torch.Tensor],
        with_hidden_states: bool,
        autocast: Callable[[], AbstractContextManager] = nullcontext,
    ) -> DistillationTargets:
        """The teacher's logits (regression: in the student's label scale) and, if asked, its hidden states."""
        with autocast():
            outputs = self.model(**inputs, output_hidden_states=with_hidden_states, use_cache=False)
        logits = outputs.logits.float()
        if logits.shape[-1] == 1:
            logits = rescale(logits, self.own_scale, self.student_scale)
        return DistillationTargets(logits, tuple(outputs.hidden_states) if with_hidden_states else None)


def _parameter_shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {name: tuple(param.shape) for name, param in model.named_parameters()}


def check_same_architecture(
    teacher: nn.Module, student_config: PretrainedConfig, name: str, multiple_choice: bool = False
) -> None:
    """The teacher has the student's model class and every parameter's shape (built on the meta device)."""
    with torch.device("meta"):
        reference = classifier_auto_class(multiple_choice).from_config(student_config)
    if type(teacher) is not type(reference):
        raise UsageError(
            f"the teacher {name} is a {type(teacher).__name__} but the model is a {type(reference).__name__}; "
            "pass a teacher of the same architecture (e.g. the output of --sampling_strategy standard)"
        )
    teacher_shapes, shapes = _parameter_shapes(teacher), _parameter_shapes(reference)
    for param, shape in shapes.items():
        if teacher_shapes.get(param) != shape:
            raise UsageError(
                f"the teacher {name} has another shape than the model: {param} is {teacher_shapes.get(param)} "
                f"there and {shape} here; pass a teacher of the same size"
            )


def check_same_task(teacher: nn.Module, name: str, task_name: str | None, num_labels: int) -> None:
    """Same number of labels; a checkpoint of this project must also have been trained on the same task."""
    if teacher.config.num_labels != num_labels:
        raise UsageError(
            f"the teacher {name} has {teacher.config.num_labels} output(s) but the task has {num_labels}; "
            "pass a teacher fine-tuned on this task"
        )
    settings_file = Path(name) / NAS_SETTINGS_FILE
    if settings_file.is_file():
        trained_task = json.loads(settings_file.read_text()).get("task_name")
        if trained_task != task_name:
            raise UsageError(
                f"the teacher {name} was trained on --task_name {trained_task}, this run is on {task_name}; "
                "pass a teacher fine-tuned on this task"
            )


def load_teacher(
    name_or_path: str,
    model_name_or_path: str,
    task_name: str | None,
    task: TaskInfo | None,
    pad_token_id: int | None,
    cache_dir: str | None = None,
) -> nn.Module:
    """The teacher, checked to be fine-tuned (a trained head) for the model's architecture and the task.

    `task` is None for language modelling, which has no classifier teacher yet.
    """
    if task is None:
        raise UsageError(f"--teacher_model_name_or_path needs a classification or regression task, not {task_name}")
    name = resolve_model_name(name_or_path)
    teacher, missing_keys = load_trained_classifier(name, cache_dir)
    check_same_task(teacher, name, task_name, task.num_labels)
    if missing_keys:
        raise UsageError(
            f"the teacher {name} is not fine-tuned: it has no weights for {sorted(missing_keys)[:3]}; "
            "pass a model fine-tuned on the task (e.g. the output of --sampling_strategy standard)"
        )
    check_same_architecture(
        teacher, load_config(model_name_or_path, cache_dir, num_labels=task.num_labels), name, task.multiple_choice
    )
    if teacher.config.pad_token_id is None:
        teacher.config.pad_token_id = pad_token_id
    return teacher.eval().requires_grad_(False)
