"""The model's worker process, driven from the web side (``ops.serving.worker_process``) on the tiny model:
same answers as in-process, admission at once, cancellation reaching the worker, and every way a
worker can end (drained, killed, stopped, crashed, unable to load)."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from engine.errors import Busy, InvalidInput, ModelNotFound, WorkerLost
from engine.ipc import WorkerSpec
from engine.types import EngineConfig, GenerateOptions
from ops.serving.worker_process import WorkerProcess
from tests.conftest import TEST_BACKEND, TEST_PRECISION, chat_in_flight
from tests.fakes import wait_for

TEXTS = ["I love it", "The room was dirty.", "服务很好"]


def start_worker(model_dir, tasks, **engine) -> WorkerProcess:
    settings = dict(max_new_tokens=12, request_timeout_s=30.0)
    settings.update(engine)
    return WorkerProcess(WorkerSpec(model_dir, tasks, EngineConfig(**settings), backend=TEST_BACKEND,
                                    precision=TEST_PRECISION)).start()


@pytest.fixture(scope="module")
def worker(tiny_model_dir, tasks):
    worker = start_worker(tiny_model_dir, tasks)
    yield worker
    worker.close()


def test_answers_are_the_in_process_engines(worker, tiny_engine):
    assert worker.classify("sentiment", TEXTS) == tiny_engine.classify("sentiment", TEXTS)
    updates = list(worker.generate("chat", "Tell me a story"))
    assert updates[-1] == tiny_engine.chat("chat", "Tell me a story")
    assert sum(u.done for u in updates) == 1 and len(updates) > 1
    assert worker.model_label == "tiny-qwen2@test" and worker.pid != os.getpid()


def test_what_only_the_worker_knows_is_refused_at_once(worker):
    """The edge checked the input (``engine.kinds``); the worker refuses what it alone knows: the tasks it
    serves, their kinds and heads. Raised by the call itself, before any reading."""
    with pytest.raises(InvalidInput, match="Unknown task 'nope'"):
        worker.classify("nope", ["fine"])
    with pytest.raises(InvalidInput, match="cannot answer in head mode"):
        worker.classify("sentiment", ["fine"], "head")
    with pytest.raises(InvalidInput):
        worker.generate("sentiment", "hi")
    assert worker.load() == 0


def test_admission_answers_busy_at_once_and_a_dropped_stream_frees_its_slot_in_the_worker(tiny_model_dir, tasks):
    worker = start_worker(tiny_model_dir, tasks, max_new_tokens=400, max_active_chats=1, max_waiting_chats=0)
    try:
        stream = chat_in_flight(worker, "A long story, please.")
        with pytest.raises(Busy):
            worker.generate("chat", "me too")
        del stream  # the browser went away without closing it
        # The worker cancelled it and freed the slot: a new chat is admitted.
        admitted, deadline = None, time.monotonic() + 10
        while admitted is None and time.monotonic() < deadline:
            try:
                admitted = worker.generate("chat", "my turn", options=GenerateOptions(max_new_tokens=2))
            except Busy:
                time.sleep(0.05)
        assert admitted is not None, "the dropped chat still holds the only slot"
        assert list(admitted)[-1].done
        assert wait_for(lambda: worker.load() == 0)
    finally:
        worker.close()


def test_a_killed_worker_fails_open_requests_at_once(tiny_model_dir, tasks):
    worker = start_worker(tiny_model_dir, tasks, max_new_tokens=400)
    stream = chat_in_flight(worker, "A long story, please.")
    os.kill(worker.pid, signal.SIGKILL)
    started = time.monotonic()
    with pytest.raises(WorkerLost):
        list(stream)
    assert time.monotonic() - started < 5  # not the 35 s a timeout would take
    assert not worker.alive() and wait_for(lambda: worker.exitcode() is not None)
    assert worker.exitcode() == -signal.SIGKILL
    with pytest.raises(WorkerLost):
        worker.classify("sentiment", ["anyone there?"])
    worker.kill()


def test_a_stopped_worker_shows_as_stuck_and_is_killed_even_so(tiny_model_dir, tasks):
    worker = start_worker(tiny_model_dir, tasks)
    assert worker.stuck_for() < 1.0  # idle, the loop still turns
    os.kill(worker.pid, signal.SIGSTOP)  # a real hang: it cannot answer anything
    assert wait_for(lambda: worker.stuck_for() > 1.5, timeout=5)
    started = time.monotonic()
    worker.kill(grace_s=0.5)  # SIGTERM waits on a stopped process; SIGKILL does not
    assert time.monotonic() - started < 5
    assert not worker.alive() and worker.exitcode() == -signal.SIGKILL


def test_a_drained_close_lets_open_requests_finish(tiny_model_dir, tasks):
    worker = start_worker(tiny_model_dir, tasks, max_new_tokens=40)
    stream = worker.generate("chat", "Hello")
    closer = threading.Thread(target=worker.close, kwargs={"drain": True})
    closer.start()
    updates = list(stream)  # no WorkerLost: the close waited for it
    closer.join(30)
    assert updates[-1].done and not closer.is_alive()
    assert worker.exitcode() == 0  # it was asked to stop, and did


def test_the_exit_drill_ends_the_worker(tiny_model_dir, tasks):
    worker = start_worker(tiny_model_dir, tasks)
    worker.inject_fault("exit")
    assert wait_for(lambda: worker.exitcode() is not None, timeout=10) and worker.exitcode() == 1
    assert not worker.alive()
    worker.kill()


def test_a_worker_without_fault_drills_refuses_them_and_keeps_serving(tiny_model_dir, tasks):
    """``--fault-injection`` off: the worker's backend is not wrapped, so a drill that reaches it is refused."""
    from loguru import logger

    lines: list[str] = []
    sink = logger.add(lines.append, format="{message}")
    worker = WorkerProcess(WorkerSpec(tiny_model_dir, tasks, EngineConfig(max_new_tokens=4), backend=TEST_BACKEND,
                                      precision=TEST_PRECISION, fault_drills=False)).start()
    try:
        worker.inject_fault("error")
        assert wait_for(lambda: any("started without fault drills" in line for line in lines), timeout=10)
        assert worker.classify("sentiment", TEXTS)[0].label in ("positive", "negative")  # not the injected error
    finally:
        logger.remove(sink)
        worker.close()


def test_a_model_that_cannot_load_says_why(tmp_path, tasks):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelNotFound, match=str(tmp_path)) as error:
        WorkerProcess(WorkerSpec(tmp_path, tasks)).start()
    assert "install-default" in str(error.value)


def test_worker_logs_reach_the_web_process(tiny_model_dir, tasks):
    from loguru import logger

    lines: list[str] = []
    sink = logger.add(lines.append, format="{message}")
    try:
        worker = start_worker(tiny_model_dir, tasks)
        worker.close()
    finally:
        logger.remove(sink)
    assert any(f"[worker {worker.pid}]" in line and "loaded tiny-qwen2@test" in line for line in lines), lines


def test_cpu_progress_tells_a_computing_process_from_an_idle_one():
    """The hang rule's second half (ops.serving.vitals.CpuProgress), on this very process: idle for a
    window is no sign of life, a busy window is."""
    from ops.serving.vitals import BUSY_WINDOW_S, CpuProgress

    progress = CpuProgress()
    assert progress.last_seen(os.getpid()) == 0.0  # the first look only takes a reference
    time.sleep(BUSY_WINDOW_S + 0.1)
    assert progress.last_seen(os.getpid()) == 0.0  # asleep: no CPU used
    end = time.monotonic() + BUSY_WINDOW_S + 0.1
    while time.monotonic() < end:
        pass
    seen = progress.last_seen(os.getpid())
    assert seen > 0.0 and time.monotonic() - seen < 0.5
    assert CpuProgress().last_seen(None) == 0.0  # no process yet: nothing to see


def test_a_step_that_computes_past_max_step_s_is_a_hang_however_busy():
    """A slow step computes and is waited for; one that computes for ever is a runaway: past MAX_STEP_S of
    loop silence its CPU use no longer counts as life."""
    import struct

    from ops.serving import worker_process

    class Computing:
        def last_seen(self, pid):
            return time.monotonic()  # busy right now

    worker = worker_process.WorkerProcess.__new__(worker_process.WorkerProcess)
    worker._process, worker._beat, worker._progress = None, bytearray(8), Computing()
    struct.pack_into("d", worker._beat, 0, time.monotonic() - 30)  # a 30 s step on a loaded machine
    assert worker.stuck_for() < 1
    struct.pack_into("d", worker._beat, 0, time.monotonic() - worker_process.MAX_STEP_S - 5)
    assert worker.stuck_for() > worker_process.MAX_STEP_S
