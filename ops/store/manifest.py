"""A version's files against its MANIFEST (SHA-256 and size per file): write it, seal the version, check it.

A MANIFEST is data from the disk: a path in it that is absolute, climbs out with ``..``, or leads outside
its version through a link is refused before anything is read. Pure file work: no torch.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import time
from pathlib import Path

__all__ = ["MANIFEST", "VARIANTS_DIR", "quick_check", "full_check", "check_files", "files_fingerprint",
           "hashed_picture", "manifest_created", "weights_bytes", "variant_names", "write_manifest", "seal",
           "make_writable", "set_immutable", "fsync_dir"]

MANIFEST = "MANIFEST"
_HASH_CHUNK = 8 * 2**20


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _read_manifest(path: Path) -> dict | None:
    try:
        files = json.loads((path / MANIFEST).read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return files if isinstance(files, dict) else None


def manifest_created(path: Path) -> str:
    """When the version was installed (its MANIFEST says; ISO 8601 sorts as text), '' if unknown."""
    try:
        created = json.loads((path / MANIFEST).read_text()).get("created", "")
    except (OSError, ValueError, AttributeError):
        return ""
    return created if isinstance(created, str) else ""


def _unsafe_entry(path: Path, rel: object) -> str | None:
    """Why a MANIFEST entry may not be read (None when it names a file inside ``path``)."""
    if not isinstance(rel, str) or not rel or "\0" in rel:
        return f"{MANIFEST} names an invalid path {rel!r}"
    if Path(rel).is_absolute() or ".." in Path(rel).parts:
        return f"{MANIFEST} names a path outside the version: {rel!r}"
    if not (path / rel).resolve().is_relative_to(path.resolve()):
        return f"{MANIFEST} names a path that leads outside the version: {rel!r}"
    return None


def check_files(path: Path, hashed: bool) -> list[str]:
    """Problems with ``path`` against its MANIFEST: unsafe entries (then nothing is read), missing,
    extra, resized, and (hashed) altered files."""
    files = _read_manifest(path)
    if files is None:
        return [f"{path.name}: no readable {MANIFEST}"]
    unsafe = [why for rel in files if (why := _unsafe_entry(path, rel))]
    if unsafe or not all(isinstance(m, dict) and {"size", "sha256"} <= set(m) for m in files.values()):
        return unsafe or [f"{path.name}: {MANIFEST} is malformed"]
    problems = []
    for rel, meta in files.items():
        f = path / rel
        if not f.is_file():
            problems.append(f"{rel}: missing")
        elif f.stat().st_size != meta["size"]:
            problems.append(f"{rel}: size {f.stat().st_size} != {meta['size']}")
        elif hashed and _sha256(f) != meta["sha256"]:
            problems.append(f"{rel}: SHA-256 mismatch")
    extra = {str(p.relative_to(path)) for p in path.rglob("*") if p.is_file()} - set(files) - {MANIFEST}
    problems.extend(f"{rel}: not in {MANIFEST}" for rel in sorted(extra))
    return problems


def files_fingerprint(path: Path | None) -> tuple | None:
    """A cheap picture of a model directory: (name, size, mtime) of every file."""
    if path is None:
        return None
    try:
        return tuple(sorted((str(p.relative_to(path)), st.st_size, st.st_mtime_ns)
                            for p in Path(path).rglob("*") if p.is_file() for st in [p.stat()]))
    except OSError:
        return ("unreadable",)


def hashed_picture(path: Path) -> str | None:
    """A digest of what ``.verified.json`` records of a version's files (None: unreadable)."""
    try:
        entries = sorted((str(p.relative_to(path)), st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)
                         for p in Path(path).rglob("*") if p.is_file() for st in [p.stat()])
    except OSError:
        return None
    return hashlib.sha256(repr(entries).encode()).hexdigest()


def quick_check(path: Path) -> list[str]:
    """The cheap check (file names and sizes against the MANIFEST), done at every load."""
    return check_files(Path(path), hashed=False)


def full_check(path: Path) -> list[str]:
    """The full check: every file hashed against the MANIFEST (seconds per gigabyte)."""
    return check_files(Path(path), hashed=True)


VARIANTS_DIR = "variants"  # a version's precomputed weight formats (engine.variants), under its MANIFEST


def weights_bytes(path: Path) -> int:
    """Bytes of the model's own weight files: what loading the version costs in memory, roughly (fp32 as
    stored; a variant, such as int8, costs less)."""
    path = Path(path)
    return sum(p.stat().st_size for p in path.rglob("*")
               if p.suffix in (".safetensors", ".bin") and p.relative_to(path).parts[0] != VARIANTS_DIR)


def variant_names(path: Path) -> list[str]:
    """The precomputed weight formats a version carries (``int8``), by their folders."""
    variants = Path(path) / VARIANTS_DIR
    return sorted(p.name for p in variants.iterdir() if p.is_dir()) if variants.is_dir() else []


def write_manifest(path: Path, name: str, version: str) -> None:
    files = {
        str(f.relative_to(path)): {"sha256": _sha256(f), "size": f.stat().st_size}
        for f in sorted(path.rglob("*"))
        if f.is_file()
    }
    manifest = {"name": name, "version": version, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "files": files}
    (path / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")


def seal(path: Path) -> None:
    """fsync every file, then make the tree read-only (files 0444, directories 0555)."""
    for p in sorted(path.rglob("*"), reverse=True):
        if p.is_file():
            fd = os.open(p, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.chmod(p, 0o555 if p.is_dir() else 0o444)
    os.chmod(path, 0o555)


def make_writable(path: Path) -> None:
    if not path.exists() or path.is_symlink():
        return
    os.chmod(path, stat.S_IRWXU)
    for p in path.rglob("*"):
        os.chmod(p, stat.S_IRWXU if p.is_dir() else stat.S_IRUSR | stat.S_IWUSR)


def set_immutable(path: Path) -> str | None:
    """``chattr +i`` on a version's files; returns why it could not be done (None when done)."""
    if shutil.which("chattr") is None:
        return "the chattr command is not installed (package e2fsprogs)"
    paths = [str(p) for p in sorted(path.rglob("*"), reverse=True)] + [str(path)]
    result = subprocess.run(["chattr", "+i", *paths], capture_output=True, text=True)
    if result.returncode != 0:
        subprocess.run(["chattr", "-i", *paths], capture_output=True)  # all or nothing
        return result.stderr.strip().splitlines()[-1] if result.stderr.strip() else f"exit {result.returncode}"
    return None


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
