"""Output files follow the user's umask, and atomic writes leave nothing half-written behind."""

import json
import os
import stat

import numpy as np
import pytest
import torch
from support import tiny_model
from tiny_assets import tiny_tokenizer

from nas_llm.common.io_utils import JsonLinesLog, write_json_atomic
from nas_llm.extraction.extract import extract_sub_network, save_extracted
from nas_llm.model.search_spaces import make_search_space
from nas_llm.training.train_state import TrainingState, save_checkpoint

UMASK = 0o027  # not the usual 0o022, so a mode that ignores the umask cannot pass by chance


@pytest.fixture
def umask():
    previous = os.umask(UMASK)
    yield UMASK
    os.umask(previous)


def modes_under(directory) -> dict[str, int]:
    modes = {".": stat.S_IMODE(directory.stat().st_mode)}
    for root, dirs, files in os.walk(directory):
        for name in dirs + files:
            path = os.path.join(root, name)
            modes[os.path.relpath(path, directory)] = stat.S_IMODE(os.stat(path).st_mode)
    return modes


def expected_mode(path) -> int:
    return (0o777 if path.is_dir() else 0o666) & ~UMASK


def test_json_results_and_logs_follow_the_umask(tmp_path, umask):
    write_json_atomic(tmp_path / "out" / "results.json", {"a": 1})
    log = JsonLinesLog(tmp_path / "out" / "evaluations.jsonl")
    log.rewrite([{"b": 2}])
    log.append({"c": 3})
    assert json.loads((tmp_path / "out" / "results.json").read_text()) == {"a": 1}
    assert log.read() == [{"b": 2}, {"c": 3}]
    assert modes_under(tmp_path / "out") == {
        ".": 0o750, "results.json": 0o640, "evaluations.jsonl": 0o640,
    }


def test_a_failed_write_leaves_the_old_file_and_no_temporary_file(tmp_path, monkeypatch):
    write_json_atomic(tmp_path / "results.json", {"a": 1})

    def disk_full(descriptor):
        raise OSError("No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space"):
        write_json_atomic(tmp_path / "results.json", {"a": 2})
    assert [path.name for path in tmp_path.iterdir()] == ["results.json"]
    assert json.loads((tmp_path / "results.json").read_text()) == {"a": 1}


def test_checkpoints_follow_the_umask(tmp_path, umask):
    model = tiny_model("bert")
    optimizer = torch.optim.AdamW(model.parameters())
    state = TrainingState(
        optimizer=optimizer,
        scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0),
        scaler=torch.amp.GradScaler("cpu", enabled=False),
        data_order=torch.Generator(),
        sampling_rng=np.random.default_rng(0),
    )
    save_checkpoint(tmp_path / "supernet" / "checkpoint-1", model, tiny_tokenizer(), {}, state, 1, 4, 1.0)
    sub_network = make_search_space("small", model.config).smallest()
    save_extracted(extract_sub_network(model, sub_network), tiny_tokenizer(), sub_network, tmp_path / "pruned")
    for directory in ("supernet", "pruned"):
        modes = modes_under(tmp_path / directory)
        assert len(modes) > 3
        assert modes == {name: expected_mode(tmp_path / directory / name) for name in modes}, directory
