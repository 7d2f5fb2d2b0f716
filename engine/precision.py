"""Weight formats, a loader concern: which one this machine gets, and making it.

Decoding reads every weight once per step, so its speed is set by the bytes
of the weights: fp32 (4 bytes each), bf16 (2) or int8 (1, plus one fp32
scale per output channel). Which format is fastest *and* keeps the answers
depends on the CPU:

- bf16 is fast only where the CPU multiplies bf16 natively (AVX512_BF16 or
  AMX); elsewhere it is converted on the fly and slower than fp32.
- int8: the weights of every linear layer (the output layer too) are int8
  with a scale per output channel, and the inputs are quantized per call
  (torch's dynamic quantization, ``engine.int8``). Fast where the CPU has
  int8 dot products (VNNI); the rounding of the inputs is what may move
  answers, which the gate measures. (Weight-only int8, torch's
  ``_weight_int8pack_mm``, was measured too: 2.3x *slower* than fp32 here.)

``choose`` turns ``--precision auto`` into a format by a table from the CPU's
flags; the table is what ``bench/precision.py`` measured (speed, and the
accuracy gate: sentiment within 1 point of fp32 on every shared file, chat
within 2 questions), recorded in ``docs/benchmarks.md``: bf16 where the CPU
has AVX512_BF16 or AMX (it passes; 1.8x fp32's decode), else fp32 (int8
fails the gate on the default model). The decode loop and the scorer never
know which format they run.
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


BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # the CPU multiplies bf16 itself
INT8_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")  # int8 dot products


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
    bf16 = [f for f in BF16_FLAGS if f in flags]
    if bf16:
        return PrecisionChoice(Precision.BF16, f"auto: the CPU has {bf16[0]}; bf16 is the fastest format that "
                                                "passes the accuracy gate (bench/precision.py)")
    # int8 is faster still on VNNI CPUs but fails the gate on the default model (2.4-5.7 points of
    # sentiment, 3 chat questions); bf16 without the CPU's own bf16 arithmetic is slower than fp32.
    return PrecisionChoice(Precision.FP32, "auto: no bf16 arithmetic on this CPU, and int8 fails the accuracy "
                                           "gate (bench/precision.py)")


def torch_dtype(precision: Precision):
    """The float format the model is loaded in: bf16 for bf16, fp32 otherwise (int8 is made from fp32)."""
    import torch

    return torch.bfloat16 if precision is Precision.BF16 else torch.float32


def quantize_int8(model) -> int:
    """Make every linear layer of a loaded fp32 model int8 (``engine.int8``); returns how many."""
    from engine.int8 import quantize_int8 as quantize

    return quantize(model)
