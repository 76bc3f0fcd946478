"""Write result files so that a crash never leaves a half-written one behind."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write to a temporary file in the same directory, fsync it, then rename it into place.

    The temporary file is created with mode 0o666 filtered by the umask, like any file `open` creates
    (tempfile's 0o600 would survive the rename).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(descriptor, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def follow_umask(*paths: str | Path) -> None:
    """Give files the mode `open` would have given them (safetensors writes its files 0o600 whatever the umask)."""
    umask = os.umask(0)
    os.umask(umask)
    for path in paths:
        os.chmod(path, 0o666 & ~umask)


def tensorboard_writer(log_dir: str) -> SummaryWriter:
    """A TensorBoard writer; TensorBoard is imported only here, so that `--help` need not wait for it."""
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir)


def write_json_atomic(path: str | Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2))


class JsonLinesLog:
    """An append-only log of JSON records, each flushed and fsync'd as soon as it is written.

    A crash can at worst cut the last line short; `read` drops such a partial line, so a resumed run
    re-does only the record that was being written.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def read(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        records = []
        for line in self.path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                break
        return records

    def rewrite(self, records: list[dict[str, Any]]) -> None:
        """Replace the log by `records` atomically (drops a partial last line before appending)."""
        write_text_atomic(self.path, "".join(json.dumps(record) + "\n" for record in records))

    def append(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
