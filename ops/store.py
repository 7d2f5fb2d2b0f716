"""The model store on disk: versioned, verified, read-only model directories.

    models/
      <name>@<version>/   read-only once installed; holds MANIFEST
      current -> <name>@<version>    switched atomically (a new link renamed over it)
      previous -> ...                what ``rollback`` returns to

Rules: a version is built in a hidden staging directory and renamed into
place only when complete, so a crash never leaves a half-installed version
under its real name; it is never overwritten in place; links are replaced by
``os.replace`` of a freshly made link, so ``current`` always points at a
complete version. Pure file operations: no torch here.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from engine.errors import ModelInstallError

__all__ = ["ModelStore", "VersionInfo", "MANIFEST", "valid_version_name"]

MANIFEST = "MANIFEST"
_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def valid_version_name(name: str, version: str) -> str:
    for part, what in ((name, "name"), (version, "version")):
        if not _SAFE.match(part) or ".." in part:
            raise ModelInstallError(f"Invalid model {what} {part!r}: use letters, digits, '.', '_' and '-'.")
    return f"{name}@{version}"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(8 * 1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class VersionInfo:
    key: str  # name@version
    path: Path
    size_bytes: int
    is_current: bool
    is_previous: bool


class ModelStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    # ----- reading ------------------------------------------------------------

    def _link_target(self, link: str) -> str | None:
        path = self.root / link
        return os.readlink(path) if path.is_symlink() else None

    def current(self) -> str | None:
        return self._link_target("current")

    def previous(self) -> str | None:
        return self._link_target("previous")

    def versions(self) -> list[VersionInfo]:
        if not self.root.is_dir():
            return []
        current, previous = self.current(), self.previous()
        found = []
        for path in sorted(self.root.iterdir()):
            if path.is_symlink() or not path.is_dir() or "@" not in path.name or path.name.startswith("."):
                continue
            size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
            found.append(VersionInfo(path.name, path, size, path.name == current, path.name == previous))
        return found

    def verify(self, key: str) -> list[str]:
        """Problems with a version (empty when it matches its MANIFEST)."""
        path = self.root / key
        manifest_path = path / MANIFEST
        if not manifest_path.is_file():
            return [f"{path}: no {MANIFEST}"]
        files = json.loads(manifest_path.read_text())["files"]
        problems = []
        for rel, meta in files.items():
            f = path / rel
            if not f.is_file():
                problems.append(f"{rel}: missing")
            elif f.stat().st_size != meta["size"]:
                problems.append(f"{rel}: size {f.stat().st_size} != {meta['size']}")
            elif _sha256(f) != meta["sha256"]:
                problems.append(f"{rel}: SHA-256 mismatch")
        extra = {str(p.relative_to(path)) for p in path.rglob("*") if p.is_file()} - set(files) - {MANIFEST}
        problems.extend(f"{rel}: not in {MANIFEST}" for rel in sorted(extra))
        return problems

    # ----- writing ------------------------------------------------------------

    def install(self, name: str, version: str, build: Callable[[Path], None]) -> Path:
        """Build a version with ``build(staging_dir)``, seal it, and move it into place."""
        key = valid_version_name(name, version)
        final = self.root / key
        if final.exists():
            raise ModelInstallError(f"{final} already exists; versions are never overwritten. Pick a new --version.")
        self.root.mkdir(parents=True, exist_ok=True)
        staging = self.root / f".staging-{key}-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        try:
            staging.mkdir()
            build(staging)
            self._write_manifest(staging, name, version)
            self._make_read_only(staging)
            os.rename(staging, final)
        except BaseException:
            self._make_writable(staging)
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return final

    def activate(self, key: str) -> None:
        """Point ``current`` at ``key`` (after verifying it); the old target becomes ``previous``."""
        if not (self.root / key).is_dir():
            raise ModelInstallError(f"No version {key!r} in {self.root}. See: python -m ops.models list")
        problems = self.verify(key)
        if problems:
            raise ModelInstallError(f"{key} fails verification: {'; '.join(problems[:5])}")
        old = self.current()
        if old == key:
            return
        if old is not None:
            self._swap_link("previous", old)
        self._swap_link("current", key)

    def rollback(self) -> str:
        target = self.previous()
        if target is None:
            raise ModelInstallError("Nothing to roll back to: no previous version recorded.")
        self.activate(target)
        return target

    def _swap_link(self, link: str, target: str) -> None:
        tmp = self.root / f".{link}.tmp-{os.getpid()}"
        tmp.unlink(missing_ok=True)
        os.symlink(target, tmp)
        os.replace(tmp, self.root / link)

    @staticmethod
    def _write_manifest(path: Path, name: str, version: str) -> None:
        files = {
            str(f.relative_to(path)): {"sha256": _sha256(f), "size": f.stat().st_size}
            for f in sorted(path.rglob("*"))
            if f.is_file()
        }
        manifest = {"name": name, "version": version, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "files": files}
        (path / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")

    @staticmethod
    def _make_read_only(path: Path) -> None:
        for p in sorted(path.rglob("*"), reverse=True):
            os.chmod(p, 0o555 if p.is_dir() else 0o444)
        os.chmod(path, 0o555)

    @staticmethod
    def _make_writable(path: Path) -> None:
        if not path.exists():
            return
        os.chmod(path, stat.S_IRWXU)
        for p in path.rglob("*"):
            os.chmod(p, stat.S_IRWXU if p.is_dir() else stat.S_IRUSR | stat.S_IWUSR)
