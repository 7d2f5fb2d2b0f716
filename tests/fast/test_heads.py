"""Linear heads (engine.heads, engine.backends.torch_head): the fit, the examples file, the stored head's
checks, and the per-request ``mode`` through the engine, on the tiny model."""

from __future__ import annotations

import json
from types import SimpleNamespace
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from engine.kinds.base import RequestLimits
from engine.kinds.classify import ClassifyRequest
from engine.kinds.registry import check_request
from engine.backends.torch_backend import TorchBackend
from engine.backends.torch_head import LinearHead, cross_validated_accuracy, fit_linear_head, fit_task_head
from engine.engine import Engine, EngineConfig
from engine.errors import ConfigError, InvalidInput
from engine.heads import HeadStatus, find_head, head_path, model_identity, task_fingerprint, write_head
from engine.tasks import load_tasks
from engine.types import ClassifyMode

TASK = """
[topic]
kind = "classify"
labels = ["food", "sport"]
instruction = "Is the text about food or sport? Answer with one word."
examples_file = "topic_examples.jsonl"
"""
TINY_L2 = 0.01
FOOD = ["pizza with cheese", "a bowl of noodles", "fresh bread and butter", "rice and beans", "apple pie",
        "hot soup", "grilled fish", "chocolate cake"]
SPORT = ["a football match", "the tennis final", "running a marathon", "swimming laps", "a basketball game",
         "the cycling race", "a boxing bout", "skiing downhill"]


def write_task(folder: Path, rows: list[str] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if rows is None:
        rows = [json.dumps({"text": t, "label": "food"}) for t in FOOD]
        rows += [json.dumps({"text": t, "label": "sport"}) for t in SPORT]
    (folder / "topic_examples.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    (folder / "tasks.toml").write_text(TASK, encoding="utf-8")
    return folder / "tasks.toml"


def test_the_fit_separates_what_is_separable_and_is_deterministic():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(200, 12, generator=generator) * 3 + 5  # not standardised: the fit must fold that in
    targets = (x[:, 3] - x[:, 7] > 0).long()
    weight, bias = fit_linear_head(x, targets, 2, l2=0.01)
    again = fit_linear_head(x, targets, 2, l2=0.01)
    assert torch.equal(weight, again[0]) and torch.equal(bias, again[1])
    accuracy = ((x.double() @ weight.T + bias).argmax(-1) == targets).double().mean()
    assert accuracy > 0.95
    assert cross_validated_accuracy(x, targets, 2, l2=0.01) > 0.9
    # A heavier penalty shrinks the weights: the L2 term is really there.
    assert weight.norm() > fit_linear_head(x, targets, 2, l2=10.0)[0].norm()


def test_a_task_with_an_examples_file_loads(tmp_path):
    task = load_tasks(write_task(tmp_path)).get("topic")
    assert task.head_examples is not None and len(task.head_examples.examples) == 16
    assert task.head_examples.heads_dir == tmp_path / "heads"
    assert load_tasks(write_task(tmp_path)).infos()[0].modes == ("auto", "prompt", "head")


@pytest.mark.parametrize("line, fragment", [
    ('{"text": "x", "label": "food"', "topic_examples.jsonl:3: not a JSON object"),
    ('{"text": "x", "label": "music"}', "topic_examples.jsonl:3: 'label' must be one of ['food', 'sport']"),
    ('{"label": "food"}', "topic_examples.jsonl:3: each line needs a non-empty 'text'"),
    ('["food"]', "topic_examples.jsonl:3: each line needs a non-empty 'text'"),
])
def test_a_broken_examples_file_is_refused_naming_the_file_and_line(tmp_path, line, fragment):
    good = [json.dumps({"text": "pizza", "label": "food"}), json.dumps({"text": "tennis", "label": "sport"})]
    with pytest.raises(ConfigError) as err:
        load_tasks(write_task(tmp_path, good + [line] + good))
    assert fragment in str(err.value)


def test_too_few_examples_of_a_label_and_a_missing_file_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="at least two examples of every label"):
        load_tasks(write_task(tmp_path, [json.dumps({"text": t, "label": "food"}) for t in FOOD]))
    (tmp_path / "topic_examples.jsonl").unlink()
    with pytest.raises(ConfigError, match="Cannot read the examples file .*topic_examples.jsonl"):
        load_tasks(tmp_path / "tasks.toml")


@pytest.fixture(scope="module")
def fitted(tiny_handle, tmp_path_factory):
    """The topic task with a head fitted on the tiny model, stored beside its tasks file."""
    folder = tmp_path_factory.mktemp("topic")
    tasks = load_tasks(write_task(folder))
    backend = TorchBackend(tiny_handle)
    backend.classifier.prepare(tasks.of_kind("classify"), 64)
    assert backend.classifier.head_states()["topic"].status is HeadStatus.MISSING
    model_id = model_identity(tiny_handle.path)
    # A light penalty: 16 examples on a random tiny model, which the head should fit (the shipped default is
    # for 1,600 real ones).
    head = fit_task_head(backend.classifier.scorer("topic"), tasks.get("topic"), backend.info, model_id, l2=TINY_L2)
    path = write_head(tasks.get("topic"), head)
    return tasks, head, path, model_id


def test_fitting_a_task_head_is_deterministic_and_fits_its_examples(fitted, tiny_handle):
    tasks, head, path, model_id = fitted
    backend = TorchBackend(tiny_handle)
    backend.classifier.prepare(tasks.of_kind("classify"), 64)
    again = fit_task_head(backend.classifier.scorer("topic"), tasks.get("topic"), backend.info, model_id, l2=TINY_L2)
    assert again.weight == head.weight and again.bias == head.bias
    assert head.examples == 16 and head.labels == ["food", "sport"] and 0 <= head.cv_accuracy <= 1
    assert head.tuning_accuracy >= 0.9  # 16 examples, a head of (hidden size + 2) features: it fits them
    assert path == head_path(tasks.get("topic"), model_id) and path.parent.name == "heads"


def test_the_mode_is_honoured_and_reported(fitted, tiny_handle):
    tasks, *_ = fitted
    engine = Engine(TorchBackend(tiny_handle), tasks, EngineConfig()).start()
    try:
        assert engine.backend.classifier.head_states()["topic"].ready
        texts = FOOD[:2] + SPORT[:2]
        head = engine.classify("topic", texts, "head")
        prompt = engine.classify("topic", texts, ClassifyMode.PROMPT)
        auto = engine.classify("topic", texts)
        assert {r.mode for r in head} == {ClassifyMode.HEAD} and auto == head
        assert {r.mode for r in prompt} == {ClassifyMode.PROMPT}
        assert [r.scores for r in head] != [r.scores for r in prompt]  # really another answer path
        assert [r.label for r in head] == ["food", "food", "sport", "sport"]  # its own training examples
        assert head[0].to_api()["mode"] == "head"
        with pytest.raises(InvalidInput, match="Unknown mode 'best'"):  # at the edge, by the kind's check
            check_request(ClassifyRequest(texts, mode="best"), RequestLimits())
    finally:
        engine.close()


def test_without_a_head_auto_is_the_prompt_and_head_is_refused_with_the_reason(tiny_handle, tmp_path):
    tasks = load_tasks(write_task(tmp_path))
    engine = Engine(TorchBackend(tiny_handle), tasks, EngineConfig()).start()
    try:
        assert engine.classify("topic", ["pizza"])[0].mode is ClassifyMode.PROMPT
        with pytest.raises(InvalidInput, match="cannot answer in head mode on this model: no head fitted"):
            engine.classify("topic", ["pizza"], "head")
    finally:
        engine.close()


def test_a_head_for_another_model_or_an_older_task_is_not_used(fitted):
    tasks, head, path, model_id = fitted
    task = tasks.get("topic")
    assert find_head(task, model_id)[1].ready
    assert find_head(task, "0" * 64)[1].status is HeadStatus.MISSING
    changed = replace(task, instruction="Food or sport?")
    assert task_fingerprint(changed) != task_fingerprint(task)
    assert find_head(changed, model_id)[1].status is HeadStatus.STALE
    other = load_tasks(write_task(path.parent.parent / "edited", [
        json.dumps({"text": t, "label": "food"}) for t in FOOD[:3]] + [
        json.dumps({"text": t, "label": "sport"}) for t in SPORT[:3]])).get("topic")
    assert task_fingerprint(other) != task_fingerprint(task)  # the examples file's bytes count too


def test_a_damaged_head_file_is_reported_not_used(fitted, tmp_path):
    tasks, head, path, model_id = fitted
    task = load_tasks(write_task(tmp_path)).get("topic")
    write_head(task, head)
    stored = head_path(task, model_id)
    stored.write_text(stored.read_text()[:100])
    found, state = find_head(task, model_id)
    assert found is None and state.status is HeadStatus.BROKEN and stored.name in state.detail


def test_a_linear_head_applies_its_folded_weights():
    head = LinearHead(SimpleNamespace(weight=[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], bias=[0.0, 0.0], layer=None))
    out = head.log_probs(torch.tensor([[2.0, 0.0]]), torch.tensor([[-0.1]]))
    assert out.shape == (1, 2) and out.exp().sum().item() == pytest.approx(1.0) and out.argmax().item() == 0
