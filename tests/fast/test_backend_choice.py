"""``--backend``: which runtime serves a version, and why (no model is loaded here)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from engine.backends import BackendKind, choose_backend
from engine.errors import ModelUnavailable
from ops.serving.config import load_config


def copy_without(src, dst, suffix):
    shutil.copytree(src, dst)
    for path in dst.iterdir():
        if path.suffix == suffix:
            path.unlink()
    return dst


VNNI = frozenset({"avx2", "fma", "f16c", "avx512f", "avx512_vnni"})
AVX2 = frozenset({"avx2", "fma", "f16c"})
BIG, SMALL = 24 * 2**30, 4 * 2**30


@pytest.mark.parametrize("flags", [VNNI, AVX2])
def test_auto_serves_a_class_on_the_runtime_measured_faster_for_the_cpu(tiny_model_dir, flags):
    choice = choose_backend("auto", tiny_model_dir, installed=True, flags=flags, memory=BIG)
    assert choice.kind is BackendKind.TORCH  # both rows of the table: docs/benchmarks.md, "Classroom speed"
    assert "class of 20" in choice.reason and "--backend llamacpp" in choice.reason


def test_auto_gives_a_small_machine_the_smaller_worker(tiny_model_dir):
    choice = choose_backend("auto", tiny_model_dir, installed=True, flags=VNNI, memory=SMALL)
    assert choice.kind is BackendKind.LLAMACPP and "4.0 GiB" in choice.reason


@pytest.mark.parametrize("precision, device, installed, flags, why", [
    ("auto", "cpu", False, VNNI, "the llama.cpp library (xllamacpp) is not installed"),
    ("int8", "cpu", True, VNNI, "--precision int8 is a torch weight format"),
    ("auto", "cuda", True, VNNI, "the device is cuda"),
    ("auto", "cpu", True, frozenset({"avx", "sse4_2"}), "the CPU lacks avx2, fma, f16c"),
])
def test_auto_picks_torch_and_says_which_condition_decided(tiny_model_dir, precision, device, installed, flags, why):
    choice = choose_backend("auto", tiny_model_dir, precision, device, installed=installed, flags=flags, memory=SMALL)
    assert choice.kind is BackendKind.TORCH and why in choice.reason


def test_auto_serves_a_version_by_the_weights_it_has(tiny_model_dir, tmp_path):
    no_gguf = copy_without(tiny_model_dir, tmp_path / "no-gguf", ".gguf")
    assert choose_backend("auto", no_gguf, installed=True, memory=SMALL).kind is BackendKind.TORCH
    assert "has no GGUF" in choose_backend("auto", no_gguf, installed=True).reason
    gguf_only = copy_without(tiny_model_dir, tmp_path / "gguf-only", ".safetensors")
    assert choose_backend("auto", gguf_only, installed=True, memory=BIG).kind is BackendKind.LLAMACPP


def test_a_runtime_that_cannot_read_the_version_is_refused_naming_the_other(tiny_model_dir, tmp_path):
    with pytest.raises(ModelUnavailable, match="--backend torch"):
        choose_backend("llamacpp", copy_without(tiny_model_dir, tmp_path / "no-gguf", ".gguf"))
    with pytest.raises(ModelUnavailable, match="--backend llamacpp"):
        choose_backend("torch", copy_without(tiny_model_dir, tmp_path / "gguf-only", ".safetensors"))
    with pytest.raises(ModelUnavailable, match="Unknown backend"):
        choose_backend("onnx", tiny_model_dir)


def test_the_flag_takes_llamacpp_and_refuses_a_torch_format_with_it():
    assert load_config(["--backend", "llamacpp"], environ={}).backend == "llamacpp"
    from engine.errors import ConfigError

    with pytest.raises(ConfigError, match="torch weight format"):
        load_config(["--backend", "llamacpp", "--precision", "int8"], environ={})


def test_the_numpy_head_is_the_torch_head():
    """The llamacpp backend applies a task's head in numpy: the same numbers as torch's."""
    import torch

    from engine.backends.llamacpp_scoring import NumpyHead
    from engine.backends.torch_head import LinearHead

    rng = np.random.default_rng(0)
    weight, bias = rng.standard_normal((3, 10)).tolist(), rng.standard_normal(3).tolist()
    hidden, logprobs = rng.standard_normal((4, 7)).astype(np.float32), rng.standard_normal((4, 3))
    head = type("Head", (), {"weight": weight, "bias": bias, "layer": None})
    ours = NumpyHead(head).log_probs(hidden, logprobs)
    theirs = LinearHead(head).log_probs(torch.from_numpy(hidden), torch.from_numpy(logprobs).float())
    np.testing.assert_allclose(ours, theirs.numpy(), atol=1e-5)
    on_a_layer = type("Head", (), {"weight": np.asarray(weight)[:, :7].tolist(), "bias": bias, "layer": 3})
    ours = NumpyHead(on_a_layer).log_probs(hidden)
    theirs = LinearHead(on_a_layer).log_probs(torch.from_numpy(hidden))
    np.testing.assert_allclose(ours, theirs.numpy(), atol=1e-5)
