"""Weight formats, a loader concern: which one this machine gets, and making it.

fp32 (the reference), bf16 (fast only with native bf16, and on CUDA) or int8 (``engine.int8``, the
fastest where fbgemm has kernels). ``choose`` turns ``--precision auto`` into a format by a table from
the CPU's flags, measured by ``bench/precision.py`` (docs/benchmarks.md). The decode loop and scorer
never know the format. Why each format: docs/internals.md, "Weights and runtimes".
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path

__all__ = ["Precision", "PrecisionChoice", "choose", "cpu_flags", "quantize_int8", "torch_dtype"]


class Precision(str, Enum):
    AUTO = "auto"
    FP32 = "fp32"
    BF16 = "bf16"
    INT8 = "int8"


@dataclass(frozen=True)
class PrecisionChoice:
    precision: Precision
    reason: str


INT8_FLAGS = ("avx2",)  # fbgemm's int8 kernels (every AVX-512 CPU has AVX2 too)
FAST_INT8_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")  # int8 dot products in one instruction


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The CPU's feature flags (Linux), empty where they cannot be read."""
    try:
        for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def choose(requested: str, device: str = "cpu", flags: frozenset[str] | None = None) -> PrecisionChoice:
    """The format to load: the one asked for, or for ``auto`` the measured table (module doc).

    Raises ``ValueError`` for an unknown name."""
    precision = Precision(requested)
    if precision is not Precision.AUTO:
        return PrecisionChoice(precision, f"--precision {precision.value}")
    if device.startswith("cuda"):
        return PrecisionChoice(Precision.BF16, "auto: a CUDA device computes in bf16 at full speed")
    flags = cpu_flags() if flags is None else flags
    if all(f in flags for f in INT8_FLAGS):
        fast = [f for f in FAST_INT8_FLAGS if f in flags]
        kernels = f"AVX2 and {fast[0]}" if fast else "AVX2"
        return PrecisionChoice(Precision.INT8, f"auto: the CPU has {kernels} for int8 kernels; int8 (per-token "
                                               "activations) is the fastest format that passes the accuracy gate "
                                               "(bench/precision.py)")
    return PrecisionChoice(Precision.FP32, "auto: no AVX2 for int8 kernels on this CPU; fp32, the reference")


def torch_dtype(precision: Precision):
    """The float format the model is loaded in: bf16 for bf16, fp32 otherwise (int8 is made from fp32)."""
    import torch

    return torch.bfloat16 if precision is Precision.BF16 else torch.float32


def quantize_int8(model) -> int:
    """Make every linear layer of a loaded fp32 model int8 (``engine.int8``); returns how many."""
    from engine.int8 import quantize_int8 as quantize

    return quantize(model)
