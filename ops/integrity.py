"""Is the serving model version still the one that was installed? The integrity monitor.

Cheap checks on every vitals tick: a fingerprint of the serving directory's
files (names, sizes, mtimes) compared with the one taken when the version
started serving. A directory with a MANIFEST (a store version) whose picture
changed is hashed against its MANIFEST in a background thread at the lowest
CPU priority (hashing 2.5 GB takes about 9 s here); its verdict is reported
by a later check. A directory without a MANIFEST can only say "changed".
A version is hashed once after it starts serving, unless these very files
were hashed before (a recovery reloads the same files and skips it).
Pure file work: no torch.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

from loguru import logger

from ops.store import MANIFEST, full_check

__all__ = ["IntegrityMonitor", "Integrity", "files_fingerprint"]


def files_fingerprint(path: Path | None) -> tuple | None:
    """A cheap picture of a model directory: (name, size, mtime) of every file."""
    if path is None:
        return None
    try:
        return tuple(sorted((str(p.relative_to(path)), st.st_size, st.st_mtime_ns)
                            for p in Path(path).rglob("*") if p.is_file() for st in [p.stat()]))
    except OSError:
        return ("unreadable",)


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
        self._hashed: tuple | None = None  # (path, fingerprint) the last SHA-256 check judged
        self.hashing = False
        self._damage: tuple[Path, str] | None = None  # found damaged, not yet acted on

    def watch(self, path: Path | None) -> None:
        """``path`` serves from now on: take its picture, and hash it unless these very files were."""
        fingerprint = files_fingerprint(path)
        with self._lock:
            self._serving, self._fingerprint, self._damage = path, fingerprint, None
        if path is not None and (path / MANIFEST).is_file() and self._hashed != (path, fingerprint):
            self._hash(path, fingerprint)

    def check(self) -> Integrity:
        """Cheap: compare the picture; a changed store version starts a background hash."""
        path, known = self._serving, self._fingerprint
        if path is None or known is None:
            return Integrity()
        fingerprint = files_fingerprint(path)
        if not (path / MANIFEST).is_file():
            return Integrity(files_changed=fingerprint != known)
        damage = self._damage
        if damage is not None and damage[0] == path:
            return Integrity(damaged=damage[1])
        if fingerprint != known and self._hashed != (path, fingerprint):
            self._hash(path, fingerprint)
        return Integrity()

    def take_damage(self) -> Path | None:
        """The damaged version, once: the caller acts on it, and the next change is judged again."""
        with self._lock:
            damage, self._damage = self._damage, None
        return None if damage is None else damage[0]

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
            self._hashed = (path, fingerprint)
            if problems:
                self._damage = (path, "; ".join(problems[:3]))
            else:
                self._fingerprint = fingerprint  # touched but intact: the new picture is the good one
        if problems:
            logger.error("INTEGRITY: the serving version {} does not match its MANIFEST: {}",
                         path.name, "; ".join(problems))
        else:
            logger.info("{} matches its MANIFEST (SHA-256)", path.name)
