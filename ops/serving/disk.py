"""What the watchdog learns from the disk about the serving version: ``ServingFiles.check()``. No torch.

Cheap (the link, names, sizes, mtimes): a change in a store version's files starts a background SHA-256
check (``ops.store.integrity``), whose verdict a later check reports. docs/internals.md, "The model store".
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ops.serving.supervisor import WorkerSupervisor
from ops.store.follower import StoreFollower
from ops.store.integrity import IntegrityMonitor

__all__ = ["DiskCheck", "ServingFiles"]


@dataclass(frozen=True)
class DiskCheck:
    """What the watchdog learns from the disk (cheap: a link, names, sizes, mtimes)."""

    files_changed: bool = False  # the serving files changed, and there is no MANIFEST to judge them by
    damaged: str | None = None  # the serving version no longer matches its MANIFEST (hashed)
    switched_to: str | None = None  # the link now names another version than the one serving


class ServingFiles:
    """The serving worker's version on disk, against its MANIFEST and the store's link."""

    def __init__(self, supervisor: WorkerSupervisor, integrity: IntegrityMonitor, follower: StoreFollower) -> None:
        self.supervisor = supervisor
        self.integrity = integrity
        self.follower = follower

    def check(self) -> DiskCheck:
        """Nothing to report while no worker, or one without a directory, serves."""
        serving = self.supervisor.serving
        path = serving.model_path if serving is not None else None
        if path is None:
            return DiskCheck()
        integrity = self.integrity.check()
        return DiskCheck(integrity.files_changed, integrity.damaged, self.follower.switched_to(Path(path)))
