"""One model worker process, seen from the web process: start it, talk to it, stop it. No torch here.

``WorkerProcess(spec).start()`` spawns a fresh interpreter,
``python -m engine.worker``, never a fork of this threaded process, and waits
until the worker has loaded and warmed up its model. (Not
``multiprocessing``'s spawn: that re-runs the parent's main script in the
child, so a script that starts the app without a main guard starts a second
app.) The pipe is a socket pair carrying ``multiprocessing.connection``
messages (``engine.ipc``); the heartbeat is 8 bytes of shared memory. From
then on the worker is an ``Inference`` like the engine itself:

- ``submit`` sends the request and waits for the worker's admission, so bad
  input and a full queue raise at once, as in-process; the replies come on a
  ``QueuedReplies``, and closing or dropping that stream cancels the job in the
  worker;
- when the process ends for any reason (killed, crashed, stopped), every open
  request fails at once, its reader sees the pipe end: ``WorkerLost`` for the
  ones the worker had admitted, ``WorkerGone`` for those it never took (they
  never ran, so the service may send them to the next worker);
- ``stuck_for`` reads the worker's heartbeat from shared memory, so a hang
  (or a SIGSTOP) shows even though the worker cannot answer; a worker whose
  loop is slow to turn but whose process keeps using the CPU (a long step
  on an overloaded machine) is computing, not stuck; ``rss_bytes`` is the
  worker's own resident memory (anonymous pages).

Stopping: ``close(drain=True)`` lets open requests finish (up to the request
timeout), then asks the worker to exit; ``kill`` is for a suspect worker:
SIGTERM, then SIGKILL after a grace period. Either way the process is gone
afterwards, and with it all the memory it held.
"""

from __future__ import annotations

import functools
import itertools
import mmap
import os
import queue
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection
from pathlib import Path

from loguru import logger

from engine.errors import InferenceTimeout, ModelUnavailable, WorkerGone, WorkerLost
from engine.ipc import Op, WorkerInfo, WorkerSpec
from engine.replies import QueuedReplies
from engine.tasks import TaskRegistry
from engine.types import CHAT_TIMEOUT_MARGIN_S, ChatRequest, Fault, InferenceCalls, Request, TaskInfo
from ops.common.paths import REPO_ROOT

__all__ = ["WorkerProcess", "START_TIMEOUT_S", "KILL_GRACE_S"]

START_TIMEOUT_S = 600.0  # loading and warming up a model; a worker silent for longer is killed
KILL_GRACE_S = 2.0  # SIGTERM, then SIGKILL after this long
STOP_TIMEOUT_S = 10.0  # a worker asked to stop gets this long before it is killed
TASK_UPDATE_TIMEOUT_S = 90.0  # the worker's own wait (60 s) plus a margin
# A worker using this share of a core is computing (a slow step), not hung: a starved step on a machine
# with four busy neighbours still got about a third of a core; a hung worker's idle threads use ~0.1 %.
BUSY_SHARE = 0.05
BUSY_WINDOW_S = 1.0  # the share is judged over at least this long (the CPU clock ticks in 10 ms steps)
# A step computing longer than this is no slow step but a runaway one: its CPU use stops counting as life.
# Two request timeouts: no step of a request can legitimately outlive its request.
MAX_STEP_S = 120.0
CODE_ROOT = str(REPO_ROOT)  # where ``engine`` is importable from


@dataclass(eq=False)
class _Open:
    """A request in the worker: where its replies go, and whether it was admitted."""

    sink: queue.Queue
    weight: int
    admitted: threading.Event = field(default_factory=threading.Event)
    refusal: BaseException | None = None
    heads: dict[str, dict] | None = None  # a task change's answer: the heads' states it left


class CpuProgress:
    """When a process last used the CPU as a computing process does (at least ``BUSY_SHARE`` of a core
    between two looks): what tells a slow step from a hung one. A step on an overloaded machine keeps
    computing however long it takes; a hung or stopped worker uses nothing (its idle threads wake for
    microseconds). Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: tuple[float, float] | None = None  # (CPU seconds, monotonic time) at the last look
        self._busy_at = 0.0

    def last_seen(self, pid: int | None) -> float:
        """The monotonic time the process was last seen computing (0.0: never), looking now."""
        cpu = _cpu_seconds(pid)
        now = time.monotonic()
        with self._lock:
            if cpu is not None:
                if self._seen is None:
                    self._seen = (cpu, now)
                elif now - self._seen[1] >= BUSY_WINDOW_S:  # shorter, one clock tick of CPU could pass for 5 %
                    if cpu - self._seen[0] >= BUSY_SHARE * (now - self._seen[1]):
                        self._busy_at = now
                    self._seen = (cpu, now)
            return self._busy_at


def _cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU seconds of ``pid`` (Linux's /proc), ``None`` where unknown."""
    if not pid:
        return None
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
    except (OSError, ValueError, IndexError):
        return None


class WorkerProcess(InferenceCalls):
    """A model in its own process; see the module doc."""

    def __init__(self, spec: WorkerSpec, start_timeout_s: float = START_TIMEOUT_S) -> None:
        self.spec = spec
        self._start_timeout_s = start_timeout_s
        self.info: WorkerInfo | None = None
        self._process = None
        self._conn = None
        self._beat = None
        self._progress = CpuProgress()
        self._ids = itertools.count(1)
        self._open: dict[int, _Open] = {}
        self._lock = threading.Lock()  # guards _open and _lost
        self._outgoing: queue.SimpleQueue = queue.SimpleQueue()
        self._closing = False
        self._lost = threading.Event()  # the pipe ended: the process is gone or going

    # ----- lifecycle ----------------------------------------------------------------

    def start(self) -> "WorkerProcess":
        """Spawn the worker and wait until its model is ready; raises the worker's load error."""
        ours, theirs = socket.socketpair()
        with tempfile.TemporaryFile() as beat_file:  # unlinked: shared by the two mappings alone
            beat_file.truncate(8)
            self._beat = mmap.mmap(beat_file.fileno(), 8)
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (CODE_ROOT, os.environ.get("PYTHONPATH"))
                                                               if p)}
            fds = (theirs.fileno(), beat_file.fileno())
            self._process = subprocess.Popen([sys.executable, "-m", "engine.worker", *map(str, fds)],
                                             pass_fds=fds, stdin=subprocess.DEVNULL, env=env)
        theirs.close()
        self._conn = Connection(ours.detach())
        try:
            self._conn.send(self.spec)
            self.info = self._await_ready()
        except BaseException:
            self.kill()
            raise
        threading.Thread(target=self._read, name=f"worker-{self.pid}-reader", daemon=True).start()
        threading.Thread(target=self._write, name=f"worker-{self.pid}-writer", daemon=True).start()
        return self

    def _await_ready(self) -> WorkerInfo:
        deadline = time.monotonic() + self._start_timeout_s
        while time.monotonic() < deadline:
            if not self._conn.poll(0.2):
                if self._process.poll() is not None:
                    raise ModelUnavailable(f"The model's worker process exited while loading "
                                           f"(exit code {self._process.returncode}).")
                continue
            try:
                message = self._conn.recv()
            except (EOFError, OSError):
                raise ModelUnavailable(f"The model's worker process exited while loading "
                                       f"(exit code {self.exitcode()}).") from None
            if message[0] is Op.READY:
                return message[1]
            if message[0] is Op.FAILED:
                raise message[1]
            if message[0] is Op.LOG:
                self._log(*message[1:])
        raise ModelUnavailable(f"The model took longer than {self._start_timeout_s:.0f} s to load.")

    def close(self, drain: bool = False, timeout: float | None = None) -> None:
        """Stop the worker. With ``drain``, open requests finish first (up to ``timeout``,
        by default the request timeout plus a margin: no request can legitimately run longer)."""
        if drain:
            limit = self.spec.engine.request_timeout_s + CHAT_TIMEOUT_MARGIN_S if timeout is None else timeout
            deadline = time.monotonic() + limit
            while self.load() and not self._lost.is_set() and time.monotonic() < deadline:
                time.sleep(0.05)
        self._closing = True
        if self._process is None or self._process.poll() is not None:
            self._finish()
            return
        self._outgoing.put((Op.STOP,))
        try:
            self._process.wait(STOP_TIMEOUT_S if timeout is None else timeout)
        except subprocess.TimeoutExpired:
            pass
        self.kill()

    def kill(self, grace_s: float = KILL_GRACE_S) -> None:
        """End the process however it is (hung, stopped, busy): SIGTERM, SIGKILL after ``grace_s``."""
        self._closing = True
        process = self._process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(grace_s)
            except subprocess.TimeoutExpired:
                logger.warning("worker {} ignored SIGTERM for {:.0f} s: SIGKILL", process.pid, grace_s)
                process.kill()
                process.wait()
        self._finish()

    def _finish(self) -> None:
        self._fail_open()
        self._outgoing.put(None)  # ends the writer
        if self._conn is not None:
            self._conn.close()

    # ----- what the supervisor and the watchdog read ------------------------------------

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    @property
    def model_label(self) -> str | None:
        return None if self.info is None else self.info.label

    @property
    def model_path(self) -> Path | None:
        return None if self.info is None else Path(self.info.path)

    @property
    def precision(self) -> tuple[str, str] | None:
        return None if self.info is None else (self.info.precision, self.info.precision_reason)

    @property
    def backend(self) -> tuple[str, str] | None:
        return None if self.info is None else (self.info.backend, self.info.backend_reason)

    @property
    def heads(self) -> dict[str, dict]:
        """Per classify task with examples, its head's state on this model (``engine.heads``), as of the load
        or the last task change (a head fitted since, ``ops.api.teach``, or gone stale)."""
        return {} if self.info is None else dict(self.info.heads)

    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None and not self._lost.is_set()

    def exitcode(self) -> int | None:
        """The process's exit status (negative: the signal that ended it); None while it runs."""
        return None if self._process is None else self._process.poll()

    def stuck_for(self) -> float:
        """Seconds the worker has shown no sign of life: its loop has not turned (it turns at least every
        0.5 s when idle) and its process has used no CPU to speak of (``CpuProgress``)."""
        beat = struct.unpack_from("d", self._beat)[0] if self._beat is not None else 0.0
        if not beat:
            return 0.0
        now = time.monotonic()
        computing = self._progress.last_seen(self.pid)
        alive = max(beat, computing if now - beat <= MAX_STEP_S else 0.0)
        return max(now - alive, 0.0)

    def rss_bytes(self) -> int:
        """The worker's own resident memory: anonymous and shared-memory pages (``RssAnon`` +
        ``RssShmem``, Linux), without the model files' pages, which the kernel may drop and reread,
        and which both the old and the new worker map during a swap. Elsewhere: the plain RSS."""
        if not self.pid:
            return 0
        try:
            with open(f"/proc/{self.pid}/status") as status:
                fields = dict(line.split(":", 1) for line in status if line.startswith(("RssAnon:", "RssShmem:")))
            if fields:
                return sum(int(value.split()[0]) for value in fields.values()) * 1024
        except (OSError, ValueError, IndexError):
            pass
        import psutil

        try:
            return psutil.Process(self.pid).memory_info().rss
        except psutil.Error:
            return 0

    def load(self) -> int:
        """Texts and chats sent and not yet answered in full: the queue depth."""
        with self._lock:
            return sum(o.weight for o in self._open.values())

    def busy(self) -> bool:
        return self.load() > 0

    # ----- Inference ------------------------------------------------------------------

    def task_infos(self) -> list[TaskInfo]:
        return self.spec.tasks.infos()

    def submit(self, task: str, request: Request) -> QueuedReplies:
        if self._closing:
            raise ModelUnavailable()
        timeout = self.spec.engine.request_timeout_s + (CHAT_TIMEOUT_MARGIN_S if isinstance(request, ChatRequest) else 0)
        rid = next(self._ids)
        stream = QueuedReplies(timeout, on_close=functools.partial(self._cancel, rid))
        entry = _Open(stream.sink, request.weight)
        with self._lock:
            if self._lost.is_set():
                raise WorkerGone()
            self._open[rid] = entry
        self._outgoing.put((Op.SUBMIT, rid, task, request))
        if not entry.admitted.wait(timeout):
            stream.close()
            raise InferenceTimeout()
        if entry.refusal is not None:
            self._forget(rid)
            raise entry.refusal
        return stream

    def update_tasks(self, tasks: TaskRegistry, timeout: float = TASK_UPDATE_TIMEOUT_S) -> None:
        """Have the worker serve ``tasks`` (``Engine.update_tasks``); raises its refusal, old tasks kept."""
        rid = next(self._ids)
        entry = _Open(queue.Queue(), 0)
        with self._lock:
            if self._lost.is_set():
                raise WorkerGone()
            self._open[rid] = entry
        self._outgoing.put((Op.TASKS, rid, tasks))
        answered = entry.admitted.wait(timeout)
        self._forget(rid)
        if not answered:
            raise InferenceTimeout("The worker did not confirm the task change in time.")
        if entry.refusal is not None:
            raise entry.refusal
        self.spec = replace(self.spec, tasks=tasks)
        if entry.heads is not None and self.info is not None:  # ``heads`` as the new tasks found them
            self.info = replace(self.info, heads=entry.heads)

    def inject_fault(self, kind: Fault) -> None:
        """Forwarded to the worker (``exit`` ends it there; the engine applies the others)."""
        if not self.alive():
            raise ModelUnavailable()
        self._outgoing.put((Op.FAULT, Fault(kind)))

    # ----- the pipe -------------------------------------------------------------------

    def _cancel(self, rid: int) -> None:
        if self._forget(rid) is not None and not self._lost.is_set():
            self._outgoing.put((Op.CANCEL, rid))

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
        if not self._closing:
            logger.error("the model's worker process {} ended (exit code {})", self.pid, self._exit_code_soon())

    def _exit_code_soon(self) -> int | None:
        """Reap the ended process (no zombie left behind) and return its exit status."""
        try:
            return self._process.wait(1.0)
        except subprocess.TimeoutExpired:
            return None

    def _fail_open(self) -> None:
        """The worker is gone: every open request fails now instead of waiting out its timeout,
        ``WorkerGone`` if the worker never admitted it, else ``WorkerLost``."""
        with self._lock:
            self._lost.set()
            entries, self._open = list(self._open.values()), {}
        for entry in entries:
            if not entry.admitted.is_set():
                entry.refusal = WorkerGone()
                entry.admitted.set()
            else:
                entry.sink.put(WorkerLost())

    def _log(self, level: str, text: str) -> None:
        logger.opt(depth=0).log(level, "[worker {}] {}", self.pid, text)

