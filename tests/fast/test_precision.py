"""Weight formats: the choice per machine, and each format loaded and served on the tiny model."""

from __future__ import annotations

import pytest
import torch

from engine.precision import Precision, choose, cpu_flags
from tests.conftest import make_engine

TEXTS = ["I love it", "The room was dirty.", "服务很好", "A much longer sentence about the food and the staff."]
XEON_VNNI = frozenset({"avx2", "avx512f", "avx512_vnni"})
EPYC_AVX2 = frozenset({"avx2", "fma"})
EPYC_BF16 = frozenset({"avx2", "avx512f", "avx512_vnni", "avx512_bf16"})


def test_an_explicit_precision_is_taken_as_asked():
    for name in ("fp32", "bf16", "int8"):
        choice = choose(name, flags=EPYC_AVX2)
        assert choice.precision is Precision(name) and choice.reason == f"--precision {name}"


def test_auto_follows_the_cpu_and_says_why():
    for flags in (XEON_VNNI, EPYC_AVX2, EPYC_BF16, frozenset()):
        choice = choose("auto", flags=flags)
        assert choice.precision is not Precision.AUTO and choice.reason.startswith("auto: ")
    assert choose("auto", flags=EPYC_AVX2).precision is Precision.FP32  # nothing faster passes the gate there
    assert choose("auto", device="cuda").precision is Precision.BF16


def test_an_unknown_precision_is_refused():
    with pytest.raises(ValueError):
        choose("fp8")


def test_cpu_flags_come_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512_bf16\n\nprocessor\t: 1\nflags\t\t: fpu avx2\n")
    assert cpu_flags(info) == {"fpu", "avx2", "avx512_bf16"}
    assert cpu_flags(tmp_path / "missing") == frozenset()


def test_torch_still_ships_the_int8_kernels_this_project_uses():
    """engine.int8 rests on torch.ao's dynamic quantization (deprecated, still shipped in 2.13).
    If this fails after a torch upgrade, int8 must move to its replacement before anything else."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    linear = torch.nn.Linear(64, 32)
    quantized = quantize_dynamic(torch.nn.Sequential(linear), {torch.nn.Linear: per_channel_dynamic_qconfig},
                                 dtype=torch.qint8)
    x = torch.randn(3, 64)
    assert torch.allclose(quantized(x), linear(x), atol=0.05)


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_each_format_serves_the_same_labels_as_fp32(tiny_model_dir, tasks, precision):
    """Loaded, warmed up and answering through the same engine; only the chosen format's weights
    are in memory (no fp32 linear weights left beside the int8 ones, no fp32 copy beside bf16)."""
    from engine.loader import load_model

    reference = make_engine(load_model(tiny_model_dir, precision="fp32"), tasks)
    handle = load_model(tiny_model_dir, precision=precision)
    engine = make_engine(handle, tasks)
    try:
        assert handle.precision == precision and handle.precision_reason == f"--precision {precision}"
        assert not handle.weights_in_files  # made at load: the worker's own memory, nothing to copy
        if precision == "bf16":
            assert {p.dtype for p in handle.model.parameters()} == {torch.bfloat16}
        else:
            assert not any(type(m) is torch.nn.Linear for m in handle.model.modules())
            assert any("quantized" in type(m).__module__ for m in handle.model.modules())
        expected = reference.classify("sentiment", TEXTS)
        got = engine.classify("sentiment", TEXTS)
        for want, have in zip(expected, got):
            assert have.label in ("positive", "negative")
            assert have.confidence == pytest.approx(want.confidence, abs=0.05)
        assert engine.chat("chat", "Hello").text  # the decode loop runs on it too
    finally:
        reference.close()
        engine.close()
