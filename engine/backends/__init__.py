"""Model runtimes behind the seam in ``engine.backend``; the scheduler knows none of them by name.

``choose_backend`` turns ``--backend`` (``torch``, ``llamacpp`` or ``auto``) into a runtime, with the
reason; ``open_backend`` is the one place that maps a runtime to its module, so a new runtime is one
new module here and one line below. How ``auto`` chooses: docs/internals.md, "Weights and runtimes".
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from engine.backend import Backend
from engine.errors import ModelUnavailable
from engine.loader import gguf_file, has_torch_weights
from engine.precision import cpu_flags
from engine.types import EngineConfig

__all__ = ["BackendChoice", "BackendKind", "LLAMACPP_CPU_FLAGS", "LLAMACPP_GATE", "choose_backend", "open_backend"]


class BackendKind(str, Enum):
    AUTO = "auto"
    TORCH = "torch"
    LLAMACPP = "llamacpp"


def total_memory(meminfo: Path = Path("/proc/meminfo")) -> int | None:
    """Bytes of memory the machine has (Linux's MemTotal), ``None`` where unknown."""
    try:
        for line in meminfo.read_text(encoding="utf-8").splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


@dataclass(frozen=True)
class BackendChoice:
    kind: BackendKind
    reason: str


@dataclass(frozen=True)
class GateVerdict:
    passed: bool
    detail: str


# The accuracy gate the weight formats pass (sentiment within 1 point of torch fp32 on every shared file, chat
# within 2 questions), measured for llama.cpp on the default model's Q4_K_M GGUF on 2026-12-02 (bench/peer.py and
# bench/precision.py; docs/benchmarks.md, "llama.cpp backend": at most 0.7 points from fp32, chat equal).
LLAMACPP_GATE = GateVerdict(True, "llama.cpp passed the accuracy gate (docs/benchmarks.md)")


# What the prebuilt llama.cpp library (xllamacpp's manylinux wheel) was compiled for: it uses these
# instructions unconditionally.
LLAMACPP_CPU_FLAGS = ("avx2", "fma", "f16c")


@dataclass(frozen=True)
class ClassRow:
    """One kind of CPU (all of ``flags``), the runtime that served a class faster there, and the evidence."""

    flags: tuple[str, ...]
    kind: "BackendKind"
    evidence: str


# The first row whose flags the CPU has decides (docs/benchmarks.md, "Classroom speed"). Both runtimes
# exit early and prefill in chunks. llama.cpp's prebuilt library is AVX2 code, and its batched matrix
# products (prefill, classification, several chats) are 3x slower than torch's int8 kernels with VNNI;
# it decodes one chat twice as fast (--backend llamacpp for a one-person demo).
CLASS_TABLE = (
    ClassRow(("avx512_vnni",), BackendKind.TORCH,
             "torch int8 served a class of 20 faster (sentiment p95 2.75 s against 3.83 s, AMD EPYC with "
             "AVX-512 VNNI, 2026-12-06)"),
    ClassRow(("avx2",), BackendKind.TORCH,
             "torch int8 served a class of 20 faster (sentiment p95 5.9 s against 8.4 s, AMD EPYC with AVX2 "
             "only, 2026-12-06, before early exit)"),
)
SMALL_MACHINE_BYTES = 6 * 2**30  # less memory in all: llama.cpp (a 0.75-1 GiB worker; torch int8's app 1.9 GiB)


def llama_cpp_installed() -> bool:
    """Whether the llama.cpp library is installed (found, not loaded)."""
    from engine.backends.llama_capi import library_path

    return library_path() is not None


def choose_backend(requested: str, model_dir: Path, precision: str = "auto", device: str = "cpu",
                   installed: bool | None = None, flags: frozenset[str] | None = None,
                   memory: int | None = None) -> BackendChoice:
    """The runtime for ``model_dir``: the one asked for, or ``auto``'s pick (docs/internals.md), with why.

    ``ModelUnavailable`` when the runtime asked for cannot serve this version."""
    try:
        kind = BackendKind(requested)
    except ValueError:
        raise ModelUnavailable(f"Unknown backend {requested!r}; use auto, torch or llamacpp.") from None
    installed = llama_cpp_installed() if installed is None else installed
    gguf = gguf_file(model_dir)
    if kind is BackendKind.TORCH:
        if not has_torch_weights(model_dir) and gguf is not None:
            raise ModelUnavailable(f"{model_dir} holds only a GGUF ({gguf.name}); the torch backend needs "
                                   "safetensors. Serve it with --backend llamacpp.")
        return BackendChoice(kind, "--backend torch")
    if kind is BackendKind.LLAMACPP:
        if gguf is None:
            raise ModelUnavailable(f"{model_dir} has no GGUF file for --backend llamacpp; serve it with "
                                   "--backend torch, or install a version that has one.")
        return BackendChoice(kind, "--backend llamacpp")
    if not has_torch_weights(model_dir) and gguf is not None:
        return BackendChoice(BackendKind.LLAMACPP, f"auto: the version holds only a GGUF ({gguf.name})")
    flags = cpu_flags() if flags is None else flags
    why_not = None
    if device != "cpu":
        why_not = f"the device is {device}"
    elif precision != "auto":
        why_not = f"--precision {precision} is a torch weight format"
    elif gguf is None:
        why_not = "the version has no GGUF"
    elif not installed:
        why_not = "the llama.cpp library (xllamacpp) is not installed (make setup)"
    elif missing := [f for f in LLAMACPP_CPU_FLAGS if f not in flags]:
        why_not = f"the CPU lacks {', '.join(missing)}, which the prebuilt llama.cpp needs"
    elif not LLAMACPP_GATE.passed:
        why_not = LLAMACPP_GATE.detail
    if why_not is not None:
        return BackendChoice(BackendKind.TORCH, f"auto: torch, because {why_not}")
    memory = total_memory() if memory is None else memory
    if memory is not None and memory < SMALL_MACHINE_BYTES:
        return BackendChoice(BackendKind.LLAMACPP, f"auto: llama.cpp, because this machine has {memory / 2**30:.1f} "
                                                   "GiB of memory and its worker is half the size of torch's")
    row = next((row for row in CLASS_TABLE if all(f in flags for f in row.flags)), None)
    if row is None or row.kind is BackendKind.LLAMACPP:
        return BackendChoice(BackendKind.LLAMACPP, f"auto: llama.cpp, the faster runtime for a class on this CPU"
                                                   f"{f' ({row.evidence})' if row else ''}")
    return BackendChoice(BackendKind.TORCH, f"auto: torch, because on this CPU {row.evidence}; --backend llamacpp "
                                            "decodes one chat faster")


def open_backend(kind: str, model_dir: Path, precision: str = "auto", device: str = "cpu",
                 limits: EngineConfig | None = None) -> Backend:
    """Load ``model_dir`` into the runtime ``kind`` picks (``choose_backend``); ``limits`` size the
    llamacpp backend's context."""
    choice = choose_backend(kind, model_dir, precision, device)
    if choice.kind is BackendKind.LLAMACPP:
        from engine.backends.llamacpp_backend import LlamaCppBackend

        return LlamaCppBackend(model_dir, limits or EngineConfig(), choice.reason)
    from engine.backends.torch_backend import TorchBackend
    from engine.loader import load_model

    return TorchBackend(load_model(model_dir, precision=precision, device=device), choice.reason)
