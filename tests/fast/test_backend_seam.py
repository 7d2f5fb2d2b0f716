"""The scheduler drives any backend through the seam alone: here one with no model and no torch."""

from __future__ import annotations

import pytest

from engine.engine import Engine, EngineConfig
from engine.errors import InferenceFailed, InvalidOutput
from engine.faults import FaultyBackend
from tests.fake_backend import ANSWER, FakeBackend


@pytest.fixture
def fake_engine(tasks):
    backend = FakeBackend()
    engine = Engine(FaultyBackend(backend), tasks, EngineConfig(max_active_chats=4)).start()
    yield engine, backend
    engine.close()


def test_a_new_backend_is_one_module(fake_engine):
    engine, backend = fake_engine
    results = engine.classify("sentiment", ["a good day", "a bad day"])
    assert [r.label for r in results] == ["positive", "negative"]
    assert engine.chat("chat", "Hi").text == ANSWER
    assert backend.running == set()  # every sequence released when its chat ended


def test_chats_share_steps_through_the_seam(fake_engine):
    engine, backend = fake_engine
    # Hold the first step until all four chats are queued: the fake answers in microseconds, so
    # on a busy machine one chat could otherwise end before the next one arrives.
    backend.steps_allowed.clear()
    streams = [engine.generate("chat", f"Hi {i}") for i in range(4)]  # queued at once, not lazily
    backend.steps_allowed.set()
    answers = [[update.text for update in stream][-1] for stream in streams]
    assert answers == [ANSWER] * 4
    assert max(backend.step_sizes) > 1  # several chats fed in one step
    assert len(backend.step_sizes) < 4 * len(ANSWER)  # fewer steps than tokens
    assert backend.running == set()


def test_the_fault_drills_wrap_any_backend(fake_engine):
    engine, _ = fake_engine
    engine.backend.arm("error")
    with pytest.raises(InferenceFailed, match="Injected fault"):
        engine.classify("sentiment", ["good"])
    engine.backend.arm("nan-weights")
    with pytest.raises(InvalidOutput):
        engine.classify("sentiment", ["good"])
    with pytest.raises(InvalidOutput):
        engine.chat("chat", "Hi")


def test_a_classification_waits_behind_at_most_one_prefill_chunk_and_one_step(tasks):
    """A long prompt is prefilled a chunk a round, and a classification asked for meanwhile is answered
    after at most one more chunk and one decode step (the bound docs/operations.md states)."""
    from engine.kinds.generate import PREFILL_CHUNK_TOKENS

    backend = FakeBackend()
    backend.prefill_seconds = 0.02  # each chunk takes time, so the classification arrives mid-prompt
    engine = Engine(backend, tasks, EngineConfig(max_active_chats=4, context_tokens=4096)).start()
    try:
        stream = engine.generate("chat", "x" * (20 * PREFILL_CHUNK_TOKENS))  # 20 chunks or so
        while not any(kind == "prefill" for kind, _ in backend.log):
            pass
        position = len(backend.log)
        assert engine.classify("sentiment", ["a good day"])[0].label == "positive"
        [update.text for update in stream]
    finally:
        engine.close()
    log = backend.log
    scored = log.index(("score", 1))
    assert all(size <= PREFILL_CHUNK_TOKENS for kind, size in log if kind == "prefill")
    assert sum(kind == "prefill" for kind, _ in log) >= 20  # the prompt really went in by chunks
    behind = [kind for kind, _ in log[position:scored]]
    assert behind.count("prefill") <= 1 and behind.count("step") <= 1, log[position:scored + 1]
