"""The int8 variant a version carries in the store (engine.variants): made at install, under the
MANIFEST, and loaded into exactly the model that quantizing at load makes, without the fp32 weights."""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from engine.int8 import Int8Linear
from engine.loader import load_model
from engine.variants import INT8_VARIANT, SCHEME, int8_variant_problem, make_int8_variant

IDS = torch.tensor([[5, 9, 17, 33, 65, 129, 200, 7]])


def logits(handle) -> torch.Tensor:
    with torch.no_grad():
        return handle.model(IDS).logits


@pytest.fixture()
def with_variant(tiny_model_dir, tmp_path):
    model_dir = shutil.copytree(tiny_model_dir, tmp_path / "tiny-qwen2@v")
    make_int8_variant(model_dir, say=lambda message: None)
    return model_dir


def test_a_variant_loads_the_same_model_as_quantizing_at_load(tiny_model_dir, with_variant):
    at_load = load_model(tiny_model_dir, precision="int8")
    stored = load_model(with_variant, precision="int8")
    assert "int8 weights from the version's int8 variant" in stored.precision_reason
    assert not stored.weights_in_files  # its own memory already: nothing mapped for the worker to copy
    assert not any(p.device.type == "meta" for p in stored.model.parameters())
    assert not any(type(m) is torch.nn.Linear for m in stored.model.modules())
    assert stored.model.generation_config.eos_token_id == at_load.model.generation_config.eos_token_id
    assert torch.equal(logits(stored), logits(at_load))  # the same rows and scales: the same answers


def test_a_tied_output_layer_keeps_the_fp32_table_from_the_variant(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    model.config.tie_word_embeddings = True
    model.tie_weights()
    tied_dir = tmp_path / "tied@1"
    model.save_pretrained(tied_dir)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(tied_dir)
    at_load = load_model(tied_dir, precision="int8")
    make_int8_variant(tied_dir, say=lambda message: None)
    stored = load_model(tied_dir, precision="int8")
    head = stored.model.get_output_embeddings()
    assert isinstance(head, Int8Linear) and head.weight is stored.model.get_input_embeddings().weight
    assert torch.equal(logits(stored), logits(at_load))


def test_a_variant_of_another_scheme_is_not_misread(with_variant):
    path = with_variant / INT8_VARIANT
    save_file(load_file(path), path, metadata={"scheme": "int4-someday"})
    assert "int4-someday" in int8_variant_problem(with_variant)
    handle = load_model(with_variant, precision="int8")  # quantized from the fp32 files instead
    assert "quantized at load" in handle.precision_reason and "int4-someday" in handle.precision_reason
    assert SCHEME in handle.precision_reason


def test_large_layers_are_packed_in_slices_with_the_same_result(monkeypatch):
    import engine.int8 as int8

    torch.manual_seed(0)
    linear = torch.nn.Linear(48, 100)
    x = torch.randn(5, 48)
    whole = Int8Linear.from_linear(linear)
    monkeypatch.setattr(int8, "MAX_SLICE_ROWS", 16)
    sliced = Int8Linear.from_linear(linear)
    assert len(whole.packed) == 1 and len(sliced.packed) == 7
    assert torch.equal(sliced(x), whole(x))
    every = list(range(100))
    assert torch.equal(sliced.dequantized_rows(every), whole.dequantized_rows(every))
    assert torch.equal(whole.dequantized_rows([42, 3]), whole.dequantized_rows(every)[[42, 3]])
