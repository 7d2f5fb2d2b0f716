"""Early exit: a head on layer k reads the hidden state after k blocks, and the pass stops there, on both
backends; the layer is chosen by cross-validation, deterministically.

The tiny model has two blocks, so its one early layer is layer 1."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.backends.llamacpp_backend import LlamaCppBackend
from engine.backends.torch_backend import TorchBackend
from engine.backends.torch_head import LAST, candidate_layers, choose_layer, fit_task_head
from engine.engine import Engine
from engine.heads import find_head, model_identity, write_head
from engine.tasks import load_tasks
from engine.types import ClassifyMode, EngineConfig
from tests.fast.test_heads import FOOD, SPORT, TINY_L2, write_task

TEXTS = ["pizza with cheese", "the tennis final", "这家酒店很好", "a much longer text " * 20]


def test_the_shallowest_layer_within_the_tolerance_is_chosen():
    assert choose_layer({LAST: 0.80, "12": 0.81, "16": 0.815, "20": 0.79}) == "12"  # within half a point
    assert choose_layer({LAST: 0.80, "12": 0.70, "16": 0.797}) == "16"
    assert choose_layer({LAST: 0.80, "12": 0.70, "16": 0.79}) == LAST  # a point short: the full pass
    assert choose_layer({LAST: 0.90, "12": 0.70}) == LAST
    assert choose_layer({LAST: 0.80, "6": 0.80}, tolerance=0.0) == "6"  # a tie goes to the cheaper
    assert candidate_layers(24) == list(range(6, 24)) and candidate_layers(2) == [1]


def full_pass_hidden(handle, scorer, text, layer):
    """The hidden state after ``layer`` blocks at the answer position, from a whole forward pass of the
    whole prompt (no prefix cache, no hook): what the early exit must reproduce."""
    ids = scorer._plan.prefix_ids + scorer._suffix_ids(text)[0]
    with torch.inference_mode():
        out = handle.model.base_model(input_ids=torch.tensor([ids]), output_hidden_states=True)
    return out.hidden_states[layer][0, -1]


def test_torch_early_exit_is_the_full_pass_s_layer_and_runs_no_later_block(tiny_handle, tasks):
    backend = TorchBackend(tiny_handle)
    backend.classifier.prepare(tasks.of_kind("classify"), 256)
    scorer = backend.classifier.scorer("sentiment")
    calls = []
    last_block = tiny_handle.model.base_model.layers[-1]
    handle = last_block.register_forward_hook(lambda *args: calls.append(1))
    try:
        found = scorer.layer_features(TEXTS, [1])[1]
    finally:
        handle.remove()
    assert calls == []  # block 2 never ran
    for row, text in zip(found, TEXTS):
        torch.testing.assert_close(row, full_pass_hidden(tiny_handle, scorer, text, 1).float(), atol=1e-4,
                                   rtol=1e-4)
    with pytest.raises(ValueError, match="each must be 1 .. 1"):
        scorer.layer_features(TEXTS, [2])


def test_llamacpp_early_exit_reads_the_same_layer_as_torch(tiny_model_dir, tiny_handle, tasks):
    torch_backend = TorchBackend(tiny_handle)
    torch_backend.classifier.prepare(tasks.of_kind("classify"), 256)
    backend = LlamaCppBackend(tiny_model_dir, EngineConfig(), "test")
    try:
        backend.classifier.prepare(tasks.of_kind("classify"), 256)
        ours = backend.classifier.scorer("sentiment").layer_features(TEXTS, [1])[1]
        theirs = torch_backend.classifier.scorer("sentiment").layer_features(TEXTS, [1])[1]
        np.testing.assert_allclose(ours, theirs.numpy(), atol=2e-2, rtol=1e-2)  # llama.cpp's KV cache is f16
        # The same again: the scratch sequences were given back, the prefix kept.
        np.testing.assert_array_equal(backend.classifier.scorer("sentiment").layer_features(TEXTS, [1])[1], ours)
    finally:
        backend.close()


@pytest.fixture(scope="module")
def layer_head(tiny_handle, tmp_path_factory):
    """The topic task with a head on layer 1 (a tolerance of 1 takes the shallowest candidate)."""
    tasks = load_tasks(write_task(tmp_path_factory.mktemp("topic-layer")))
    backend = TorchBackend(tiny_handle)
    backend.classifier.prepare(tasks.of_kind("classify"), 64)
    head = fit_task_head(backend.classifier.scorer("topic"), tasks.get("topic"), backend.info,
                         model_identity(tiny_handle.path), l2=TINY_L2, tolerance=1.0)
    write_head(tasks.get("topic"), head)
    return tasks, head


def test_a_layer_head_records_its_layer_and_every_candidate_s_score(layer_head, tiny_handle):
    tasks, head = layer_head
    assert head.layer == 1 and set(head.layer_cv) == {LAST, "1"} and head.cv_accuracy == head.layer_cv["1"]
    assert len(head.weight[0]) == tiny_handle.model.config.hidden_size  # the hidden state alone
    found, state = find_head(tasks.get("topic"), model_identity(tiny_handle.path))
    assert found.layer == 1 and "layer 1" in state.detail


@pytest.mark.parametrize("runtime", ["torch", "llamacpp"])
def test_a_layer_head_answers_on_both_backends_and_prompt_mode_keeps_the_full_model(layer_head, tiny_handle,
                                                                                    tiny_model_dir, runtime):
    tasks, _ = layer_head
    backend = TorchBackend(tiny_handle) if runtime == "torch" else LlamaCppBackend(tiny_model_dir, EngineConfig(),
                                                                                    "test")
    engine = Engine(backend, tasks, EngineConfig()).start()
    try:
        texts = FOOD[:2] + SPORT[:2]
        head = engine.classify("topic", texts, ClassifyMode.HEAD)
        assert [r.label for r in head] == ["food", "food", "sport", "sport"]  # its own training examples
        prompt = engine.classify("topic", texts, ClassifyMode.PROMPT)
        assert {r.mode for r in prompt} == {ClassifyMode.PROMPT} and [r.scores for r in prompt] != [
            r.scores for r in head]
        mixed = engine.backend.classifier.score("topic", texts, [ClassifyMode.HEAD, ClassifyMode.PROMPT] * 2)
        # llama.cpp's sums depend a little on the batch's make-up, which a lightly penalised head magnifies.
        tolerance = 1e-5 if runtime == "torch" else 3e-3
        for i, result in enumerate(mixed):
            expected = head[i] if i % 2 == 0 else prompt[i]
            assert result.label == expected.label
            assert result.confidence == pytest.approx(expected.confidence, abs=tolerance)
    finally:
        engine.close()


def test_the_command_line_fits_on_a_layer_chosen_beforehand_and_refuses_one_the_model_lacks(
        tiny_model_dir, tmp_path, capsys):
    """``python -m ops.heads fit --layer K`` keeps layer K (chosen on the tuning part by bench/head_layers.py)
    whatever the cross-validation says; a layer the model does not have is refused, naming its range."""
    from engine.heads import read_head
    from ops.tools.heads import main

    tasks_file = write_task(tmp_path / "cli")
    common = ["fit", "--model-dir", str(tiny_model_dir), "--tasks-file", str(tasks_file), "--task", "topic",
              "--backend", "torch", "--precision", "fp32", "--l2", str(TINY_L2)]
    assert main([*common, "--layer", "1"]) == 0
    head = read_head(next((tmp_path / "cli" / "heads").glob("topic@*.json")))
    assert head.layer == 1 and set(head.layer_cv) == {LAST, "1"}
    with pytest.raises(SystemExit, match="has layers 1 .. 1"):
        main([*common, "--layer", "2"])
    with pytest.raises(SystemExit):  # one or the other
        main([*common, "--layer", "1", "--last-layer"])
    assert "error" in capsys.readouterr().err
