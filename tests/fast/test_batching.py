"""Classroom scale on the tiny model: batched chat decoding, per-session admission, no leaks."""

from __future__ import annotations

import gc
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from engine.errors import Busy, Superseded
from engine.backends.torch_backend import TorchBackend
from engine.backends.torch_decode import prefill
from engine.chat import ChatStream
from engine.types import GenerateOptions, TaskKind
from tests.conftest import make_engine

PROMPTS = ["Hi", "Tell me a long story about a dragon and a knight, please.", "你好，今天天气怎么样？",
           "Count to ten.", "What is the capital of France? Answer in one word.", "ok"]


def encode_chat(handle, text: str) -> list[int]:
    rendered = handle.tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                                    add_generation_prompt=True)
    return handle.tokenizer(rendered, add_special_tokens=False)["input_ids"]


@torch.inference_mode()
def greedy_alone(model, prompt_ids: list[int], steps: int) -> tuple[list[int], list[torch.Tensor]]:
    """The reference: one sequence, its own cache, one plain forward pass per token."""
    cache, logits = prefill(model, prompt_ids)
    tokens, all_logits = [], [logits]
    for _ in range(steps):
        tokens.append(int(logits.argmax()))
        out = model(input_ids=torch.tensor([[tokens[-1]]]), cache=cache, use_cache=True, logits_to_keep=1)
        logits = out.logits[0, -1].float()
        all_logits.append(logits)
    return tokens, all_logits


def test_a_decode_batch_gives_each_stream_what_it_gets_alone(tiny_handle):
    """Sequences of different lengths join and leave mid-way, through the backend seam (the decoder's
    ``start``, ``step``, ``release``); every token and logit equals decoding alone."""
    model = tiny_handle.model
    backend = TorchBackend(tiny_handle)
    prompts = [encode_chat(tiny_handle, p) for p in PROMPTS[:4]]
    assert len({len(p) for p in prompts}) == 4  # different lengths, so padding is exercised
    steps = 12
    expected = [greedy_alone(model, p, steps) for p in prompts]
    # The batch's padding changes the order of float sums: noise at the format's resolution
    atol = 1e-4 if tiny_handle.precision == "fp32" else 2e-2
    joins = {0: [0], 3: [1], 5: [2, 3]}  # step -> sequences joining (the longest joins second: everyone is padded)
    leaves = {7: 1}  # step -> sequence leaving early
    running, got, seen = {}, {i: [] for i in range(4)}, {i: 0 for i in range(4)}
    for step in range(steps + 6):
        for i in joins.get(step, []):
            running[backend.decoder.start(prompts[i], 0.0, 0)] = i
        if step in leaves:
            gone = next(s for s, i in running.items() if i == leaves[step])
            backend.decoder.release(gone)
            del running[gone]
        if not running:
            break
        tokens = {}
        for sequence, i in running.items():
            assert torch.allclose(sequence.next_logits, expected[i][1][seen[i]], atol=atol)
            tokens[sequence] = backend.decoder.next_token(sequence)
            got[i].append(tokens[sequence])
            seen[i] += 1
        backend.decoder.step(tokens)
        for sequence in [s for s, i in running.items() if seen[i] >= steps]:
            backend.decoder.release(sequence)
            del running[sequence]
    for i in range(4):
        assert got[i] == expected[i][0][: len(got[i])], i
    assert len(got[1]) < steps and all(len(got[i]) == steps for i in (0, 2, 3))
    assert len(backend.decoder._batch) == 0


def count_forward_batches(model):
    sizes: list[int] = []
    lock = threading.Lock()

    def hook(_module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is not None and ids.shape[1] == 1:  # decode steps only (prefills have the whole prompt)
            with lock:
                sizes.append(ids.shape[0])

    return sizes, model.register_forward_pre_hook(hook, with_kwargs=True)


def test_concurrent_chats_share_decode_steps_and_answer_as_if_alone(tiny_handle, tasks):
    engine = make_engine(tiny_handle, tasks, max_new_tokens=24, max_active_chats=8)
    try:
        expected = {p: engine.chat("chat", p).text for p in PROMPTS}
        sizes, handle = count_forward_batches(tiny_handle.model)
        try:
            with ThreadPoolExecutor(len(PROMPTS)) as pool:
                answers = dict(zip(PROMPTS, pool.map(lambda p: engine.chat("chat", p).text, PROMPTS)))
        finally:
            handle.remove()
        assert answers == expected
        assert max(sizes) >= 3  # several chats were fed in one forward pass
        tokens = sum(len(tiny_handle.tokenizer(a)["input_ids"]) for a in answers.values())
        assert len(sizes) < tokens  # fewer decode passes than tokens: the steps were shared
    finally:
        engine.close()


def test_a_session_s_new_chat_replaces_its_unfinished_one(tiny_handle, tasks):
    engine = make_engine(tiny_handle, tasks, max_new_tokens=400, max_active_chats=2)
    try:
        first = engine.generate("chat", "Tell me everything.", options=GenerateOptions(session="student-1"))
        next(first)
        other = engine.generate("chat", "Hello", options=GenerateOptions(session="student-2"))
        second = engine.generate("chat", "Actually, just say hi.", options=GenerateOptions(session="student-1"))
        with pytest.raises(Superseded):
            for _ in first:
                pass
        assert next(second).text is not None  # the replacement runs
        assert next(other).text is not None  # another session is untouched
        second.close()
        other.close()
    finally:
        engine.close()


def test_many_sessions_leave_nothing_behind(tiny_handle, tasks):
    """Per-request state is freed: no streams, sessions, caches or slots survive their chats."""
    engine = make_engine(tiny_handle, tasks, max_new_tokens=4, max_active_chats=4)
    try:
        def student(session):
            for update in engine.generate("chat", f"Hello {session}", options=GenerateOptions(session=session)):
                pass
            return update.done

        for round_ in range(3):
            with ThreadPoolExecutor(4) as pool:
                assert all(pool.map(student, [f"s{round_}-{i}" for i in range(40)]))
        gc.collect()
        assert engine.load() == 0
        assert engine._admission.gates[TaskKind.GENERATE]._sessions == {} and len(engine.backend.inner.decoder._batch) == 0
        assert not [o for o in gc.get_objects() if type(o) is ChatStream]
    finally:
        engine.close()


def test_a_probe_is_not_kept_waiting_by_a_full_classroom(tiny_handle, tasks):
    """Every slot busy with long chats, more waiting: a priority (watchdog) chat still runs at once."""
    engine = make_engine(tiny_handle, tasks, max_new_tokens=400, max_active_chats=2, max_waiting_chats=2,
                         request_timeout_s=60.0)
    try:
        students = [engine.generate("chat", f"Long story {i}") for i in range(4)]
        next(students[0]), next(students[1])  # both slots decoding, two more in line
        with pytest.raises(Busy):
            engine.generate("chat", "one more")
        probe = engine.generate("chat", "Say OK.", options=GenerateOptions(max_new_tokens=2, priority=True))
        updates = list(probe)
        assert updates[-1].done and updates[-1].tokens <= 2
        assert engine.load() >= 4  # the students' chats were still there: the probe did not wait for them
        for stream in students:
            stream.close()
    finally:
        engine.close()


def test_the_chat_tab_sends_the_browser_session_and_shares_the_api_slots(tasks):
    import asyncio

    import gradio as gr

    from engine.chat import ChatUpdate
    from ui.demo import build_demo

    sessions = []

    class Service:
        def task_infos(self):
            return tasks.infos()

        def generate(self, task, message, history=None, options=None):
            sessions.append((task, options.session if options else None))
            yield ChatUpdate("hi", "hi", True, "stop", (), 1)

    from engine.kinds.base import RequestLimits

    demo = build_demo(Service(), lambda: {"state": "ready", "model": "x"}, classify_concurrency=4,
                      chat_concurrency=3, limits=RequestLimits())
    reply = next(f for f in demo.fns.values() if f.name == "stream_reply")
    async def run():
        # The tab's task selector is the handler's third input (generate tasks added at run time).
        return [update async for update in reply.fn("Hello", [], "chat", gr.Request(session_hash="browser-1"))]

    assert asyncio.run(run())  # ChatInterface's own wrapper around the tab's handler
    assert sessions == [("chat", "browser-1")]
    chat_pools = {f.concurrency_id for f in demo.fns.values() if f.concurrency_limit == 3}
    assert len(chat_pools) == 1  # the browser chat and the /chat API draw on one pool of slots
