"""One model worker process, seen from the web process: start it, talk to it, stop it. No torch here.

``WorkerProcess(spec).start()`` spawns a fresh ``python -m engine.worker`` (never a fork, nor
``multiprocessing``'s spawn) and waits until it is ready; from then on it is an ``Inference``. The pipe
and its failure rules: ``ops.serving.worker_pipe``. How a hang is told from a slow step:
docs/internals.md, "The web process's serving path".
"""

from __future__ import annotations

import mmap
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from multiprocessing.connection import Connection
from pathlib import Path

from loguru import logger

from engine.errors import ModelUnavailable
from engine.ipc import Op, WorkerInfo, WorkerSpec
from engine.replies import QueuedReplies
from engine.kinds.registry import InferenceCalls, Request, reply_timeout
from engine.tasks import TaskRegistry
from engine.types import CHAT_TIMEOUT_MARGIN_S, Fault, TaskInfo
from ops.common.paths import REPO_ROOT
from ops.serving.vitals import CpuProgress, resident_bytes
from ops.serving.worker_pipe import WorkerPipe

__all__ = ["WorkerProcess", "START_TIMEOUT_S", "KILL_GRACE_S"]

START_TIMEOUT_S = 600.0  # loading and warming up a model; a worker silent for longer is killed
KILL_GRACE_S = 2.0  # SIGTERM, then SIGKILL after this long
STOP_TIMEOUT_S = 10.0  # a worker asked to stop gets this long before it is killed
TASK_UPDATE_TIMEOUT_S = 90.0  # the worker's own wait (60 s) plus a margin
# A step computing longer than this is no slow step but a runaway one: its CPU use stops counting as life.
# Two request timeouts: no step of a request can legitimately outlive its request.
MAX_STEP_S = 120.0
CODE_ROOT = str(REPO_ROOT)  # where ``engine`` is importable from


class WorkerProcess(InferenceCalls):
    """A model in its own process: the process and its vitals here, the requests on its ``WorkerPipe``.

    ``model_label``, ``model_path``, ``precision`` and ``backend`` (each a format or runtime and why) and
    ``heads`` (per classify task, its head's state as of the load or the last task change) are None (or
    empty) until the worker is ready. ``close(drain=True)`` lets open requests finish first; ``kill`` is
    for a suspect worker: SIGTERM, then SIGKILL. Either way the process, and all it held, is gone after.
    """

    def __init__(self, spec: WorkerSpec, start_timeout_s: float = START_TIMEOUT_S) -> None:
        self.spec = spec
        self._start_timeout_s = start_timeout_s
        self.info: WorkerInfo | None = None
        self.model_label: str | None = None
        self.model_path: Path | None = None
        self.precision: tuple[str, str] | None = None
        self.backend: tuple[str, str] | None = None
        self.heads: dict[str, dict] = {}
        self._process = None
        self._pipe: WorkerPipe | None = None
        self._beat = None
        self._progress = CpuProgress()
        self._closing = False

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
        conn = Connection(ours.detach())
        self._pipe = WorkerPipe(conn, self._process.pid, self._pipe_ended)
        try:
            conn.send(self.spec)
            info = self.info = self._pipe.await_ready(self._start_timeout_s, self.exitcode)
        except BaseException:
            self.kill()
            raise
        self.model_label, self.model_path = info.label, Path(info.path)
        self.precision, self.backend = (info.precision, info.precision_reason), (info.backend, info.backend_reason)
        self.heads = dict(info.heads)
        self._pipe.start()
        return self

    def close(self, drain: bool = False, timeout: float | None = None) -> None:
        """Stop the worker. With ``drain``, open requests finish first (up to ``timeout``,
        by default the request timeout plus a margin: no request can legitimately run longer)."""
        if drain:
            limit = self.spec.engine.request_timeout_s + CHAT_TIMEOUT_MARGIN_S if timeout is None else timeout
            deadline = time.monotonic() + limit
            while self.load() and not self._pipe.lost.is_set() and time.monotonic() < deadline:
                time.sleep(0.05)
        self._closing = True
        if self._process is not None and self._process.poll() is None:
            self._pipe.send((Op.STOP,))
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
        if self._pipe is not None:
            self._pipe.finish()

    def _pipe_ended(self) -> None:
        if not self._closing:
            logger.error("the model's worker process {} ended (exit code {})", self.pid, _reap(self._process))

    # ----- what the supervisor and the watchdog read ------------------------------------

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def alive(self) -> bool:
        return (self._process is not None and self._process.poll() is None
                and (self._pipe is None or not self._pipe.lost.is_set()))

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
        """The worker's own resident memory (``ops.serving.vitals.resident_bytes``)."""
        return resident_bytes(self.pid)

    def load(self) -> int:
        """Texts and chats sent and not yet answered in full: the queue depth."""
        return 0 if self._pipe is None else self._pipe.load()

    # ----- Inference ------------------------------------------------------------------

    def task_infos(self) -> list[TaskInfo]:
        return self.spec.tasks.infos()

    def submit(self, task: str, request: Request) -> QueuedReplies:
        if self._closing:
            raise ModelUnavailable()
        return self._pipe.submit(task, request, reply_timeout(request, self.spec.engine))

    def update_tasks(self, tasks: TaskRegistry, timeout: float = TASK_UPDATE_TIMEOUT_S) -> None:
        """Have the worker serve ``tasks`` (``Engine.update_tasks``); raises its refusal, old tasks kept."""
        heads = self._pipe.update_tasks(tasks, timeout)
        self.spec = replace(self.spec, tasks=tasks)
        if heads is not None and self.info is not None:  # ``heads`` as the new tasks found them
            self.info = replace(self.info, heads=heads)
            self.heads = dict(heads)

    def inject_fault(self, kind: Fault) -> None:
        """Forwarded to the worker (``exit`` ends it there; the engine applies the others)."""
        if not self.alive():
            raise ModelUnavailable()
        self._pipe.send((Op.FAULT, Fault(kind)))


def _reap(process: subprocess.Popen) -> int | None:
    """Reap the ended process (no zombie left behind) and return its exit status."""
    try:
        return process.wait(1.0)
    except subprocess.TimeoutExpired:
        return None
