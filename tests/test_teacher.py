"""A fine-tuned teacher: sub-networks learn its logits and hidden states, computed by hand here."""

import json
from contextlib import nullcontext

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from support import tiny_batch, tiny_model
from tiny_assets import tiny_tokenizer, write_tiny_model_dir, write_tiny_rte

import train_supernet
from nas_llm.common.errors import UsageError
from nas_llm.model.label_scale import LabelScale, set_label_scale
from nas_llm.model.mask import masked
from nas_llm.model.search_spaces import make_search_space
from nas_llm.model.slicing import sliced
from nas_llm.model.sub_network import SubNetwork
from nas_llm.training.sampling import PlannedPass, corresponding_hidden_states, make_sampling_strategy, training_step
from nas_llm.training.teacher import Teacher

T = 2.0  # temperature


def soft_cross_entropy(student_logits, teacher_logits):
    """T^2 * cross-entropy of the student's tempered softmax against the teacher's, written out."""
    teacher_probs = torch.softmax(teacher_logits / T, dim=-1)
    return T**2 * -(teacher_probs * torch.log_softmax(student_logits / T, dim=-1)).sum(-1).mean()


def run_as_reference(model, sub_network):
    return nullcontext() if sub_network is None else masked(model, sub_network)


def gradients(model):
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def assert_same_gradients(actual, model):
    expected = gradients(model)
    assert actual.keys() == expected.keys()
    for name, gradient in actual.items():
        assert torch.allclose(gradient, expected[name], atol=1e-5), name


def test_one_shot_distils_sub_networks_from_a_planted_teacher(family_name):
    student, teacher_model = tiny_model(family_name), tiny_model(family_name, seed=1)  # eval: no dropout
    batch = tiny_batch()
    inputs = {key: value for key, value in batch.items() if key != "labels"}
    space = make_search_space("medium", student.config)
    passes = make_sampling_strategy("one_shot", space, 2).plan(0, 10, np.random.default_rng(0))
    losses = training_step(student, batch, passes, sliced, T, teacher=Teacher(teacher_model, None))
    actual = gradients(student)

    student.zero_grad()
    with torch.no_grad():
        teacher_logits = teacher_model(**inputs).logits
        assert (teacher_logits - student(**inputs).logits).abs().max() > 0.1  # a teacher of its own
    expected = {}
    for planned in passes:
        with run_as_reference(student, planned.sub_network):
            logits = student(**inputs).logits
        loss = F.cross_entropy(logits, batch["labels"])
        if planned.distill:
            loss = loss + soft_cross_entropy(logits, teacher_logits)
        loss.backward()
        expected.setdefault(planned.role, []).append(loss.item())
    assert losses == pytest.approx({role: np.mean(values) for role, values in expected.items()}, abs=1e-5)
    assert_same_gradients(actual, student)
    assert all(p.grad is None for p in teacher_model.parameters())


def test_regression_teacher_is_read_in_the_students_label_scale_and_can_teach_the_full_network(family_name):
    student, teacher_model = tiny_model(family_name, num_labels=1), tiny_model(family_name, num_labels=1, seed=1)
    student_scale, teacher_scale = LabelScale(2.75, 1.5), LabelScale(1.0, 2.0)
    set_label_scale(teacher_model.config, teacher_scale)
    batch = tiny_batch(num_labels=1) | {"labels": torch.tensor([0.5, 4.0, 3.0])}
    inputs = {key: value for key, value in batch.items() if key != "labels"}
    space = make_search_space("small", student.config)
    strategy = make_sampling_strategy("one_shot", space, 2, distill_full_network=True)
    passes = strategy.plan(0, 10, np.random.default_rng(0))
    assert all(planned.distill for planned in passes)
    training_step(
        student, batch, passes, sliced, T, label_scale=student_scale, teacher=Teacher(teacher_model, student_scale)
    )
    actual = gradients(student)

    student.zero_grad()
    with torch.no_grad():
        teacher_labels = teacher_model(**inputs).logits.squeeze(-1) * 2.0 + 1.0
    targets, labels = (teacher_labels - 2.75) / 1.5, (batch["labels"] - 2.75) / 1.5
    for planned in passes:
        with run_as_reference(student, planned.sub_network):
            outputs = student(**inputs).logits.squeeze(-1)
        (F.mse_loss(outputs, targets) + F.mse_loss(outputs, labels)).backward()
    assert_same_gradients(actual, student)


def hidden_mse(student, teacher, attention_mask):
    """Mean squared difference over the hidden dimension and the real tokens."""
    per_token = ((student - teacher) ** 2).mean(-1)
    return (per_token * attention_mask).sum() / attention_mask.sum()


@pytest.mark.parametrize("in_place", [False, True], ids=["planted_teacher", "in_place"])
@pytest.mark.parametrize("run_as", [sliced, masked], ids=["slice", "mask"])
def test_hidden_states_are_distilled_layer_by_layer(family_name, in_place, run_as):
    """Layer 1 of 3 dropped: layer 0's output matches the teacher's layer 0, the final output the final one."""
    student, teacher_model = tiny_model(family_name), tiny_model(family_name, seed=1)
    config = student.config
    width = make_search_space("large", config).largest()
    head_mask, ffn_mask = width.head_mask.clone(), width.ffn_mask.clone()
    head_mask[1], ffn_mask[1] = False, False
    head_mask[0, 0], ffn_mask[2, :5] = False, False  # and some width: still the same correspondence
    sub_network = SubNetwork(head_mask, ffn_mask)
    passes = [PlannedPass("largest", None, False), PlannedPass("random", sub_network, True)]
    batch = tiny_batch()
    teacher = None if in_place else Teacher(teacher_model, None)
    losses = training_step(student, batch, passes, run_as, T, teacher=teacher, distill_hidden_states=True)
    actual = gradients(student)

    student.zero_grad()
    inputs = {key: value for key, value in batch.items() if key != "labels"}
    with torch.no_grad():
        reference = student if in_place else teacher_model
        taught = reference(**inputs, output_hidden_states=True)
    full_loss = F.cross_entropy(student(**inputs).logits, batch["labels"])
    full_loss.backward()
    with masked(student, sub_network):
        outputs = student(**inputs, output_hidden_states=True)
    mask = inputs["attention_mask"].float()
    hidden_loss = (
        hidden_mse(outputs.hidden_states[1], taught.hidden_states[1], mask)
        + hidden_mse(outputs.hidden_states[-1], taught.hidden_states[-1], mask)
    ) / 2
    loss = F.cross_entropy(outputs.logits, batch["labels"]) + soft_cross_entropy(outputs.logits, taught.logits)
    (loss + hidden_loss).backward()
    assert hidden_loss > 1e-4
    assert losses["random"] == pytest.approx((loss + hidden_loss).item(), abs=1e-5)
    assert_same_gradients(actual, student)


def test_the_final_output_matches_the_final_output_when_the_last_layers_are_dropped():
    student = [torch.full((1, 1), float(i)) for i in range(4)]
    teacher = [torch.full((1, 1), 10.0 + i) for i in range(4)]
    # three layers, only layer 0 kept; sliced execution returns (embeddings, final)
    pairs = corresponding_hidden_states((student[0], student[3]), tuple(teacher), [0])
    assert [(s.item(), t.item()) for s, t in pairs] == [(3.0, 13.0)]
    # masked execution returns every layer; layers 0 and 1 kept
    pairs = corresponding_hidden_states(tuple(student), tuple(teacher), [0, 1])
    assert [(s.item(), t.item()) for s, t in pairs] == [(1.0, 11.0), (3.0, 13.0)]


@pytest.mark.parametrize("run_as", [sliced, masked], ids=["slice", "mask"])
def test_a_sub_network_without_layers_learns_the_logits_only(run_as):
    """HF records no hidden states when no layer runs: the loss is the logits' distillation loss alone."""
    student, teacher_model = tiny_model("bert"), tiny_model("bert", seed=1)
    no_layers = make_search_space("small", student.config).to_sub_network(
        {"num_layers": 0, "num_heads": 1, "num_units": 1}
    )
    batch = tiny_batch()
    passes = [PlannedPass("largest", None, False), PlannedPass("random", no_layers, True)]
    losses = training_step(
        student, batch, passes, run_as, T, teacher=Teacher(teacher_model, None), distill_hidden_states=True
    )
    inputs = {key: value for key, value in batch.items() if key != "labels"}
    with torch.no_grad():
        teacher_logits = teacher_model(**inputs).logits
        with masked(student, no_layers):
            logits = student(**inputs).logits
    expected = F.cross_entropy(logits, batch["labels"]) + soft_cross_entropy(logits, teacher_logits)
    assert losses["random"] == pytest.approx(expected.item(), abs=1e-5)


def test_the_teacher_is_frozen_in_eval_mode():
    teacher_model = tiny_model("bert", seed=1).train()
    before = {name: p.clone() for name, p in teacher_model.named_parameters()}
    teacher = Teacher(teacher_model, None)
    student = tiny_model("bert").train()
    space = make_search_space("small", student.config)
    passes = make_sampling_strategy("kd", space, 2).plan(10, 10, np.random.default_rng(0))
    training_step(student, tiny_batch(), passes, sliced, T, teacher=teacher)
    assert not teacher_model.training and not any(p.requires_grad for p in teacher_model.parameters())
    assert all(torch.equal(p, before[name]) for name, p in teacher_model.named_parameters())
    inputs = {key: value for key, value in tiny_batch().items() if key != "labels"}
    first, again = (teacher.targets(inputs, False).logits for _ in range(2))
    assert torch.equal(first, again)  # no dropout


def write_teacher(directory, family, seed=1, num_labels=2):
    """A stand-in for a fine-tuned model: same architecture, its own weights, a head."""
    tiny_model(family, num_labels, seed=seed).save_pretrained(directory)
    tiny_tokenizer().save_pretrained(directory)
    return directory


def train_with_teacher(tmp_path, family, *extra, output="supernet"):
    model_dir = tmp_path / "model"
    if not model_dir.exists():
        write_tiny_model_dir(model_dir, family)
        write_teacher(tmp_path / "teacher", family)
        write_tiny_rte(tmp_path / "glue")
    output_dir = tmp_path / output
    train_supernet.main([
        "--model_name_or_path", str(model_dir), "--task_name", "rte", "--data_dir", str(tmp_path / "glue"),
        "--output_dir", str(output_dir), "--log_dir", str(tmp_path / "tb"), "--num_train_epochs", "1",
        "--per_device_train_batch_size", "8", "--seed", "0", "--save_strategy", "epoch",
        "--teacher_model_name_or_path", str(tmp_path / "teacher"), *extra,
    ])
    return output_dir


@pytest.mark.parametrize("strategy", ["one_shot", "kd", "ats"])
def test_training_with_a_teacher_through_the_script(tmp_path, family_name, strategy):
    output_dir = train_with_teacher(
        tmp_path, family_name, "--sampling_strategy", strategy, "--distill_hidden_states", "True",
        "--distill_full_network", "True", "--learning_rate", "1e-3",
    )
    settings = json.loads((output_dir / "nas_settings.json").read_text())
    assert settings["teacher_model_name_or_path"] == str(tmp_path / "teacher")
    assert settings["distill_hidden_states"] is True and settings["distill_full_network"] is True
    assert settings["init_from_teacher"] is False
    saved = load_file(output_dir / "model.safetensors")
    assert saved.keys() == tiny_model(family_name).state_dict().keys()  # the teacher is not saved with it


def test_init_from_teacher_starts_from_the_teachers_weights(tmp_path):
    output_dir = train_with_teacher(
        tmp_path, "bert", "--sampling_strategy", "one_shot", "--init_from_teacher", "True",
        "--learning_rate", "1e-30",  # steps too small to move any weight
    )
    saved = load_file(output_dir / "model.safetensors")
    teacher = load_file(tmp_path / "teacher" / "model.safetensors")
    assert saved.keys() == teacher.keys()
    assert all(torch.allclose(saved[name], teacher[name], rtol=0, atol=1e-12) for name in saved)


@pytest.mark.parametrize("flag, value", [("distill_hidden_states", "True"), ("init_from_teacher", "True")])
def test_resuming_with_other_teacher_settings_is_refused(tmp_path, flag, value):
    train_with_teacher(tmp_path, "bert", "--sampling_strategy", "one_shot", "--learning_rate", "1e-3")
    with pytest.raises(UsageError, match=f"--{flag} False but this run asks for --{flag} {value}"):
        train_with_teacher(
            tmp_path, "bert", "--sampling_strategy", "one_shot", "--learning_rate", "1e-3",
            "--resume_from_checkpoint", "latest", f"--{flag}", value,
        )
