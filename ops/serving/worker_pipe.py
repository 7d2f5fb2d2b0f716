"""The web side of one worker's pipe: its open requests, and a reader and a writer thread. No torch.

``submit`` sends a request and waits for the worker's admission, so bad input and a full queue raise at
once; replies come on a ``QueuedReplies`` whose closing cancels the job in the worker. When the pipe
ends, every open request fails at once: ``WorkerLost`` if the worker admitted it, else ``WorkerGone``
(it never ran, so the service may send it to the next worker). Messages: ``engine.ipc``.
"""

from __future__ import annotations

import functools
import itertools
import queue
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Callable

from loguru import logger

from engine.errors import InferenceTimeout, ModelUnavailable, WorkerGone, WorkerLost
from engine.ipc import Op, WorkerInfo
from engine.replies import QueuedReplies
from engine.tasks import TaskRegistry
from engine.kinds.registry import Request

__all__ = ["WorkerPipe"]


@dataclass(eq=False)
class _Open:
    """A request in the worker: where its replies go, and whether it was admitted."""

    sink: queue.Queue
    weight: int
    admitted: threading.Event = field(default_factory=threading.Event)
    refusal: BaseException | None = None
    heads: dict[str, dict] | None = None  # a task change's answer: the heads' states it left


class WorkerPipe:
    """One worker's pipe, from its ``READY`` on; ``on_end`` is called once when the pipe has ended."""

    def __init__(self, conn: Connection, pid: int | None, on_end: Callable[[], None]) -> None:
        self.pid = pid
        self.lost = threading.Event()  # the pipe ended: the process is gone or going
        self._conn = conn
        self._on_end = on_end
        self._ids = itertools.count(1)
        self._open: dict[int, _Open] = {}
        self._lock = threading.Lock()  # guards _open and lost
        self._outgoing: queue.SimpleQueue = queue.SimpleQueue()

    def await_ready(self, timeout_s: float, exitcode: Callable[[], int | None]) -> WorkerInfo:
        """The worker's ``WorkerInfo`` once loaded; raises its load error, or why it never answered."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self._conn.poll(0.2):
                if exitcode() is not None:
                    raise ModelUnavailable(f"The model's worker process exited while loading "
                                           f"(exit code {exitcode()}).")
                continue
            try:
                message = self._conn.recv()
            except (EOFError, OSError):
                raise ModelUnavailable(f"The model's worker process exited while loading "
                                       f"(exit code {exitcode()}).") from None
            if message[0] is Op.READY:
                return message[1]
            if message[0] is Op.FAILED:
                raise message[1]
            if message[0] is Op.LOG:
                self._log(*message[1:])
        raise ModelUnavailable(f"The model took longer than {timeout_s:.0f} s to load.")

    def start(self) -> None:
        """Start the reader and the writer (after ``await_ready``)."""
        threading.Thread(target=self._read, name=f"worker-{self.pid}-reader", daemon=True).start()
        threading.Thread(target=self._write, name=f"worker-{self.pid}-writer", daemon=True).start()

    def send(self, message: tuple) -> None:
        """Queue a message for the writer (``None`` ends the writer)."""
        self._outgoing.put(message)

    def submit(self, task: str, request: Request, timeout: float) -> QueuedReplies:
        """Send ``request`` and wait for the worker's admission: its replies, or its refusal raised."""
        rid = next(self._ids)
        stream = QueuedReplies(timeout, on_close=functools.partial(self._cancel, rid))
        entry = self._register(rid, _Open(stream.sink, request.weight))
        self.send((Op.SUBMIT, rid, task, request))
        if not entry.admitted.wait(timeout):
            stream.close()
            raise InferenceTimeout()
        if entry.refusal is not None:
            self._forget(rid)
            raise entry.refusal
        return stream

    def update_tasks(self, tasks: TaskRegistry, timeout: float) -> dict[str, dict] | None:
        """Have the worker serve ``tasks``: the heads' states it left, or its refusal raised."""
        rid = next(self._ids)
        entry = self._register(rid, _Open(queue.Queue(), 0))
        self.send((Op.TASKS, rid, tasks))
        answered = entry.admitted.wait(timeout)
        self._forget(rid)
        if not answered:
            raise InferenceTimeout("The worker did not confirm the task change in time.")
        if entry.refusal is not None:
            raise entry.refusal
        return entry.heads

    def load(self) -> int:
        """Texts and chats sent and not yet answered in full: the queue depth."""
        with self._lock:
            return sum(o.weight for o in self._open.values())

    def finish(self) -> None:
        """The process is gone: fail what is open, end the writer, close the pipe."""
        self._fail_open()
        self.send(None)
        self._conn.close()

    def _register(self, rid: int, entry: _Open) -> _Open:
        with self._lock:
            if self.lost.is_set():
                raise WorkerGone()
            self._open[rid] = entry
        return entry

    def _cancel(self, rid: int) -> None:
        if self._forget(rid) is not None and not self.lost.is_set():
            self.send((Op.CANCEL, rid))

    def _forget(self, rid: int) -> _Open | None:
        with self._lock:
            return self._open.pop(rid, None)

    def _write(self) -> None:
        while (message := self._outgoing.get()) is not None:
            try:
                self._conn.send(message)
            except (OSError, ValueError):  # the process is gone; the reader fails what was open
                return

    def _read(self) -> None:
        while True:
            try:
                message = self._conn.recv()
            except (EOFError, OSError, ValueError):
                break
            op = message[0]
            if op is Op.REPLY:
                rid, item = message[1:]
                with self._lock:
                    entry = self._open.get(rid)
                    if entry is not None and (isinstance(item, (BaseException, list)) or item.done):
                        del self._open[rid]  # answered in full
                if entry is not None:
                    entry.sink.put(item)
            elif op in (Op.ACCEPTED, Op.REJECTED, Op.TASKS_DONE):  # TASKS_DONE: an error or None, and the heads
                with self._lock:
                    entry = self._open.get(message[1])
                if entry is not None:
                    entry.refusal = None if op is Op.ACCEPTED else message[2]
                    if op is Op.TASKS_DONE and len(message) > 3:
                        entry.heads = message[3]
                    entry.admitted.set()
            elif op is Op.LOG:
                self._log(*message[1:])
        self._fail_open()
        self._on_end()

    def _fail_open(self) -> None:
        """The worker is gone: every open request fails now instead of waiting out its timeout,
        ``WorkerGone`` if the worker never admitted it, else ``WorkerLost``."""
        with self._lock:
            self.lost.set()
            entries, self._open = list(self._open.values()), {}
        for entry in entries:
            if not entry.admitted.is_set():
                entry.refusal = WorkerGone()
                entry.admitted.set()
            else:
                entry.sink.put(WorkerLost())

    def _log(self, level: str, text: str) -> None:
        logger.opt(depth=0).log(level, "[worker {}] {}", self.pid, text)
