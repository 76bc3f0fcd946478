"""Sampling strategies run the passes and losses they should, and update the shared weights."""

import copy
from contextlib import nullcontext

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from support import tiny_batch, tiny_model

from nas_llm.common.errors import UsageError
from nas_llm.model.label_scale import LabelScale, set_label_scale
from nas_llm.model.mask import masked
from nas_llm.model.search_spaces import make_search_space
from nas_llm.model.slicing import sliced
from nas_llm.training.objective import distillation_loss
from nas_llm.training.sampling import SAMPLING_STRATEGIES, make_sampling_strategy, training_step
from nas_llm.training.teacher import Teacher

K = 2  # random sub-networks per step


def plan(name, step=5, total_steps=10, seed=0, family="bert"):
    model = tiny_model(family)
    strategy = make_sampling_strategy(name, make_search_space("small", model.config), K)
    return strategy.plan(step, total_steps, np.random.default_rng(seed))


def roles(passes):
    return [(p.role, p.distill) for p in passes]


def test_standard_trains_the_full_network_only():
    assert roles(plan("standard")) == [("largest", False)]


def test_random_trains_k_random_sub_networks():
    assert roles(plan("random")) == [("random", False)] * K


def test_sandwich_trains_largest_smallest_and_k_random_with_cross_entropy():
    assert roles(plan("sandwich")) == [("largest", False), ("smallest", False)] + [("random", False)] * K


def test_one_shot_distills_all_but_the_full_network():
    assert roles(plan("one_shot")) == [("largest", False), ("smallest", True)] + [("random", True)] * K


@pytest.mark.parametrize("name, distill", [("linear_random", False), ("kd", True)])
def test_linear_schedule_moves_from_full_network_to_random_sub_networks(name, distill):
    assert all(roles(plan(name, step=0, seed=s)) == [("largest", False)] for s in range(10))
    assert all(roles(plan(name, step=10, seed=s)) == [("random", distill)] * K for s in range(10))
    halfway = [plan(name, step=5, seed=s)[0].role for s in range(200)]
    assert 0.35 < halfway.count("random") / len(halfway) < 0.65


def test_ats_alternates_distilled_random_sub_networks_and_the_full_network():
    model = tiny_model("bert")
    space = make_search_space("small", model.config)
    sub_networks, full_network = [("random", True)] * K, [("largest", False)]
    strategy, rng = make_sampling_strategy("ats", space, K), np.random.default_rng(0)
    assert [roles(strategy.plan(step, 6, rng)) for step in range(6)] == [
        sub_networks, full_network, sub_networks, full_network, sub_networks, full_network,
    ]
    assert roles(plan("ats", step=7, total_steps=1000)) == full_network  # the step alone decides, e.g. after resume
    assert roles(plan("ats", step=8, total_steps=9)) == sub_networks
    taught = make_sampling_strategy("ats", space, K, distill_full_network=True)
    assert roles(taught.plan(1, 6, rng)) == [("largest", True)]
    draws = [p.sub_network for step in (0, 2) for p in strategy.plan(step, 6, rng)]
    assert len(set(map(str, draws))) > 1, "each sub-network step draws new sub-networks"


def test_random_sub_networks_are_seeded_and_vary():
    first, again, other = plan("random", seed=1), plan("random", seed=1), plan("random", seed=2)
    assert [p.sub_network for p in first] == [p.sub_network for p in again]
    assert [p.sub_network for p in first] != [p.sub_network for p in other]


def test_distillation_loss_matches_the_formula():
    torch.manual_seed(0)
    student, teacher, labels, temperature = torch.randn(4, 3), torch.randn(4, 3), torch.tensor([0, 2, 1, 1]), 2.0
    soft = -(F.softmax(teacher / temperature, -1) * F.log_softmax(student / temperature, -1)).sum(-1).mean()
    expected = temperature**2 * soft + F.cross_entropy(student, labels)
    assert torch.allclose(distillation_loss(student, teacher, labels, temperature), expected)


def test_distillation_loss_for_regression_is_mse_to_teacher_and_labels():
    student, teacher, labels = torch.tensor([[1.0], [2.0]]), torch.tensor([[0.0], [2.0]]), torch.tensor([1.0, 4.0])
    assert torch.isclose(distillation_loss(student, teacher, labels, 3.0), torch.tensor(0.5 + 2.0))


def hand_loss(student, teacher, labels, temperature):
    """T^2 * CE(student / T, softmax(teacher / T)) + CE(student, labels); both MSEs for a single output."""
    if student.shape[-1] == 1:
        hard = ((student[:, 0] - labels) ** 2).mean()
        return hard if teacher is None else ((student - teacher) ** 2).mean() + hard
    hard = -F.log_softmax(student, -1).gather(1, labels[:, None]).mean()
    if teacher is None:
        return hard
    soft = -(F.softmax(teacher / temperature, -1) * F.log_softmax(student / temperature, -1)).sum(-1).mean()
    return temperature**2 * soft + hard


def assert_same_losses_and_gradients(losses, hand_losses, model, reference, atol):
    """training_step's mean loss per role and gradients equal those computed by hand on `reference`."""
    assert losses == pytest.approx({role: np.mean(values) for role, values in hand_losses.items()}, abs=atol)
    for name, param in reference.named_parameters():
        grad = model.get_parameter(name).grad
        assert (param.grad is None) == (grad is None), name
        if grad is not None:
            assert torch.allclose(grad, param.grad, atol=atol), name


@pytest.mark.parametrize("num_labels", [3, 1])
@pytest.mark.parametrize("name", ["one_shot", "kd"])
def test_distillation_loss_and_gradient_use_the_full_network_as_teacher(name, num_labels):
    """A hand computation of one step: the teacher is the full network, run without any hook on a copy.

    kd at its last step trains random sub-networks only, so its teacher needs an extra forward.
    """
    model = tiny_model("bert", num_labels=num_labels)  # eval mode: no dropout, the same logits by hand
    reference = copy.deepcopy(model)
    passes = make_sampling_strategy(name, make_search_space("small", model.config), K).plan(
        10, 10, np.random.default_rng(3)
    )
    assert any(p.distill for p in passes)
    batch = tiny_batch(num_labels=num_labels)
    labels = batch.pop("labels")
    temperature = 2.0
    losses = training_step(model, batch | {"labels": labels}, passes, masked, temperature)

    teacher = reference(**batch).logits.detach()
    hand_losses = {}
    for planned in passes:
        if planned.sub_network is None:
            loss = hand_loss(reference(**batch).logits, None, labels, temperature)
        else:
            with masked(reference, planned.sub_network):
                student = reference(**batch).logits
            assert (student - teacher).abs().max() > 1e-2, "teacher and student must differ for the check to bite"
            loss = hand_loss(student, teacher if planned.distill else None, labels, temperature)
        loss.backward()
        hand_losses.setdefault(planned.role, []).append(loss.item())

    assert_same_losses_and_gradients(losses, hand_losses, model, reference, atol=1e-6)


@pytest.mark.parametrize("run_as", [sliced, masked], ids=["slice", "mask"])
@pytest.mark.parametrize("num_labels", [3, 1])
@pytest.mark.parametrize("planted_teacher", [False, True], ids=["in_place", "planted_teacher"])
def test_ats_steps_equal_a_hand_computation(run_as, num_labels, planted_teacher):
    """Step 0: k random sub-networks distilled from the teacher (the full network of the step, or a fine-tuned
    model); step 1: the full network alone, i.e. plain fine-tuning on the batch, or distilled from the fine-tuned
    teacher with distill_full_network. Regression trains on standardised labels. Computed on a copy run without
    any hook for the full network and masked for the sub-networks."""
    model = tiny_model("bert", num_labels=num_labels)  # eval mode: no dropout
    reference = copy.deepcopy(model)
    scale = LabelScale(0.5, 2.0) if num_labels == 1 else None
    teacher_model = tiny_model("bert", num_labels=num_labels, seed=1) if planted_teacher else None
    if teacher_model is not None and scale is not None:
        set_label_scale(teacher_model.config, scale)  # its outputs are already in the student's scale
    teacher = None if teacher_model is None else Teacher(teacher_model, scale)
    space = make_search_space("small", model.config)
    strategy = make_sampling_strategy("ats", space, K, distill_full_network=planted_teacher)
    rng = np.random.default_rng(3)
    batch = tiny_batch(num_labels=num_labels)
    inputs = {key: value for key, value in batch.items() if key != "labels"}
    labels = batch["labels"] if scale is None else (batch["labels"] - 0.5) / 2.0
    temperature = 2.0

    for step, expected_roles in ((0, ["random"] * K), (1, ["largest"])):
        passes = strategy.plan(step, 2, rng)
        assert [p.role for p in passes] == expected_roles
        model.zero_grad(set_to_none=True)
        reference.zero_grad(set_to_none=True)
        losses = training_step(model, batch, passes, run_as, temperature, label_scale=scale, teacher=teacher)
        with torch.no_grad():
            target = (teacher_model or reference)(**inputs).logits
        hand_losses = {}
        for planned in passes:
            with nullcontext() if planned.sub_network is None else masked(reference, planned.sub_network):
                logits = reference(**inputs).logits
            loss = hand_loss(logits, target if planned.distill else None, labels, temperature)
            loss.backward()
            hand_losses.setdefault(planned.role, []).append(loss.item())
        assert_same_losses_and_gradients(losses, hand_losses, model, reference, atol=1e-5)


def test_no_training_plans_no_pass():
    assert plan("none") == []


@pytest.mark.parametrize("name", [name for name in SAMPLING_STRATEGIES if name != "none"])
def test_each_strategy_runs_its_passes_and_updates_weights(family_name, name):
    model = tiny_model(family_name).train()
    strategy = make_sampling_strategy(name, make_search_space("small", model.config), K)
    passes = strategy.plan(10, 10, np.random.default_rng(0))
    forward_calls = []
    handle = model.register_forward_hook(lambda *args: forward_calls.append(1))
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    losses = training_step(model, tiny_batch(), passes, masked, temperature=2.0)
    optimizer.step()
    handle.remove()

    teacher_pass = any(p.distill for p in passes) and passes[0].sub_network is not None
    assert len(forward_calls) == len(passes) + teacher_pass
    assert set(losses) == {p.role for p in passes}
    assert all(np.isfinite(value) for value in losses.values())
    changed = [name for name, p in model.named_parameters() if not torch.equal(p, before[name])]
    assert changed, "no weight was updated"


def test_gradients_of_all_passes_accumulate_into_one_step():
    model = tiny_model("bert").train()
    torch.manual_seed(0)
    strategy = make_sampling_strategy("sandwich", make_search_space("small", model.config), K)
    passes = strategy.plan(0, 10, np.random.default_rng(0))
    model.eval()  # no dropout: the two computations must agree exactly
    training_step(model, tiny_batch(), passes, masked, temperature=1.0)
    accumulated = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    for single in passes:
        training_step(model, tiny_batch(), [single], masked, temperature=1.0)
    for name, grad in accumulated.items():
        assert torch.allclose(grad, model.get_parameter(name).grad, atol=1e-6)


def test_unknown_strategy_and_bad_k_are_usage_errors():
    space = make_search_space("small", tiny_model("bert").config)
    with pytest.raises(UsageError, match="one_shot"):
        make_sampling_strategy("oneshot", space, 2)
    with pytest.raises(UsageError, match="num_random_sub_nets"):
        make_sampling_strategy("sandwich", space, 0)
