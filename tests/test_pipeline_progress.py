"""prune.py's progress line: the time left in a stage, read from the stage's tqdm bars (hand-computed values)."""

from __future__ import annotations

from nas_llm.pipeline.stages import stage_time_left

EPOCH_BAR = b"epoch 1/3:  22%|\xe2\x96\x88\xe2\x96\x8f  | 28/126 [00:49<02:34,  1.58s/it, largest=0.656]"


def test_a_bar_of_one_epoch_of_several_adds_the_later_epochs_at_this_epoch_s_pace():
    # 2:34 left in epoch 1, and epochs 2 and 3 at 0:49 + 2:34 each: 154 + 2 * 203 = 560 s
    assert stage_time_left(EPOCH_BAR) == "09:20"


def test_the_last_epoch_s_bar_is_its_own_estimate():
    assert stage_time_left(b"recovery epoch 3/3:  50%|#  | 5/10 [00:30<00:31, 6.0s/it]") == "00:31"


def test_a_bar_of_the_whole_stage_is_its_own_estimate_with_hours():
    assert stage_time_left(b"search:  12%|#  | 12/100 [01:10<1:02:05,  3.10s/it]") == "1:02:05"


def test_the_last_bar_of_the_output_counts_and_output_without_a_bar_tells_nothing():
    assert stage_time_left(EPOCH_BAR + b"\r" + b"epoch 2/3:  0%| | 0/126 [00:00<05:00, 2.4s/it]") == "10:00"
    assert stage_time_left(b"2026-12-06 INFO Loaded /data: {'train': 4024}\n") is None
