"""The embedded default model's torch copy: its GGUF converted once into safetensors.

Loading a GGUF through transformers dequantizes every tensor (about 80 s here), so the store keeps a
converted safetensors directory beside the default's GGUF (``engine.catalog.DEFAULT``), loaded in
seconds. Nothing here downloads; every slow step shows progress.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path
from typing import Callable

from engine.catalog import DEFAULT
from engine.errors import ModelInstallError

__all__ = ["DEFAULT_MODEL_NAME", "DEFAULT_MODEL_VERSION", "convert_gguf"]

DEFAULT_MODEL_NAME = DEFAULT.name
DEFAULT_MODEL_VERSION = DEFAULT.version  # the version of its part packages

Progress = Callable[[str], None]


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


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
