"""Weight formats: the choice per machine, and each format loaded and served on the tiny model."""

from __future__ import annotations

import pytest
import torch

from engine.int8 import Int8Linear
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
    for flags in (XEON_VNNI, EPYC_AVX2, EPYC_BF16):  # fbgemm's int8 kernels: the fastest format that passes
        assert choose("auto", flags=flags).precision is Precision.INT8
    assert "avx512_vnni" in choose("auto", flags=EPYC_BF16).reason
    assert choose("auto", flags=frozenset({"sse4_2"})).precision is Precision.FP32  # no int8 kernels
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
    """engine.int8 rests on torch's quantized tensors and fbgemm's dynamic linear (deprecated, still
    shipped in 2.13). If this fails after a torch upgrade, int8 must move to its replacement first."""
    assert "fbgemm" in torch.backends.quantized.supported_engines or "x86" in torch.backends.quantized.supported_engines
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 32)
    x = torch.randn(3, 64)
    assert torch.allclose(Int8Linear.from_linear(linear)(x), linear(x), atol=0.05)


def test_int8_scales_each_token_on_its_own():
    """One token with huge activations (Qwen's first tokens have them) must not crush the others'
    precision, as one scale for the whole input (torch's own dynamic quantization) does."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    torch.manual_seed(0)
    linear = torch.nn.Linear(256, 128)
    x = torch.randn(4, 256)
    x[0] *= 300.0  # an outlier token in the batch
    want = linear(x)[1:]

    def error(layer) -> float:
        with torch.inference_mode():
            return float(((layer(x)[1:] - want).norm() / want.norm()))

    per_tensor = quantize_dynamic(torch.nn.Sequential(linear), {torch.nn.Linear: per_channel_dynamic_qconfig},
                                  dtype=torch.qint8)
    assert error(Int8Linear.from_linear(linear)) < 0.02
    assert error(per_tensor) > 5 * error(Int8Linear.from_linear(linear))  # why engine.int8 scales per token


def test_int8_keeps_a_tied_output_layer_exact(tiny_model_dir):
    """A tied output layer (Qwen2.5's) keeps the fp32 embedding table as its weight: the scorer's
    label rows are exact. An untied one (the tiny model's) gives its rows rounded to int8."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from engine.int8 import quantize_int8
    from engine.loader import load_model

    torch.manual_seed(0)
    tied = Qwen2ForCausalLM(Qwen2Config(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                                        num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True))
    assert quantize_int8(tied) == 7 + 1  # q, k, v, o, gate, up, down, and the output layer
    head, table = tied.get_output_embeddings(), tied.get_input_embeddings().weight
    assert isinstance(head, Int8Linear) and head.weight is table and table.dtype == torch.float32

    untied = load_model(tiny_model_dir, precision="int8").model
    head = untied.get_output_embeddings()
    reference = load_model(tiny_model_dir, precision="fp32").model.get_output_embeddings().weight
    assert isinstance(head, Int8Linear) and not hasattr(head, "weight")
    assert torch.allclose(head.dequantized_rows(list(range(reference.shape[0]))), reference, atol=float(reference.detach().abs().max()) / 100)


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_each_format_serves_the_same_labels_as_fp32(tiny_model_dir, tasks, precision):
    """Loaded, warmed up and answering through the same engine; only the chosen format's weights
    are in memory (no fp32 linear weights left beside the int8 ones, no fp32 copy beside bf16)."""
    from engine.loader import load_model

    reference_handle = load_model(tiny_model_dir, precision="fp32")
    reference_params = sum(p.numel() for p in reference_handle.model.parameters())
    reference = make_engine(reference_handle, tasks)
    handle = load_model(tiny_model_dir, precision=precision)
    engine = make_engine(handle, tasks)
    try:
        assert handle.precision == precision and handle.precision_reason.startswith(f"--precision {precision}")
        if precision == "bf16":
            assert not handle.weights_in_files  # converted at load: the worker's own memory, nothing to copy
            assert {p.dtype for p in handle.model.parameters()} == {torch.bfloat16}
        else:
            # Made at load (this model has no int8 variant: tests/fast/test_variants.py has one): the
            # embedding table and the norms stay fp32, mapped from the files, and the worker copies them.
            assert "quantized at load (the version has no int8 variant)" in handle.precision_reason
            assert handle.weights_in_files
            assert not any(type(m) is torch.nn.Linear for m in handle.model.modules())
            assert any(isinstance(m, Int8Linear) for m in handle.model.modules())
            assert {p.dtype for p in handle.model.parameters()} == {torch.float32}  # no fp32 linear weights left
            assert sum(p.numel() for p in handle.model.parameters()) < 0.5 * reference_params
        expected = reference.classify("sentiment", TEXTS)
        got = engine.classify("sentiment", TEXTS)
        for want, have in zip(expected, got):
            assert have.label in ("positive", "negative")
            assert have.confidence == pytest.approx(want.confidence, abs=0.05)
        assert engine.chat("chat", "Hello").text  # the decode loop runs on it too
    finally:
        reference.close()
        engine.close()
