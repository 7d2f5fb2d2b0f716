"""The model store on disk: versioned, verified, read-only model directories.

    models/
      <name>@<version>/   read-only once installed; holds MANIFEST (SHA-256 and size per file)
      current -> <name>@<version>    switched atomically (a new link renamed over it)
      previous -> ...                what ``rollback`` returns to
      .rejected.json                 versions the app rolled back, and why
      .verified.json                 versions hashed whole without a problem, and their files' picture then
      .switch.json                   a link switch under way (the journal, see below)
      .lock                          writers take it (CLI and running apps alike)

Crash consistency (the process may die between any two steps):

- a version is built in ``.staging-<key>-<pid>``, sealed (MANIFEST, fsync,
  read-only) and only then renamed to its real name, so a name in the store
  always holds a complete version; staging left by a dead process is swept;
- a link is replaced by ``os.replace`` of a freshly made link, so it always
  names a complete version;
- a switch moves two links (``previous``, then ``current``), so it is
  journalled first: ``.switch.json`` (written whole, renamed into place)
  says where both go, and the next writer, or ``list``, finishes a switch
  that a dead process left half done. A crash therefore leaves the old state
  or the new one, never ``previous`` and ``current`` out of step.

Besides ``current`` an instance may serve another link (``--model-dir
models/standby`` for a gray-release standby); its previous link is
``<link>.previous``. ``ModelSource`` is what a running app uses: where its
link points now, and pointing it back to a good version. Pure file
operations: no torch here.

**Where the app may go back to** (automatic rollback, replacing a damaged
version, a recovery whose version no longer loads): one rule,
``ModelStore.fallback``: the version the app was serving if it is still
eligible, else the newest eligible version. Eligible: not rejected (rolled
back by an app; ``activate --force`` clears that) and verified (every file
matches its MANIFEST, hashed). ``previous`` is only the ``rollback``
command's hint. When nothing is eligible the app keeps what it serves.

A MANIFEST is data from the disk: a path in it that is absolute, climbs out
with ``..``, or leads outside its version through a link is refused before
anything is read, and so is a version name from a link that is not
``name@version``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from engine.errors import ModelInstallError
from engine.loader import model_dir_problems

__all__ = [
    "ModelStore",
    "Eligibility",
    "ModelSource",
    "VersionInfo",
    "MANIFEST",
    "valid_version_name",
    "quick_check",
    "full_check",
    "weights_bytes",
    "variant_names",
    "VARIANTS_DIR",
    "files_fingerprint",
    "VERIFIED",
]

MANIFEST = "MANIFEST"
REJECTED = ".rejected.json"
# A version whose files still look exactly as when they were last hashed whole (names, sizes, mtimes,
# inodes, ctimes: ctime cannot be set back by any tool) is not hashed again by ``activate``: a hot swap
# then waits for the new worker, not for seconds of SHA-256 (the app hashes it again once it serves).
VERIFIED = ".verified.json"
JOURNAL = ".switch.json"
_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_HASH_CHUNK = 8 * 2**20


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


def previous_link(link: str) -> str:
    return "previous" if link == "current" else f"{link}.previous"


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


def _manifest_created(path: Path) -> str:
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


def _check_files(path: Path, hashed: bool) -> list[str]:
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


def _hashed_picture(path: Path) -> str | None:
    """A digest of what ``.verified.json`` records of a version's files (None: unreadable)."""
    try:
        entries = sorted((str(p.relative_to(path)), st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)
                         for p in Path(path).rglob("*") if p.is_file() for st in [p.stat()])
    except OSError:
        return None
    return hashlib.sha256(repr(entries).encode()).hexdigest()


def quick_check(path: Path) -> list[str]:
    """The cheap check (file names and sizes against the MANIFEST), done at every load."""
    return _check_files(Path(path), hashed=False)


def full_check(path: Path) -> list[str]:
    """The full check: every file hashed against the MANIFEST (seconds per gigabyte)."""
    return _check_files(Path(path), hashed=True)


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


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    # ----- reading ------------------------------------------------------------

    def _link_target(self, link: str) -> str | None:
        path = self.root / link
        return os.readlink(path) if path.is_symlink() else None

    def current(self, link: str = "current") -> str | None:
        return self._link_target(link)

    def previous(self, link: str = "current") -> str | None:
        return self._link_target(previous_link(link))

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
                                     tuple(_check_files(path, hashed)), rejected.get(key, {}).get("reason")))
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
        picture = _hashed_picture(path)
        problems = full_check(path)
        if not problems and picture is not None and picture == _hashed_picture(path):
            self._record_verified(key, picture)
        return problems

    def verified_unchanged(self, key: str) -> bool:
        """``key`` was hashed whole without a problem and its files have not changed since."""
        try:
            recorded = json.loads((self.root / VERIFIED).read_text()).get(key)
        except (OSError, ValueError, AttributeError):
            return False
        return recorded is not None and recorded == _hashed_picture(self.root / key)

    def _record_verified(self, key: str, picture: str) -> None:
        if os.access(self.root, os.W_OK):  # a read-only view of a store: nothing to record
            with self._locked():
                self._write_verified(key, picture)

    def _write_verified(self, key: str, picture: str | None) -> None:
        """Call with the lock held."""
        try:
            verified = json.loads((self.root / VERIFIED).read_text())
        except (OSError, ValueError):
            verified = {}
        verified = {k: v for k, v in verified.items() if (self.root / k).is_dir()}
        if picture is not None:
            verified[key] = picture
        self._write_json(VERIFIED, verified)

    def rejected(self) -> dict[str, dict]:
        try:
            return json.loads((self.root / REJECTED).read_text())
        except (OSError, ValueError):
            return {}

    # ----- writing ------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
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

    def repair(self) -> None:
        """Finish a half-done switch and sweep what dead writers left (``list`` calls it)."""
        if self.root.is_dir() and os.access(self.root, os.W_OK):  # a read-only view is listed as it is
            with self._locked():
                self._sweep()

    def install(self, name: str, version: str, build: Callable[[Path], None]) -> Path:
        """Build a version with ``build(staging_dir)``, seal it, and move it into place."""
        key = valid_version_name(name, version)
        final = self.root / key
        if final.exists() or final.is_symlink():
            raise ModelInstallError(f"{final} already exists; versions are never overwritten. Pick a new --version.")
        with self._locked():
            self._sweep()
        staging = self.root / f".staging-{key}-{os.getpid()}"
        try:
            staging.mkdir()
            build(staging)
            self._write_manifest(staging, name, version)
            self._seal(staging)
            with self._locked():
                if final.exists() or final.is_symlink():  # another installer won the race
                    raise ModelInstallError(f"{final} already exists; versions are never overwritten.")
                os.rename(staging, final)
                _fsync_dir(self.root)
                self._write_verified(key, _hashed_picture(final))  # hashed for its MANIFEST just now
        except BaseException:
            self._make_writable(staging)
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
        problems = quick_check(self.root / key) if self.verified_unchanged(key) else self.verify(key)
        if problems:
            raise ModelInstallError(f"{key} fails verification: {'; '.join(problems[:5])}")
        with self._locked():
            if _check_files(self.root / key, hashed=False):
                raise ModelInstallError(f"{key} changed while it was being verified.")
            old = self.current(link)
            self._switch(link, key)
            if force:
                self._set_rejected(key, None)
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
        with self._locked():
            self._set_rejected(bad, reason)
            if good is None or self.current(link) != bad or not (self.root / good).is_dir():
                return False
            self._switch(link, good)
        return True

    def fallback(self, exclude: tuple[str, ...] = (), prefer: str | None = None,
                 trusted: tuple[str, ...] = ()) -> str | None:
        """The one rule (module doc): ``prefer`` (the version serving) if still eligible, else the
        newest eligible version, skipping ``exclude``. ``trusted`` versions count as verified
        without hashing them again (the app hashed them after loading, and their files have not
        changed since); every other candidate is hashed, newest first, until one passes."""
        rejected = self.rejected()
        newest_first = sorted(self.keys(), key=lambda k: (_manifest_created(self.root / k), k), reverse=True)
        for key in dict.fromkeys(([prefer] if prefer else []) + newest_first):
            if key in exclude or key in rejected or not (self.root / key).is_dir():
                continue
            if key in trusted or not self.verify(key):
                return key
        return None

    def set_immutable(self, key: str) -> str | None:
        """``chattr +i`` on a version; returns why it could not be done (None when done)."""
        path = self.root / key
        if shutil.which("chattr") is None:
            return "the chattr command is not installed (package e2fsprogs)"
        paths = [str(p) for p in sorted(path.rglob("*"), reverse=True)] + [str(path)]
        result = subprocess.run(["chattr", "+i", *paths], capture_output=True, text=True)
        if result.returncode != 0:
            subprocess.run(["chattr", "-i", *paths], capture_output=True)  # all or nothing
            return result.stderr.strip().splitlines()[-1] if result.stderr.strip() else f"exit {result.returncode}"
        return None

    def _switch(self, link: str, target: str) -> None:
        """Point ``link`` at ``target`` and its previous link at the old target (lock held)."""
        old = self.current(link)
        if old == target:
            return
        journal = {"link": link, "from": old, "to": target}
        self._write_json(JOURNAL, journal)
        self._finish_switch(journal)

    def _finish_switch(self, journal: dict) -> None:
        if journal.get("from"):
            self._swap_link(previous_link(journal["link"]), journal["from"])
        self._swap_link(journal["link"], journal["to"])
        (self.root / JOURNAL).unlink()
        _fsync_dir(self.root)

    def _set_rejected(self, key: str, reason: str | None) -> None:
        """Call with the lock held."""
        rejected = self.rejected()
        if reason is None:
            if rejected.pop(key, None) is None:
                return
        else:
            rejected[key] = {"reason": reason, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        self._write_json(REJECTED, rejected)

    def _write_json(self, name: str, data: dict) -> None:
        """Whole or not at all: written to a temporary file, synced, renamed over the old one."""
        tmp = self.root / f".{name.lstrip('.')}.tmp-{os.getpid()}"
        with open(tmp, "w") as f:
            f.write(json.dumps(data, indent=2) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.root / name)
        _fsync_dir(self.root)

    def _swap_link(self, link: str, target: str) -> None:
        tmp = self.root / f".{link}.tmp-{os.getpid()}"
        tmp.unlink(missing_ok=True)
        os.symlink(target, tmp)
        os.replace(tmp, self.root / link)
        _fsync_dir(self.root)

    def _sweep(self) -> None:
        """Remove what processes that died mid-step left behind (call with the lock held)."""
        for p in self.root.iterdir():
            pid = p.name.rpartition("-")[2]
            if p.name.startswith(".") and (".tmp-" in p.name or p.name.startswith(".staging-")):
                if pid.isdigit() and not _pid_alive(int(pid)):
                    self._make_writable(p)
                    if p.is_dir() and not p.is_symlink():
                        shutil.rmtree(p, ignore_errors=True)
                    else:
                        p.unlink(missing_ok=True)

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
    def _seal(path: Path) -> None:
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

    @staticmethod
    def _make_writable(path: Path) -> None:
        if not path.exists() or path.is_symlink():
            return
        os.chmod(path, stat.S_IRWXU)
        for p in path.rglob("*"):
            os.chmod(p, stat.S_IRWXU if p.is_dir() else stat.S_IRUSR | stat.S_IWUSR)


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
