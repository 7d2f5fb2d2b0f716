"""Writing a small file (JSON, or bytes) so that a reader sees the old file or the new one, never half of either.

The text goes to a temporary file in the same folder, is flushed to disk, and
is renamed over the old file (``os.replace`` is atomic within a file system).
Used for the heads beside a tasks file (``engine.heads``), the tasks added
at run time and their examples (``ops.api.runtime_tasks``). Pure: no torch.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

__all__ = ["write_bytes_atomically", "write_json_atomically"]


def write_json_atomically(path: Path, data: object, mode: int = 0o644, indent: int | None = None) -> None:
    """Write ``data`` as JSON to ``path`` atomically, readable per ``mode`` (``mkstemp`` alone makes it 0600)."""
    write_bytes_atomically(path, (json.dumps(data, ensure_ascii=False, indent=indent) + "\n").encode("utf-8"), mode)


def write_bytes_atomically(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` atomically (the module doc), readable per ``mode``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.fchmod(fd, mode)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
