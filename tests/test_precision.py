"""--bf16 on a CPU without native bf16 warns (torch emulates it, several times slower than fp32) and still runs in
bf16; with native support, or without --bf16, nothing is said. The search's bf16 scoring computes what plain
autocast computes."""

from __future__ import annotations

import logging
from contextlib import nullcontext

import numpy as np
import pytest
import torch
from support import make_space, tiny_batch, tiny_config, tiny_model

from nas_llm.common.precision import autocast_for, bf16_scoring
from nas_llm.model.slicing import sliced
from nas_llm.training.distributed import accelerate_mixed_precision

EMULATED = "--bf16 True on a CPU without native bf16"


@pytest.fixture(params=[False, True], ids=["emulated", "native"])
def native_bf16(request, monkeypatch) -> bool:
    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        monkeypatch.setattr(torch.cpu, name, lambda native=request.param: native)
    return request.param


def test_bf16_on_a_cpu_warns_only_where_it_is_emulated(native_bf16, caplog):
    with caplog.at_level(logging.WARNING):
        autocast = autocast_for(torch.device("cpu"), fp16=False, bf16=True)
        assert accelerate_mixed_precision(fp16=False, bf16=True) == "bf16"
    warned = [record for record in caplog.records if EMULATED in record.getMessage()]
    assert len(warned) == (0 if native_bf16 else 2)
    with autocast():  # still bf16: the warning changes nothing but what the user knows
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16


def test_fp32_says_nothing_about_bf16(native_bf16, caplog):
    with caplog.at_level(logging.WARNING):
        autocast_for(torch.device("cpu"), fp16=False, bf16=False)
        accelerate_mixed_precision(fp16=False, bf16=False)
    assert not [record for record in caplog.records if EMULATED in record.getMessage()]


@pytest.mark.parametrize("family_name", ["bert", "gpt2", "llama"])  # nn.Linear, GPT-2's Conv1D, a decoder with GQA
@pytest.mark.parametrize("space_name", ["small", "large"])  # prefix views and gathered copies of the weights
def test_bf16_scoring_computes_what_plain_autocast_computes_and_restores_the_fp32_model(family_name, space_name):
    """The search's bf16 passes cast the matrix weights once instead of on every call; the outputs must be plain
    torch autocast's, bit for bit, for the whole network and sliced sub-networks, and the model fp32 after."""
    model = tiny_model(family_name)
    parameters = dict(model.named_parameters())
    batch = tiny_batch()
    batch.pop("labels")
    space = make_space(space_name, tiny_config(family_name))
    rng = np.random.default_rng(0)
    scoring = bf16_scoring(model, torch.device("cpu"), bf16=True)
    for sub_network in [None, space.smallest(), *(space.sample(rng) for _ in range(3))]:
        run_as = nullcontext() if sub_network is None else sliced(model, sub_network)
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16), run_as:
            expected = model(**batch).logits
        run_as = nullcontext() if sub_network is None else sliced(model, sub_network)
        with torch.no_grad(), scoring(), run_as:
            logits = model(**batch).logits
        assert logits.dtype == torch.bfloat16
        assert torch.equal(logits, expected)
    assert all(model.get_parameter(name) is parameter for name, parameter in parameters.items())
    assert all(parameter.dtype == torch.float32 for parameter in model.parameters())


def test_bf16_scoring_off_is_no_context_at_all():
    model = tiny_model("bert")
    assert bf16_scoring(model, torch.device("cpu"), bf16=False) is nullcontext
