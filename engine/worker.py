"""The worker process: one model, one ``Engine``, requests from the web process over a pipe.

``python -m engine.worker PIPE_FD BEAT_FD`` (started by ``ops.serving.worker_process``): a socket of
``engine.ipc`` messages and 8 bytes of shared memory for the heartbeat. It loads the ``WorkerSpec``'s
version, says ``READY`` and serves until told to stop or the pipe ends. Its threads:
docs/internals.md, "Inside the worker".
"""

from __future__ import annotations

import mmap
import os
import queue
import signal
import struct
import sys
import threading
import time
from multiprocessing.connection import Connection

from loguru import logger

from engine.backend import Backend
from engine.backends import open_backend
from engine.engine import Engine
from engine.errors import AllInOneError, InferenceFailed, ModelUnavailable
from engine.faults import FaultyBackend
from engine.heads import HeadStatus
from engine.ipc import Op, WorkerInfo, WorkerSpec
from engine.chat import ChatUpdate
from engine.types import Fault

__all__ = ["run", "main"]

PROCESS_NAME = b"allinone-worker"


class _Outbox:
    """Every message to the web process goes through here, in order, from one writer thread."""

    def __init__(self, conn) -> None:
        self._conn = conn
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._write, name="worker-outbox", daemon=True)
        self._thread.start()

    def send(self, message: tuple) -> None:
        self._queue.put(message)

    def _write(self) -> None:
        while (message := self._queue.get()) is not None:
            try:
                self._conn.send(message)
            except (OSError, ValueError):  # the web process is gone: nobody to answer
                os._exit(0)

    def close(self, timeout: float = 5.0) -> None:
        self._queue.put(None)
        self._thread.join(timeout)


class _PipeSink:
    """A job's replies, sent to the web process tagged with the request id."""

    def __init__(self, rid: int, outbox: _Outbox, jobs: dict) -> None:
        self._rid, self._outbox, self._jobs = rid, outbox, jobs

    def put(self, item: object) -> None:
        if isinstance(item, BaseException) and not isinstance(item, AllInOneError):
            item = InferenceFailed()  # the engine logged the cause; only our own errors cross
        self._outbox.send((Op.REPLY, self._rid, item))
        if not isinstance(item, ChatUpdate) or item.done:
            self._jobs.pop(self._rid, None)  # answered in full: nothing left to cancel


def _name_process() -> None:
    """Show as ``allinone-worker`` in ps and top (Linux)."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(15, PROCESS_NAME, 0, 0, 0)  # PR_SET_NAME
    except (OSError, AttributeError):
        pass


def _forward_logs(outbox: _Outbox) -> None:
    """Log records go to the web process, whose logger owns the log files."""
    logger.remove()

    def sink(message) -> None:
        outbox.send((Op.LOG, message.record["level"].name, str(message).rstrip()))

    logger.add(sink, level="INFO", format="{message}", backtrace=False, diagnose=False)


def _load(spec: WorkerSpec, beat) -> tuple[Engine, Backend]:
    backend = open_backend(spec.backend, spec.model_dir, spec.precision, spec.device, spec.engine)
    if spec.fault_drills:  # only then: a drill-free worker's requests never pass the wrapper
        backend = FaultyBackend(backend)
    on_beat = lambda: struct.pack_into("d", beat, 0, time.monotonic())  # noqa: E731
    engine = Engine(backend, spec.tasks, spec.engine, on_beat=on_beat).start()
    on_beat()
    info = backend.info
    logger.info("worker {} loaded {} on {} ({}) in {} ({}) on {} in {:.1f} s", os.getpid(), info.label, info.backend,
                info.backend_reason, info.precision, info.precision_reason, info.device, info.load_seconds)
    return engine, backend


def _serve(conn, engine: Engine, backend: Backend, outbox: _Outbox) -> None:
    jobs: dict[int, threading.Event] = {}
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):  # the web process is gone
            os._exit(0)
        op = message[0]
        if op is Op.SUBMIT:
            rid, task, request = message[1:]
            try:
                jobs[rid] = engine.start_job(task, request, _PipeSink(rid, outbox, jobs))
            except AllInOneError as exc:
                outbox.send((Op.REJECTED, rid, exc))
            except Exception as exc:  # a bug, not the user's fault: logged, answered generically
                logger.opt(exception=exc).error("worker: could not queue a request")
                outbox.send((Op.REJECTED, rid, InferenceFailed()))
            else:
                outbox.send((Op.ACCEPTED, rid))
        elif op is Op.CANCEL:
            cancelled = jobs.pop(message[1], None)
            if cancelled is not None:
                cancelled.set()
        elif op is Op.FAULT:
            if message[1] == Fault.EXIT:
                os._exit(1)  # as a crash would: no goodbye, no cleanup
            if not isinstance(backend, FaultyBackend):
                logger.error("worker: fault drill refused: this worker was started without fault drills")
                continue
            try:
                backend.arm(message[1])
            except AllInOneError as exc:
                logger.error("worker: fault drill refused: {}", exc)
        elif op is Op.TASKS:  # answered from its own thread: the receiver must not wait for the model thread
            threading.Thread(target=_update_tasks, args=(engine, backend, message[1], message[2], outbox),
                             name="task-update", daemon=True).start()
        elif op is Op.STOP:
            engine.close()
            return


def _head_states(backend: Backend) -> dict[str, dict]:
    """Per classify task with examples, its head's state (``WorkerInfo.heads``)."""
    return {task: state.to_api() for task, state in backend.classifier.head_states().items()
            if state.status != HeadStatus.NONE}


def _update_tasks(engine: Engine, backend: Backend, rid: int, tasks, outbox: _Outbox) -> None:
    try:
        engine.update_tasks(tasks)
    except AllInOneError as exc:
        outbox.send((Op.TASKS_DONE, rid, exc, None))
    except Exception as exc:  # a bug: logged here, answered generically
        logger.opt(exception=exc).error("worker: the task change failed")
        outbox.send((Op.TASKS_DONE, rid, InferenceFailed("The task change failed."), None))
    else:  # the heads as the new tasks found them: one fitted since (ops.api.teach), or gone stale
        outbox.send((Op.TASKS_DONE, rid, None, _head_states(backend)))


def run(conn, spec: WorkerSpec, beat) -> None:
    """The worker process's main function; see the module doc."""
    _name_process()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the web process stops us
    outbox = _Outbox(conn)
    _forward_logs(outbox)
    try:
        engine, backend = _load(spec, beat)
    except Exception as exc:
        error = exc if isinstance(exc, AllInOneError) else ModelUnavailable(f"Loading the model failed: {exc}")
        if not isinstance(exc, AllInOneError):
            logger.opt(exception=exc).error("worker: loading failed")
        outbox.send((Op.FAILED, error))
        outbox.close()
        return
    info = backend.info
    outbox.send((Op.READY, WorkerInfo(info.label, info.path, info.precision, info.precision_reason, info.device,
                                      info.load_seconds, os.getpid(), _head_states(backend), info.backend,
                                      info.backend_reason)))
    try:
        _serve(conn, engine, backend, outbox)
    finally:
        outbox.close()


def main(argv: list[str]) -> None:
    """``python -m engine.worker PIPE_FD BEAT_FD``: started by ``ops.serving.worker_process`` only."""
    conn = Connection(int(argv[0]))
    beat = mmap.mmap(int(argv[1]), 8)
    try:
        spec = conn.recv()
    except (EOFError, OSError):
        return  # the web process went away before sending anything
    run(conn, spec, beat)


if __name__ == "__main__":
    main(sys.argv[1:])
