"""--bf16 on a CPU without native bf16 warns (torch emulates it, several times slower than fp32) and still runs in
bf16; with native support, or without --bf16, nothing is said."""

from __future__ import annotations

import logging

import pytest
import torch

from nas_llm.common.precision import autocast_for
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
