"""A model version's int8 variant: made once when the version is installed, loaded in seconds.

Beside a version's safetensors, under the same MANIFEST: ``variants/int8/model.safetensors``, every
linear layer as int8 rows and scales (``engine.int8.quantize_rows``), other weights fp32, the scheme
named in its metadata. Loading builds the modules empty and reads the tensors into the worker's own
memory; the answers are the same as int8 made at load. docs/internals.md has the why.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from engine.safetensors_header import read_header

__all__ = ["INT8_VARIANT", "SCHEME", "make_int8_variant", "int8_variant_problem", "load_int8_variant"]

INT8_VARIANT = Path("variants") / "int8" / "model.safetensors"  # relative to the version's directory
SCHEME = "int8-rows-per-channel+per-token-v1"  # engine.int8's scheme; change it when the stored form changes
_ROWS, _SCALES = ".int8_rows", ".int8_scales"


def _say(message: str) -> None:
    print(message, flush=True)


def make_int8_variant(model_dir: Path, say: Callable[[str], None] = _say) -> Path:
    """Write ``model_dir``'s int8 variant (from its fp32 safetensors) and return its path."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM

    from engine.int8 import quantize_rows

    started = time.monotonic()
    say("Making the int8 variant (once, so that int8 loads skip quantizing)...")
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, low_cpu_mem_usage=True,
                                                 local_files_only=True)
    tensors: dict[str, torch.Tensor] = {}
    linear_params: set[int] = set()
    for name, module in model.named_modules():
        if type(module) is torch.nn.Linear:
            rows, scales = quantize_rows(module.weight)
            tensors[name + _ROWS], tensors[name + _SCALES] = rows, scales
            if module.bias is not None:
                tensors[name + ".bias"] = module.bias.detach().contiguous()
            linear_params.update(id(p) for p in module.parameters())
    embedding = model.get_input_embeddings().weight
    for name, param in model.named_parameters():  # named_parameters lists a tied table once
        if id(param) not in linear_params or param is embedding:
            tensors[name] = param.detach().contiguous()
    out = Path(model_dir) / INT8_VARIANT
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, out, metadata={"scheme": SCHEME})
    say(f"int8 variant written ({out.stat().st_size / 1e6:.0f} MB) in {time.monotonic() - started:.0f} s.")
    return out


def int8_variant_problem(model_dir: Path) -> str | None:
    """Why ``model_dir``'s int8 variant cannot be used (None when it can); torch-free, header only."""
    path = Path(model_dir) / INT8_VARIANT
    if not path.is_file():
        return "the version has no int8 variant"
    try:
        with open(path, "rb") as f:
            header, _ = read_header(f)
        scheme = (header.get("__metadata__") or {}).get("scheme")
    except (OSError, ValueError, AttributeError) as exc:
        return f"its int8 variant is unreadable ({exc})"
    if scheme != SCHEME:
        return f"its int8 variant is of scheme {scheme!r}, this engine reads {SCHEME!r}"
    return None


class _TensorFile:
    """A safetensors file read with plain reads into tensors of our own: nothing of it stays mapped,
    so the process's peak memory is the model plus what is being packed, not the file on top."""

    _DTYPES = {"I8": "int8", "F64": "float64", "F32": "float32", "BF16": "bfloat16", "F16": "float16"}

    def __init__(self, path: Path) -> None:
        self._file = open(path, "rb")
        self._header, self._base = read_header(self._file)
        self._header.pop("__metadata__", None)

    def names(self) -> set[str]:
        return set(self._header)

    def get(self, name: str):
        import torch

        entry = self._header[name]
        start, end = entry["data_offsets"]
        tensor = torch.empty(entry["shape"], dtype=getattr(torch, self._DTYPES[entry["dtype"]]))
        self._file.seek(self._base + start)
        if self._file.readinto(tensor.view(-1).view(torch.uint8).numpy()) != end - start:
            raise ValueError(f"the int8 variant ends inside {name}")
        return tensor

    def close(self) -> None:
        self._file.close()


_PACK_GROUP_BYTES = 64 * 2**20  # int8 rows read ahead of the packing: bounds the load's peak memory


def load_int8_variant(model_dir: Path):
    """The int8 model from ``model_dir``'s variant (check ``int8_variant_problem`` first)."""
    import torch
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig

    from engine.int8 import Int8Linear, pack_layers, use_quantized_engine

    model_dir = Path(model_dir)
    config = AutoConfig.from_pretrained(model_dir, local_files_only=True)
    with init_empty_weights():  # parameters on the meta device, buffers (rotary tables) made as usual
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    if (model_dir / "generation_config.json").is_file():
        model.generation_config = GenerationConfig.from_pretrained(model_dir, local_files_only=True)
    use_quantized_engine()
    stored = _TensorFile(model_dir / INT8_VARIANT)
    try:
        names = stored.names()
        model.load_state_dict({name: stored.get(name) for name in names
                               if not name.endswith((_ROWS, _SCALES)) and not _is_linear_bias(name, names)},
                              strict=False, assign=True)
        embedding = model.get_input_embeddings().weight
        head = model.get_output_embeddings() if getattr(config, "tie_word_embeddings", False) else None
        linears = [(name, module) for name, module in model.named_modules() if type(module) is torch.nn.Linear]
        while linears:  # a group of layers at a time: read, pack (pack_layers copies), let the rows go
            group, size = [], 0
            while linears and (not group or size < _PACK_GROUP_BYTES):
                name, module = linears.pop(0)
                group.append((name, module, stored.get(name + _ROWS), stored.get(name + _SCALES)))
                size += group[-1][2].numel()
            packed = pack_layers([(rows, scales) for _, _, rows, scales in group])
            for (name, module, _, _), slices in zip(group, packed):
                bias = stored.get(name + ".bias") if name + ".bias" in names else None
                layer = Int8Linear(slices, module.in_features, module.out_features, bias,
                                   tied_weight=embedding if module is head else None)
                parent_name, _, child_name = name.rpartition(".")
                setattr(model.get_submodule(parent_name), child_name, layer)
    finally:
        stored.close()
    missing = [name for name, p in model.named_parameters() if p.device.type == "meta"]
    if missing:
        raise ValueError(f"the int8 variant lacks {len(missing)} weights, e.g. {missing[0]}")
    return model.eval()


def _is_linear_bias(name: str, stored: set[str]) -> bool:
    return name.endswith(".bias") and name[: -len(".bias")] + _ROWS in stored
