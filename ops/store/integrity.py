"""Is the serving model version still the one that was installed? The integrity monitor.

A cheap fingerprint of the serving files on every vitals tick; a changed store version is hashed
against its MANIFEST in a background thread at the lowest CPU priority, and its verdict reported by a
later check. The rules: ``docs/internals.md`` (The model store). Pure file work: no torch.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

from loguru import logger

from ops.store.manifest import MANIFEST, files_fingerprint, full_check

__all__ = ["IntegrityMonitor", "Integrity"]


@dataclass(frozen=True)
class Integrity:
    """What the monitor knows about the serving files now."""

    files_changed: bool = False  # changed, and there is no MANIFEST to judge them by
    damaged: str | None = None  # no longer matches its MANIFEST (hashed); reported until acted on


class IntegrityMonitor:
    """Fingerprints and background hashes of the serving version; see the module doc."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._serving: Path | None = None
        self._fingerprint: tuple | None = None  # the serving files when they started serving (or last hashed)
        self._hashed: tuple | None = None  # (path, fingerprint, passed) of the last SHA-256 check
        self.hashing = False
        self._damage: tuple[Path, str] | None = None  # found damaged, not yet acted on
        self._has_manifest = False  # the serving directory had a MANIFEST when it started serving

    def watch(self, path: Path | None) -> None:
        """``path`` serves from now on: take its picture, and hash it unless these very files were."""
        fingerprint = files_fingerprint(path)
        with self._lock:
            self._serving, self._fingerprint, self._damage = path, fingerprint, None
            self._has_manifest = path is not None and (path / MANIFEST).is_file()
        if self._has_manifest and not self._judged(path, fingerprint):
            self._hash(path, fingerprint)

    def check(self) -> Integrity:
        """Cheap: compare the picture. Files gone are damage at once; other changes to a store
        version start a background hash; a plain directory's changes are reported as such."""
        path, known = self._serving, self._fingerprint
        if path is None or known is None:
            return Integrity()
        damage = self._damage
        if damage is not None and damage[0] == path:
            return Integrity(damaged=damage[1])
        fingerprint = files_fingerprint(path)
        if fingerprint == known or self._judged(path, fingerprint):
            return Integrity()
        gone = self._gone(path, known, fingerprint)
        if gone is not None:  # nothing to hash: judged now (once for this picture of the files)
            with self._lock:
                self._hashed = (path, fingerprint, False)
                self._damage = (path, gone)
            logger.error("INTEGRITY: the serving version {}: {}", path.name, gone)
            return Integrity(damaged=gone)
        if not self._has_manifest:
            return Integrity(files_changed=True)
        self._hash(path, fingerprint)
        return Integrity()

    def _gone(self, path: Path, known: tuple, now: tuple | None) -> str | None:
        """What of the serving version has disappeared from the disk (None: nothing)."""
        if not path.is_dir():
            return f"the version's directory {path} is gone"
        if self._has_manifest and not (path / MANIFEST).is_file():
            return f"its {MANIFEST} is gone"
        missing = sorted({entry[0] for entry in known} - {entry[0] for entry in now or ()})
        return f"files gone: {', '.join(missing[:3])}" if missing else None

    def take_damage(self) -> Path | None:
        """The damaged version, once: the caller acts on it, and the next change is judged again."""
        with self._lock:
            damage, self._damage = self._damage, None
        return None if damage is None else damage[0]

    def _judged(self, path: Path, fingerprint: tuple | None) -> bool:
        """These very files (same names, sizes, mtimes) were hashed already."""
        return self._hashed is not None and self._hashed[:2] == (path, fingerprint)

    def verified(self, path: Path | None) -> bool:
        """``path`` was hashed against its MANIFEST without a problem, and its files have not
        changed since (so it counts as verified without hashing it again)."""
        hashed = self._hashed
        return path is not None and hashed is not None and hashed == (path, files_fingerprint(path), True)

    def _hash(self, path: Path, fingerprint: tuple | None) -> None:
        """Hash ``path`` against its MANIFEST in the background; one check at a time."""
        with self._lock:
            if self.hashing:
                return
            self.hashing = True
        threading.Thread(target=self._run_hash, args=(path, fingerprint), name="integrity-check",
                         daemon=True).start()

    def _run_hash(self, path: Path, fingerprint: tuple | None) -> None:
        try:
            # Lowest CPU priority for this thread only (Linux): requests keep the cores.
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        except (AttributeError, OSError):
            pass
        try:
            problems = full_check(path)
        except Exception as exc:  # an unreadable file is a finding, and the flag must be cleared
            problems = [f"unreadable: {exc}"]
        with self._lock:
            self.hashing = False
            if self._serving != path:
                return  # another version serves by now
            self._hashed = (path, fingerprint, not problems)
            if problems:
                self._damage = (path, "; ".join(problems[:3]))
            else:
                self._fingerprint = fingerprint  # touched but intact: the new picture is the good one
        if problems:
            logger.error("INTEGRITY: the serving version {} does not match its MANIFEST: {}",
                         path.name, "; ".join(problems))
        else:
            logger.info("{} matches its MANIFEST (SHA-256)", path.name)
