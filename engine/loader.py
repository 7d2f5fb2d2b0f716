"""Load a chat model from a local directory, and only from there.

``local_files_only=True`` and the hub off before transformers is imported: a missing model is a clear
``ModelNotFound`` naming the path and the install command, never a download. The weights' format is
chosen by ``engine.precision`` and made here; int8 comes from the version's int8 variant where the
store made one (``engine.variants``), else from the fp32 files.
"""

from __future__ import annotations

import ctypes
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import ModelNotFound, ModelUnavailable
from engine.precision import Precision, choose, quantize_int8, torch_dtype
from engine.safetensors_header import read_header
from engine.variants import int8_variant_problem, load_int8_variant

__all__ = ["ModelHandle", "load_model", "describe_model_dir", "model_dir_problems", "check_model_dir", "gguf_file",
           "has_torch_weights", "INSTALL_HINT"]

INSTALL_HINT = "Install the default model with: python -m ops.models install-default (or start with --model-dir DIR)"
_WEIGHT_SUFFIXES = (".safetensors", ".bin")


@dataclass(frozen=True)
class ModelHandle:
    """A loaded model and its tokenizer, with where they came from."""

    model: Any
    tokenizer: Any
    name: str
    version: str
    path: Path
    precision: str  # fp32, bf16 or int8
    precision_reason: str
    device: str
    load_seconds: float
    weights_in_files: bool  # float weights are still the model files' pages (safetensors in the loaded dtype, mapped)

    @property
    def label(self) -> str:
        return f"{self.name}@{self.version}"


def describe_model_dir(model_dir: Path) -> tuple[str, str]:
    """(name, version) of a model directory: ``models/<name>@<version>`` or the folder name."""
    resolved = Path(model_dir).resolve()
    name, sep, version = resolved.name.partition("@")
    return (name, version) if sep else (resolved.name, "local")


def _safetensors_problem(path: Path) -> str | None:
    """A truncated or garbled safetensors file, found from its header alone (no torch)."""
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            header, data_start = read_header(f)
        end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
    except (ValueError, KeyError, TypeError, IndexError):
        return f"{path.name}: not a safetensors file"
    if data_start + end != size:
        return f"{path.name}: {size} bytes, its header describes {data_start + end} (truncated?)"
    return None


def gguf_file(model_dir: Path) -> Path | None:
    """The version's GGUF for the llamacpp backend (a ``*.gguf`` at its top level), if it has one."""
    found = sorted(Path(model_dir).glob("*.gguf"))
    return found[0] if found else None


def has_torch_weights(model_dir: Path) -> bool:
    """Whether the directory holds weights the torch backend reads (safetensors or .bin)."""
    return any(p.suffix in _WEIGHT_SUFFIXES for p in Path(model_dir).iterdir())


def _gguf_problem(path: Path) -> str | None:
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as exc:
        return f"{path.name}: not readable ({exc})"
    return None if magic == b"GGUF" else f"{path.name}: not a GGUF file"


def model_dir_problems(model_dir: Path) -> list[str]:
    """Why ``model_dir`` is not a loadable chat model directory (empty when it looks loadable).

    Cheap and torch-free: it reads config.json, the safetensors headers and the tokenizer
    files' names, so the store can refuse a bad source before copying gigabytes. A directory
    with a GGUF and no torch weights is a version for the llamacpp backend alone: its GGUF
    carries the tokenizer and the chat template, so only the file's magic is checked.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        return [f"{model_dir} is not a directory"]
    gguf = gguf_file(model_dir)
    if gguf is not None and not has_torch_weights(model_dir):
        return [p for p in (_gguf_problem(gguf),) if p]
    names = {p.name for p in model_dir.iterdir()}
    problems = []
    try:
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
        if not isinstance(config, dict) or "model_type" not in config:
            problems.append("config.json names no model_type")
    except FileNotFoundError:
        problems.append("no config.json")
    except (OSError, ValueError) as exc:
        problems.append(f"config.json is not readable JSON ({exc})")
    weights = sorted(model_dir / n for n in names if n.endswith(_WEIGHT_SUFFIXES))
    if not weights:
        problems.append("no weights (*.safetensors, *.bin, or a *.gguf for the llamacpp backend)")
    problems += [p for w in weights if w.suffix == ".safetensors" and (p := _safetensors_problem(w))]
    if not names & {"tokenizer.json", "tokenizer.model", "vocab.json"}:
        problems.append("no tokenizer (tokenizer.json, tokenizer.model or vocab.json)")
    template_in_config = False
    try:
        template_in_config = "chat_template" in (model_dir / "tokenizer_config.json").read_text(encoding="utf-8")
    except OSError:
        pass
    if not template_in_config and not names & {"chat_template.jinja", "chat_template.json"}:
        problems.append("no chat template (a chat model is needed)")
    return problems


def check_model_dir(model_dir: Path) -> None:
    """Raise ``ModelNotFound`` (naming the path and the install command) unless ``model_dir`` looks loadable."""
    if not model_dir.exists():
        raise ModelNotFound(f"No model at {model_dir}. {INSTALL_HINT}")
    problems = model_dir_problems(model_dir)
    if problems:
        raise ModelNotFound(f"{model_dir} is not a usable model directory: {'; '.join(problems)}. {INSTALL_HINT}")


def load_model(model_dir: Path, precision: str = "auto", device: str = "cpu") -> ModelHandle:
    """Load tokenizer and causal LM from ``model_dir``; every failure is a ``ModelUnavailable``."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    # Resolved once, so a ``current`` link switched during the load cannot mix two versions'
    # files, and the handle names the version really loaded.
    model_dir = Path(model_dir).resolve()
    check_model_dir(model_dir)
    try:
        choice = choose(precision, device)
    except ValueError:
        raise ModelUnavailable(f"Unknown precision {precision!r}; use auto, fp32, bf16 or int8.") from None
    started = time.monotonic()
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        if not getattr(tokenizer, "chat_template", None):
            raise ModelNotFound(f"{model_dir} has no chat template; a chat model is needed. {INSTALL_HINT}")
        variant_problem = int8_variant_problem(model_dir) if choice.precision is Precision.INT8 else None
        from_variant = choice.precision is Precision.INT8 and variant_problem is None
        if from_variant:
            model = load_int8_variant(model_dir)  # the store's int8 variant: no quantizing, no fp32 copy
            reason = f"{choice.reason}; int8 weights from the version's int8 variant"
        else:
            model = AutoModelForCausalLM.from_pretrained(
                model_dir, dtype=torch_dtype(choice.precision), low_cpu_mem_usage=True, local_files_only=True
            )
            model.to(device).eval()
            reason = choice.reason
            if choice.precision is Precision.INT8:
                quantize_int8(model)
                reason += f"; quantized at load ({variant_problem})"
    except ModelUnavailable:
        raise
    except Exception as exc:  # translate library errors at the boundary
        raise ModelUnavailable(f"Loading the model at {model_dir} failed: {exc}. {INSTALL_HINT}") from exc
    _return_freed_memory()
    name, version = describe_model_dir(model_dir)
    return ModelHandle(
        model=model,
        tokenizer=tokenizer,
        name=name,
        version=version,
        path=model_dir,
        precision=choice.precision.value,
        precision_reason=reason,
        device=device,
        load_seconds=time.monotonic() - started,
        weights_in_files=not from_variant and _stored_as(model_dir, choice.precision),
    )


def _return_freed_memory() -> None:
    """Hand the load's freed buffers back to the system (glibc keeps large freed blocks for reuse:
    measured 170 MB of int8 rows read and packed, then held on to by the int8 variant's load)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass


def _stored_as(model_dir: Path, precision: Precision) -> bool:
    """Whether the safetensors files hold this format already (then transformers maps them, no copy)."""
    # int8 is made from fp32, and keeps its embedding table and norms in fp32: mapped from F32 files.
    wanted = {Precision.FP32: "F32", Precision.BF16: "BF16", Precision.INT8: "F32"}[precision]
    for path in model_dir.glob("*.safetensors"):
        try:
            with open(path, "rb") as f:
                header, _ = read_header(f)
        except (OSError, ValueError):
            return True  # cannot tell: assume mapped, so the worker copies (the safe side)
        if any(t.get("dtype") != wanted for k, t in header.items() if k != "__metadata__"):
            return False
    return True
