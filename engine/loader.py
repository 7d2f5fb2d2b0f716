"""Load a chat model from a local directory, and only from there.

Rules: ``local_files_only=True`` and the hub switched off before transformers
is imported, so a missing model is a clear ``ModelNotFound`` naming the path
and the install command, never a download. The dtype is chosen per device by
measurement (``docs/benchmarks.md``): fp32 on this CPU, bf16 on CUDA.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import ModelNotFound, ModelUnavailable

__all__ = ["ModelHandle", "load_model", "describe_model_dir", "INSTALL_HINT"]

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
    dtype: str
    device: str
    load_seconds: float

    @property
    def label(self) -> str:
        return f"{self.name}@{self.version}"


def describe_model_dir(model_dir: Path) -> tuple[str, str]:
    """(name, version) of a model directory: ``models/<name>@<version>`` or the folder name."""
    resolved = Path(model_dir).resolve()
    name, sep, version = resolved.name.partition("@")
    return (name, version) if sep else (resolved.name, "local")


def _check_dir(model_dir: Path) -> None:
    if not model_dir.exists():
        raise ModelNotFound(f"No model at {model_dir}. {INSTALL_HINT}")
    if not model_dir.is_dir() or not (model_dir / "config.json").is_file():
        raise ModelNotFound(f"{model_dir} is not a model directory (no config.json). {INSTALL_HINT}")
    if not any(p.name.endswith(_WEIGHT_SUFFIXES) for p in model_dir.iterdir()):
        raise ModelNotFound(f"{model_dir} holds no weights (*.safetensors). {INSTALL_HINT}")


def _pick_dtype(requested: str, device: str):
    import torch

    if requested == "auto":
        # Measured (bench/dtype_speed.py): on CPUs without bf16 matrix units fp32
        # is faster than bf16; on CUDA bf16 halves memory at no cost in speed.
        requested = "bfloat16" if device.startswith("cuda") else "float32"
    try:
        return getattr(torch, requested), requested
    except AttributeError:
        raise ModelUnavailable(f"Unknown dtype {requested!r}; use auto, float32, bfloat16 or float16.") from None


def load_model(model_dir: Path, dtype: str = "auto", device: str = "cpu") -> ModelHandle:
    """Load tokenizer and causal LM from ``model_dir``; every failure is a ``ModelUnavailable``."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    model_dir = Path(model_dir)
    _check_dir(model_dir)
    started = time.monotonic()
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        torch_dtype, dtype_name = _pick_dtype(dtype, device)
        tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        if not getattr(tokenizer, "chat_template", None):
            raise ModelNotFound(f"{model_dir} has no chat template; a chat model is needed. {INSTALL_HINT}")
        model = AutoModelForCausalLM.from_pretrained(
            model_dir, dtype=torch_dtype, low_cpu_mem_usage=True, local_files_only=True
        )
        model.to(device).eval()
    except ModelUnavailable:
        raise
    except Exception as exc:  # translate library errors at the boundary
        raise ModelUnavailable(f"Loading the model at {model_dir} failed: {exc}. {INSTALL_HINT}") from exc
    name, version = describe_model_dir(model_dir)
    return ModelHandle(
        model=model,
        tokenizer=tokenizer,
        name=name,
        version=version,
        path=model_dir.resolve(),
        dtype=dtype_name,
        device=device,
        load_seconds=time.monotonic() - started,
    )
