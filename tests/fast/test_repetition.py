"""The repetition guard (engine.sampling): pure tests of the loop watch and the token choice, then
the tiny model, which loops under greedy decoding much as the real one did ("你好，你好，..."),
through the scheduler on the test run's backend and on both backends side by side."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from engine.kinds.base import RequestLimits
from engine.kinds.generate import ChatRequest
from engine.kinds.registry import check_request
from engine.chat import ChatStream
from engine.errors import InvalidInput
from engine.sampling import (
    BANNED,
    MAX_BREAKS,
    NO_GUARD,
    GuardAction,
    RepeatWatch,
    RepetitionGuard,
    choose_token,
    named_guard,
)
from engine.types import FINISH_LENGTH, FINISH_STOP, GenerateOptions
from tests.conftest import TEST_BACKEND, TEST_PRECISION, make_test_engine

_spec = importlib.util.spec_from_file_location("chat_checks", Path(__file__).parents[2] / "bench" / "chat_checks.py")
checks = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(checks)

STOP = RepetitionGuard()
BREAK = RepetitionGuard(action=GuardAction.BREAK)
HELLO, COMMA, MORNING = 1, 2, 3  # "你好", "，", "早上好"


def feed(guard: RepetitionGuard, tokens: list[int]) -> tuple[int | None, list[dict[int, float]]]:
    """Add ``tokens`` one by one: the count added when the watch ended the answer (None: never),
    and the bias it gave before each token."""
    watch = RepeatWatch(guard)
    biases = []
    for count, token in enumerate(tokens, 1):
        biases.append(watch.bias())
        if watch.add(token):
            return count, biases
    return None, biases


def test_a_loop_is_stopped_once_it_covers_the_span_and_the_repeats():
    answer = [MORNING, COMMA] + [HELLO, COMMA] * 20
    stopped, _ = feed(STOP, answer)
    assert stopped == 17  # "，你好" from the second token on: 16 tokens, the first loop
    assert feed(NO_GUARD, answer)[0] is None


def test_an_answer_that_does_not_loop_is_left_alone():
    answer = list(range(100, 300))  # 200 different tokens
    stopped, biases = feed(STOP, answer)
    assert stopped is None and not any(biases)
    assert feed(BREAK, answer) == (None, [{}] * len(answer))
    assert feed(RepetitionGuard(no_repeat_ngram=3), answer) == (None, [{}] * len(answer))


def test_short_legitimate_repeats_are_not_loops():
    cheer = [10, COMMA] * 3 + [11]  # "加油，加油，加油！"
    row = [20, 21, 22, 21, 22, 21, 22, 23, COMMA]  # "[0, 0, 0, 0]," as a 9-token unit
    close = 24  # "]]" in place of the last row's ","
    assert feed(STOP, cheer)[0] is None
    assert feed(STOP, row * 3 + row[:-1] + [close])[0] is None  # four equal rows: the last one closes
    assert feed(STOP, row * 6)[0] == 36  # rows without end: stopped at the fourth's end


def test_a_long_unit_needs_its_repeats_not_just_the_span():
    sentence = list(range(50, 60))  # 10 tokens
    assert feed(STOP, sentence * 3 + sentence[:9])[0] is None  # 39 tokens: not four times yet
    assert feed(STOP, sentence * 5)[0] == 40


def test_break_bans_the_token_that_would_go_on_with_the_loop_then_stops():
    """A model that would say "你好，" forever, and "早上好" where that is banned."""
    watch = RepeatWatch(BREAK)
    said, bans = [], []
    for token in [HELLO, COMMA] * 100:
        bias = watch.bias()
        if bias:
            bans.append((bias, token))
        said.append(MORNING if token in bias else token)
        if watch.add(said[-1]):
            break
    else:
        pytest.fail("the loop was never ended")
    assert watch.breaks == MAX_BREAKS and len(bans) == MAX_BREAKS
    assert all(bias == {wanted: BANNED} for bias, wanted in bans)  # each time, the loop's next token
    assert said.count(MORNING) == MAX_BREAKS
    assert said[:17] == [HELLO, COMMA] * 8 + [MORNING]  # the first ban: right after the loop's 16th token


def test_no_repeat_ngram_bans_what_followed_the_same_words_before():
    watch = RepeatWatch(RepetitionGuard(loop_tokens=0, no_repeat_ngram=3))
    for token in [5, 6, 7, 9, 5, 6]:
        assert not watch.add(token)
    assert watch.bias() == {7: BANNED}  # "5 6 7" was said once already


def test_the_guard_checks_its_settings():
    for bad in ({"loop_tokens": -1}, {"loop_repeats": 1}, {"no_repeat_ngram": 1}):
        with pytest.raises(ValueError):
            RepetitionGuard(**bad)
    assert not NO_GUARD.active and STOP.active


def test_choose_token_applies_the_bans_and_leaves_the_logits_alone():
    logits = np.array([0.0, 3.0, 2.0, 1.0], dtype=np.float32)
    assert choose_token(logits, 0.0, None) == 1
    assert choose_token(logits, 0.0, None, {1: BANNED}) == 2
    assert choose_token(logits, 0.0, None, {1: BANNED, 2: -1.5}) == 3
    assert logits.tolist() == [0.0, 3.0, 2.0, 1.0]
    draws = {choose_token(logits, 1.0, np.random.default_rng(seed), {1: BANNED}) for seed in range(50)}
    assert 1 not in draws and len(draws) > 1  # sampling: never a banned token


@pytest.mark.parametrize("reply", ["早上好，你好，你好，你好，你好，你好，你好，你好",
                                   "The answer is 4. The answer is 4. The answer is 4. The answer is 4. The answer"])
def test_the_benchmark_counts_a_looping_reply(reply):
    assert checks.loops(reply) and checks.longest_run(reply).times >= 4


@pytest.mark.parametrize("reply", ["加油，加油，加油！", "Paris.", "因为瑞利散射，蓝光被散射得更多。", "-" * 40, ""])
def test_the_benchmark_does_not_count_a_plain_reply(reply):
    assert not checks.loops(reply)


def test_the_longest_run_names_its_unit_and_length():
    run = checks.longest_run("早上好，你好，你好，你好，你好")
    assert run.chars == 13 and run.times == 4 and set(run.unit) == set("你好，")  # "好，你好，...": 早上好 ends in 好
    assert checks.longest_run("no repeats here") == checks.Run()


# ----- the tiny model, which loops -------------------------------------------------------------

LOOPING = "abc"  # the tiny model repeats one token after a few (tokens 8.. of its greedy answer)


def decode(backend, message: str, guard: RepetitionGuard, max_new_tokens: int = 40) -> tuple[list[int], str]:
    """A chat decoded as the engine decodes it (the scheduler's ``ChatStream`` on ``backend``):
    the generated ids and the finish reason."""
    ids = backend.text.encode(backend.text.render([{"role": "user", "content": message}], True))
    stream = ChatStream(ids, max_new_tokens, 0.0, float("inf"), (), repetition=guard)
    stream.start(backend)
    assert stream.prefill(backend, len(ids))
    while (token := stream.choose(backend)) is not None:
        backend.decoder.step({stream.sequence: token})
    stream.release(backend)
    updates = []
    while not stream.updates.empty():
        updates.append(stream.updates.get())
    return stream.generated, updates[-1].finish_reason


@pytest.fixture(scope="module")
def backends(tiny_model_dir):
    from engine.backends import open_backend

    opened = {kind: open_backend(kind, tiny_model_dir, "fp32" if kind == "torch" else "auto")
              for kind in ("torch", "llamacpp")}
    yield opened
    opened["llamacpp"].close()


def test_the_tiny_model_loops_and_the_guard_stops_it_where_the_watch_says(backends):
    backend = backends[TEST_BACKEND]
    free, reason = decode(backend, LOOPING, NO_GUARD)
    assert reason == FINISH_LENGTH and len(free) == 40
    where, _ = feed(STOP, free)
    assert where is not None and where < 40  # it loops
    guarded, reason = decode(backend, LOOPING, STOP)
    assert reason == FINISH_STOP and guarded == free[:where]


def test_break_steers_the_tiny_model_off_its_loop(backends):
    backend = backends[TEST_BACKEND]
    free, _ = decode(backend, LOOPING, NO_GUARD)
    where, _ = feed(STOP, free)
    broken, _ = decode(backend, LOOPING, BREAK)
    assert broken[:where] == free[:where]  # the same until the loop is found
    assert broken[where] != free[where]  # then not the loop's next token


@pytest.mark.parametrize("guard", [NO_GUARD, STOP, BREAK, RepetitionGuard(no_repeat_ngram=4)],
                         ids=["off", "stop", "break", "no-repeat-4-gram"])
def test_the_guard_gives_the_same_answer_on_both_backends(backends, guard):
    for message in (LOOPING, "你好"):  # a loop of one token, and one of three (tokens 25..)
        assert decode(backends["torch"], message, guard) == decode(backends["llamacpp"], message, guard), message


def test_a_request_chooses_its_guard_through_the_engine(tiny_model_dir, tasks):
    engine = make_test_engine(tiny_model_dir, tasks, max_new_tokens=40)
    try:
        def ask(guard):
            return engine.chat("chat", LOOPING, options=GenerateOptions(max_new_tokens=40, repetition=guard))

        free, stopped, default = ask(NO_GUARD), ask(STOP), ask(None)
        assert free.finish_reason == FINISH_LENGTH and free.tokens == 40
        assert stopped.finish_reason == FINISH_STOP and stopped.tokens < 40 and free.text.startswith(stopped.text)
        assert default.text == stopped.text and default.finish_reason == FINISH_STOP  # on by default
        with pytest.raises(InvalidInput, match="repetition guard"):  # at the edge, by the kind's check
            check_request(ChatRequest(LOOPING, options=GenerateOptions(repetition="on")), RequestLimits())
    finally:
        engine.close()


def test_the_test_run_uses_a_backend_these_tests_know():
    assert TEST_BACKEND in ("torch", "llamacpp") and TEST_PRECISION


def test_the_server_setting_is_the_guard_of_a_request_that_does_not_say(tiny_model_dir, tasks):
    """``EngineConfig.repetition_guard`` (``--repetition-guard``): the default a request's ``None`` takes."""
    answers = {}
    for name in ("off", "stop", "break"):
        engine = make_test_engine(tiny_model_dir, tasks, max_new_tokens=40, repetition_guard=name)
        try:
            answers[name] = engine.chat("chat", LOOPING, options=GenerateOptions(max_new_tokens=40))
            asked = engine.chat("chat", LOOPING, options=GenerateOptions(max_new_tokens=40, repetition=STOP))
        finally:
            engine.close()
        assert asked.finish_reason == FINISH_STOP and asked.tokens < 40  # a request that says still wins
    assert answers["off"].finish_reason == FINISH_LENGTH and answers["off"].tokens == 40
    assert answers["stop"].finish_reason == FINISH_STOP and answers["off"].text.startswith(answers["stop"].text)
    assert answers["break"].text != answers["off"].text  # steered off the loop


def test_the_guards_have_names_and_a_wrong_one_is_named():
    assert named_guard("stop") == STOP and named_guard("break") == BREAK and named_guard("off") == NO_GUARD
    for bad in ("on", "", None):
        with pytest.raises(ValueError, match="use one of: stop, break, off"):
            named_guard(bad)
