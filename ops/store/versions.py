"""The model store: versioned, verified, read-only model directories, and the links that name them.

``ModelStore`` installs, verifies, activates and rolls back versions (files: ``ops.store.manifest``;
lock, journal, records: ``ops.store.ledger``); ``ModelSource`` is the link a running app serves.
Where an app may go back to is one rule, ``ModelStore.fallback``. Layout and crash rules:
docs/internals.md. Pure file work: no torch.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from engine.errors import ModelInstallError
from engine.loader import model_dir_problems
from ops.store.ledger import Ledger, previous_link
from ops.store.manifest import (MANIFEST, check_files, fsync_dir, full_check, hashed_picture, make_writable,
                                manifest_created, quick_check, seal, write_manifest)

__all__ = ["ModelStore", "ModelSource", "VersionInfo", "Eligibility", "valid_version_name"]

_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def valid_version_name(name: str, version: str) -> str:
    for part, what in ((name, "name"), (version, "version")):
        if not _SAFE.match(part) or ".." in part:
            raise ModelInstallError(f"Invalid model {what} {part!r}: use letters, digits, '.', '_' and '-'.")
    return f"{name}@{version}"


def _valid_link(link: str) -> str:
    if not _SAFE.match(link) or ".." in link or "@" in link or link.endswith("previous"):
        raise ModelInstallError(f"Invalid link name {link!r}: use letters, digits, '.', '_' and '-' (no '@').")
    return link


def _valid_key(key: str, where: str) -> str:
    """A version key (``name@version``) as read from a link or typed: refuse anything else."""
    name, sep, version = key.partition("@")
    if not sep or not _SAFE.match(name) or not _SAFE.match(version) or ".." in key or "/" in key:
        raise ModelInstallError(f"{where} names {key!r}, which is not a version of this store (name@version).")
    return key


@dataclass(frozen=True)
class VersionInfo:
    key: str  # name@version
    path: Path
    size_bytes: int
    is_current: bool
    is_previous: bool
    problems: tuple[str, ...]  # from the quick check (or the full one, when asked)
    rejected: str | None  # why the app rolled it back, if it did

    def eligibility(self, hashed: bool) -> "Eligibility":
        """May the app go back to this version (see the module doc)?"""
        if self.rejected:
            return Eligibility(False, "rejected; activate --force clears that")
        if self.problems:
            return Eligibility(False, f"damaged: {'; '.join(self.problems[:3])}")
        return Eligibility(True, "verified (SHA-256), not rejected" if hashed
                           else "not rejected, sizes match; hashed before it is chosen")


@dataclass(frozen=True)
class Eligibility:
    eligible: bool
    why: str


class ModelStore:
    """The versions under ``root`` and the links that name them; writers take the ledger's lock."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.ledger = Ledger(self.root)

    # ----- reading ------------------------------------------------------------

    def current(self, link: str = "current") -> str | None:
        return self.ledger.link_target(link)

    def previous(self, link: str = "current") -> str | None:
        return self.ledger.link_target(previous_link(link))

    def keys(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir()
                      if "@" in p.name and not p.name.startswith(".") and not p.is_symlink() and p.is_dir())

    def versions(self, hashed: bool = False) -> list[VersionInfo]:
        current, previous, rejected = self.current(), self.previous(), self.rejected()
        found = []
        for key in self.keys():
            path = self.root / key
            size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
            found.append(VersionInfo(key, path, size, key == current, key == previous,
                                     tuple(check_files(path, hashed)), rejected.get(key, {}).get("reason")))
        return found

    def resolve_key(self, name: str) -> str:
        """A version key from what an operator typed: ``name@version``, a bare version, or a link."""
        if "/" in name or name in ("", ".", ".."):
            raise ModelInstallError(f"Invalid version {name!r}.")
        if (self.root / name).is_symlink():
            return _valid_key(os.readlink(self.root / name), f"the link {name}")
        if "@" in name:
            return name
        matches = [k for k in self.keys() if k.partition("@")[2] == name]
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise ModelInstallError(f"{name!r} is ambiguous: {', '.join(matches)}. Give name@version.")
        raise ModelInstallError(f"No version {name!r} in {self.root}. See: python -m ops.models list")

    def verify(self, key: str) -> list[str]:
        """Problems with a version (empty when every file matches its MANIFEST hash); a clean
        result is recorded with the files' picture (``VERIFIED``)."""
        path = self.root / key
        if not path.is_dir():
            return [f"no version {key} in {self.root}"]
        picture = hashed_picture(path)
        problems = full_check(path)
        if not problems and picture is not None and picture == hashed_picture(path):
            self.ledger.record_verified(key, picture)
        return problems

    def rejected(self) -> dict[str, dict]:
        """Versions an app rolled back: ``{key: {"reason", "at"}}``."""
        return self.ledger.rejected()

    # ----- writing ------------------------------------------------------------

    def repair(self) -> None:
        """Finish a half-done switch and sweep what dead writers left (``list`` calls it)."""
        if self.root.is_dir() and os.access(self.root, os.W_OK):  # a read-only view is listed as it is
            with self.ledger.locked():
                self.ledger.sweep()

    def install(self, name: str, version: str, build: Callable[[Path], None]) -> Path:
        """Build a version with ``build(staging_dir)``, seal it, and move it into place."""
        key = valid_version_name(name, version)
        final = self.root / key
        if final.exists() or final.is_symlink():
            raise ModelInstallError(f"{final} already exists; versions are never overwritten. Pick a new --version.")
        with self.ledger.locked():
            self.ledger.sweep()
        staging = self.root / f".staging-{key}-{os.getpid()}"
        try:
            staging.mkdir()
            build(staging)
            write_manifest(staging, name, version)
            seal(staging)
            with self.ledger.locked():
                if final.exists() or final.is_symlink():  # another installer won the race
                    raise ModelInstallError(f"{final} already exists; versions are never overwritten.")
                os.rename(staging, final)
                fsync_dir(self.root)
                self.ledger.write_verified(key, hashed_picture(final))  # hashed for its MANIFEST just now
        except BaseException:
            make_writable(staging)
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return final

    def install_dir(self, src: Path, version: str | None = None, name: str | None = None,
                    then: Callable[[Path], None] | None = None) -> Path:
        """Copy a model directory in, after refusing what cannot be a good version; ``then(staging)``
        adds to the copy before it is sealed (the CLI makes the int8 variant there)."""
        src = Path(src)
        if not src.is_dir():
            raise ModelInstallError(f"{src} is not a directory.")
        src = src.resolve()
        problems = model_dir_problems(src)
        if problems:
            raise ModelInstallError(f"{src} is not a loadable model directory: {'; '.join(problems)}.")
        for p in src.rglob("*"):
            if p.is_symlink():
                target = p.resolve()
                if not target.is_relative_to(src):
                    raise ModelInstallError(f"{p} is a link that leaves {src}; copy the real files instead.")
                if not target.exists():
                    raise ModelInstallError(f"{p} is a dangling link.")
        stem, _, src_version = src.name.partition("@")
        # A MANIFEST in the source (a copy of another store's version) is rebuilt, not copied.
        ignore = lambda d, names: [MANIFEST] if Path(d) == src else []  # noqa: E731
        name = stem if name is None else name
        version = (src_version or "1") if version is None else version

        def build(staging: Path) -> None:
            shutil.copytree(src, staging, dirs_exist_ok=True, ignore=ignore)
            if then is not None:
                then(staging)

        return self.install(name, version, build)

    def activate(self, key: str, link: str = "current", force: bool = False) -> str | None:
        """Point ``link`` at ``key`` after verifying it (hashes); the old target becomes its previous.

        Returns the old target. A version the app rolled back is refused unless ``force``.
        """
        _valid_link(link)
        _valid_key(key, "the version")
        if not (self.root / key).is_dir():
            raise ModelInstallError(f"No version {key!r} in {self.root}. See: python -m ops.models list")
        rejected = self.rejected().get(key)
        if rejected and not force:
            raise ModelInstallError(f"{key} was rolled back by the app ({rejected['reason']}); "
                                    "pass --force to try it again.")
        # Hashing takes seconds (outside the lock), unless these very files were hashed before.
        problems = quick_check(self.root / key) if self.ledger.verified_unchanged(key) else self.verify(key)
        if problems:
            raise ModelInstallError(f"{key} fails verification: {'; '.join(problems[:5])}")
        with self.ledger.locked():
            if check_files(self.root / key, hashed=False):
                raise ModelInstallError(f"{key} changed while it was being verified.")
            old = self.current(link)
            self.ledger.switch(link, key)
            if force:
                self.ledger.set_rejected(key, None)
        return old

    def rollback(self, link: str = "current", force: bool = False) -> str:
        target = self.previous(link)
        if target is None or target == self.current(link):
            raise ModelInstallError("Nothing to roll back to: no previous version recorded.")
        self.activate(target, link, force=force)
        return target

    def point_back(self, link: str, bad: str, good: str | None, reason: str) -> bool:
        """What the app does when ``bad`` fails: mark ``bad`` rejected and, if ``link`` still names
        it, point it at ``good`` (chosen by ``fallback``; no re-hash). False when the link was not
        moved: nothing to go to, or an operator moved it meanwhile (their newer choice wins)."""
        _valid_link(link)
        with self.ledger.locked():
            self.ledger.set_rejected(bad, reason)
            if good is None or self.current(link) != bad or not (self.root / good).is_dir():
                return False
            self.ledger.switch(link, good)
        return True

    def fallback(self, exclude: tuple[str, ...] = (), prefer: str | None = None,
                 trusted: tuple[str, ...] = ()) -> str | None:
        """The one rule (module doc): ``prefer`` (the version serving) if still eligible, else the
        newest eligible version, skipping ``exclude``. ``trusted`` versions count as verified
        without hashing them again (the app hashed them after loading, and their files have not
        changed since); every other candidate is hashed, newest first, until one passes."""
        rejected = self.rejected()
        newest_first = sorted(self.keys(), key=lambda k: (manifest_created(self.root / k), k), reverse=True)
        for key in dict.fromkeys(([prefer] if prefer else []) + newest_first):
            if key in exclude or key in rejected or not (self.root / key).is_dir():
                continue
            if key in trusted or not self.verify(key):
                return key
        return None


class ModelSource:
    """The directory a running app serves: a store link (``models/current``) or a plain directory.

    The app resolves it at every load, notices when the link is moved, and asks
    to point it back when the version it names fails. A plain directory has no
    store: it is followed if it is a link, but nothing can be pointed back.
    """

    def __init__(self, model_dir: Path) -> None:
        self.model_dir = Path(model_dir)
        # ``current`` may not exist yet (nothing installed): it is still the store's link.
        is_link = self.model_dir.is_symlink() or (self.model_dir.name == "current" and not self.model_dir.exists())
        self.store = ModelStore(self.model_dir.parent) if is_link else None
        self.link = self.model_dir.name

    def active(self) -> Path | None:
        """The version directory the link names now (None when missing)."""
        path = self.model_dir.resolve()
        return path if path.is_dir() else None

    def stamp(self) -> int | None:
        """Changes each time the link is re-made, even to the same target (a new activation)."""
        try:
            return os.lstat(self.model_dir).st_mtime_ns
        except OSError:
            return None

    def _in_store(self, path: Path | None) -> bool:
        return self.store is not None and path is not None and path.parent == self.store.root.resolve()

    def point_back(self, bad: Path, good: Path | None, reason: str) -> bool:
        """Mark ``bad`` rejected and point the link at ``good`` (see ``ModelStore.point_back``)."""
        if not self._in_store(bad) or (good is not None and good.parent != bad.parent):
            return False
        return self.store.point_back(self.link, bad.name, None if good is None else good.name, reason)

    def fallback(self, exclude: Path | None, prefer: Path | None = None,
                 trusted: tuple[Path, ...] = ()) -> Path | None:
        """``ModelStore.fallback`` in paths; None without a store."""
        if self.store is None:
            return None
        key = self.store.fallback(
            exclude=(exclude.name,) if self._in_store(exclude) else (),
            prefer=prefer.name if self._in_store(prefer) else None,
            trusted=tuple(p.name for p in trusted if self._in_store(p)))
        return None if key is None else self.store.root.resolve() / key

    def rejected(self, path: Path | None) -> str | None:
        """Why the store's apps rolled ``path`` back (None: not rejected, or not a store version)."""
        if not self._in_store(path):
            return None
        entry = self.store.rejected().get(path.name)
        return entry.get("reason", "rolled back") if isinstance(entry, dict) else None
