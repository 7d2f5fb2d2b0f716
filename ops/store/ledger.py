"""The model store's bookkeeping: the writers' lock, the journalled two-link switch, and its records.

A switch moves two links, so it is journalled first (``.switch.json``) and the next writer finishes a
half-done one; records: ``.rejected.json`` and ``.verified.json``. Pure file work: no torch. The
crash rules: docs/internals.md, "The model store".
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import time
from pathlib import Path
from typing import Iterator

from ops.store.manifest import fsync_dir, hashed_picture, make_writable

__all__ = ["Ledger", "previous_link", "REJECTED", "VERIFIED", "JOURNAL"]

REJECTED = ".rejected.json"
# A version whose files still look exactly as when they were last hashed whole (names, sizes, mtimes,
# inodes, ctimes: ctime cannot be set back by any tool) is not hashed again by ``activate``: a hot swap
# then waits for the new worker, not for seconds of SHA-256 (the app hashes it again once it serves).
VERIFIED = ".verified.json"
JOURNAL = ".switch.json"


def previous_link(link: str) -> str:
    return "previous" if link == "current" else f"{link}.previous"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Ledger:
    """The files beside the versions in a store's root; writers hold ``locked()``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def link_target(self, link: str) -> str | None:
        path = self.root / link
        return os.readlink(path) if path.is_symlink() else None

    def rejected(self) -> dict[str, dict]:
        try:
            return json.loads((self.root / REJECTED).read_text())
        except (OSError, ValueError):
            return {}

    def verified_unchanged(self, key: str) -> bool:
        """``key`` was hashed whole without a problem and its files have not changed since."""
        try:
            recorded = json.loads((self.root / VERIFIED).read_text()).get(key)
        except (OSError, ValueError, AttributeError):
            return False
        return recorded is not None and recorded == hashed_picture(self.root / key)

    def record_verified(self, key: str, picture: str) -> None:
        if os.access(self.root, os.W_OK):  # a read-only view of a store: nothing to record
            with self.locked():
                self.write_verified(key, picture)

    def write_verified(self, key: str, picture: str | None) -> None:
        """Call with the lock held."""
        try:
            verified = json.loads((self.root / VERIFIED).read_text())
        except (OSError, ValueError):
            verified = {}
        verified = {k: v for k, v in verified.items() if (self.root / k).is_dir()}
        if picture is not None:
            verified[key] = picture
        self.write_json(VERIFIED, verified)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """One writer at a time across processes (the CLI and running apps share the store);
        each first finishes a switch that a dead writer left half done."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                try:
                    journal = json.loads((self.root / JOURNAL).read_text())
                except (OSError, ValueError):
                    journal = None
                if journal is not None:
                    self._finish_switch(journal)
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def switch(self, link: str, target: str) -> None:
        """Point ``link`` at ``target`` and its previous link at the old target (lock held)."""
        old = self.link_target(link)
        if old == target:
            return
        journal = {"link": link, "from": old, "to": target}
        self.write_json(JOURNAL, journal)
        self._finish_switch(journal)

    def _finish_switch(self, journal: dict) -> None:
        if journal.get("from"):
            self._swap_link(previous_link(journal["link"]), journal["from"])
        self._swap_link(journal["link"], journal["to"])
        (self.root / JOURNAL).unlink()
        fsync_dir(self.root)

    def set_rejected(self, key: str, reason: str | None) -> None:
        """Call with the lock held."""
        rejected = self.rejected()
        if reason is None:
            if rejected.pop(key, None) is None:
                return
        else:
            rejected[key] = {"reason": reason, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        self.write_json(REJECTED, rejected)

    def write_json(self, name: str, data: dict) -> None:
        """Whole or not at all: written to a temporary file, synced, renamed over the old one."""
        tmp = self.root / f".{name.lstrip('.')}.tmp-{os.getpid()}"
        with open(tmp, "w") as f:
            f.write(json.dumps(data, indent=2) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.root / name)
        fsync_dir(self.root)

    def _swap_link(self, link: str, target: str) -> None:
        tmp = self.root / f".{link}.tmp-{os.getpid()}"
        tmp.unlink(missing_ok=True)
        os.symlink(target, tmp)
        os.replace(tmp, self.root / link)
        fsync_dir(self.root)

    def sweep(self) -> None:
        """Remove what processes that died mid-step left behind (call with the lock held)."""
        for p in self.root.iterdir():
            pid = p.name.rpartition("-")[2]
            if p.name.startswith(".") and (".tmp-" in p.name or p.name.startswith(".staging-")):
                if pid.isdigit() and not _pid_alive(int(pid)):
                    make_writable(p)
                    if p.is_dir() and not p.is_symlink():
                        shutil.rmtree(p, ignore_errors=True)
                    else:
                        p.unlink(missing_ok=True)
