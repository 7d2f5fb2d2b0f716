"""The engine: one model thread that drives one backend (one loaded model) for many tasks.

No torch: the model is behind ``engine.backend``. Requests are admitted on the caller's thread by their
kind's gate (``engine.kinds``); this module runs what is admitted, each kind's rounds in turn. The
concurrency rule (who may touch the model, when) is ``Engine``'s docstring.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from loguru import logger

from engine.backend import Backend
from engine.errors import AllInOneError, InferenceTimeout, InvalidInput, ModelUnavailable
from engine.kinds.base import Sink
from engine.kinds.registry import KINDS, Admission, InferenceCalls, Request, reply_timeout
from engine.replies import QueuedReplies
from engine.tasks import TaskRegistry
from engine.teach import BackgroundRounds, FeatureJob, FeatureRequest
from engine.types import CHAT_TIMEOUT_MARGIN_S, EngineConfig, TaskInfo

__all__ = ["Engine", "EngineConfig", "Sink"]

IDLE_POLL_S = 0.5  # an idle worker still turns its loop (and beats) this often
TASK_UPDATE_TIMEOUT_S = 60.0  # building a classify task's scorer is one prefill; a queue ahead of it drains first


@dataclass(eq=False)
class _TaskUpdate:
    """A change of the task registry, applied by the model thread in inbox order."""

    tasks: TaskRegistry
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None


class Engine(InferenceCalls):
    """Answers classify and generate requests on one model, by one rule:

    Only the engine's worker thread touches the model (the backend's classifier and decoder; its
    ``text`` and the classifier's ``head_states`` are safe from any thread). Everyone else (UI
    handlers, API calls, self-tests) submits a job and waits for its result. The worker loops:

      1. take new jobs from the inbox (``priority`` chats to the front);
      2. run one round of each kind with work pending (``engine.kinds.registry.KINDS``, in order):
         classify: one batch of one task's texts (up to ``max_batch``, one forward pass over their
         suffixes); generate: admit waiting chats while fewer than ``max_active_chats`` run (a
         ``priority`` chat may take one slot past that), prefill one chunk
         (``engine.kinds.generate.PREFILL_CHUNK_TOKENS``) of the oldest prompt not yet in, and advance
         every active chat by one token in ONE forward pass (``Decoder.step``);
      3. when the foreground (2) is idle and due, or every ``engine.teach.MAX_WAIT_S`` at least, read
         one batch of a fit's features (``engine.teach.BackgroundRounds``: low priority).

    So a classification waits behind chat work for at most one prefill chunk and one decode step (or
    one feature batch), however many chats run and however long their prompts; decode steps are bound
    by reading the weights, so eight chats cost little more per step than one, and each still streams
    the same greedy answer it would get alone. A model is never swapped under a running stream: a new
    model gets a new Engine, and the old one finishes its work and closes (``ops.serving.lifecycle``).
    Task changes and the memory bound: docs/internals.md, "Inside the worker".

    Requests come in through its ``Admission`` (their kind's gate); the worker thread hands every
    job back to it (``release``) when done with it, so ``load`` stays true.
    ``on_beat`` is called by the worker thread on every turn of its loop (at
    least every ``IDLE_POLL_S`` while idle, and between steps): the worker
    process publishes it so the web process can tell a hang from the outside.
    """

    def __init__(self, backend: Backend, tasks: TaskRegistry, config: EngineConfig = EngineConfig(),
                 on_beat: Callable[[], None] | None = None) -> None:
        self.backend = backend
        self.config = config
        self._admission = Admission(backend, tasks, config)
        self._inbox: queue.Queue = queue.Queue()
        # Each kind's work, in the registry's order: a classification waits behind one chat round at most.
        self._rounds = {name: kind.rounds(backend, self._admission.gates[name], config) for name, kind in KINDS.items()}
        self._background = BackgroundRounds()
        self._closing = threading.Event()
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._worker = threading.Thread(target=self._run, name=f"model-worker[{backend.info.label}]", daemon=True)
        self._step_started: float | None = None
        self._on_beat = on_beat or (lambda: None)

    # ----- lifecycle -------------------------------------------------------

    def start(self, timeout: float = 600.0) -> "Engine":
        """Start the worker and wait until it has warmed up (task prefixes cached)."""
        self._worker.start()
        if not self._ready.wait(timeout):
            raise ModelUnavailable("The model took too long to warm up.")
        if self._startup_error is not None:
            raise ModelUnavailable(f"Warming up {self.backend.info.label} failed: {self._startup_error}") from (
                self._startup_error
            )
        return self

    def close(self, drain: bool = False, timeout: float | None = None) -> None:
        """Stop the worker. With ``drain``, running and queued work finishes first.

        A drain waits up to the request timeout (plus a margin) by default: no
        request can legitimately run longer, so a drain never cuts one short."""
        if timeout is None:
            timeout = self.config.request_timeout_s + CHAT_TIMEOUT_MARGIN_S if drain else 30.0
        if drain:
            deadline = time.monotonic() + timeout
            while self.busy() and time.monotonic() < deadline:
                time.sleep(0.05)
        self._closing.set()
        self._inbox.put(None)
        if self._worker.is_alive() and threading.current_thread() is not self._worker:
            self._worker.join(timeout)

    def load(self) -> int:
        """Texts and chats queued or running: the engine's queue depth."""
        return self._admission.load()

    def busy(self) -> bool:
        return self.load() > 0

    def stuck_for(self) -> float:
        """Seconds the worker has spent on its current step (0 when idle): the hang detector's input."""
        started = self._step_started
        return 0.0 if started is None else time.monotonic() - started

    # ----- the public interface -------------------------------------------

    @property
    def tasks(self) -> TaskRegistry:
        """The tasks served now: admission's registry, the one new requests are checked against."""
        return self._admission.tasks

    def task_infos(self) -> list[TaskInfo]:
        return self.tasks.infos()

    def update_tasks(self, tasks: TaskRegistry, timeout: float = TASK_UPDATE_TIMEOUT_S) -> None:
        """Serve ``tasks`` from now on (docs/internals.md, "Inside the worker"). Raises the backend's
        error, with the old tasks still serving, when it cannot apply them; ``InferenceTimeout`` when the
        queue ahead is too long to wait for (the change still happens, in turn)."""
        update = _TaskUpdate(tasks)
        if self._closing.is_set():
            raise ModelUnavailable()
        self._inbox.put(update)
        if not update.done.wait(timeout):
            raise InferenceTimeout("The task change is queued behind other work; it applies in turn.")
        if update.error is not None:
            raise update.error

    def submit(self, task: str, request: Request) -> QueuedReplies:
        """Queue a request; its replies come on the returned stream (see ``engine.replies``).
        Bad input and a full queue raise here, before anything is queued."""
        stream = QueuedReplies(reply_timeout(request, self.config))
        stream.on_close(self.start_job(task, request, stream.sink).set)
        return stream

    def start_job(self, task: str, request: Request, sink: Sink) -> threading.Event:
        """Queue a request whose replies go to ``sink``; returns the event that cancels it.
        Raises ``InvalidInput`` or ``Busy`` at once, before anything is queued."""
        if isinstance(request, FeatureRequest):  # a fit's low-priority reading (engine.teach)
            job = self._background.job(self.tasks, task, request, sink, threading.Event())
            if self._closing.is_set():
                raise ModelUnavailable()
            self._inbox.put(job)
            return job.cancelled
        job = self._admission.admit(task, request, sink)
        try:
            if self._closing.is_set():
                raise ModelUnavailable()
            self._inbox.put(job)
        except BaseException:  # never queued: its counted place must not leak
            self._admission.release(job)
            raise
        return job.cancelled

    # ----- the worker --------------------------------------------------------

    def _run(self) -> None:
        try:
            _prepare(self._rounds, self.tasks)
        except BaseException as exc:  # reported by start()
            self._startup_error = exc
            self._ready.set()
            return
        self._ready.set()
        self.backend.on_ready()
        while not self._closing.is_set():
            self._on_beat()
            self.backend.between_steps()
            try:
                self._take_jobs(block=not any(self._rounds.values()), wait=self._background.wait_s())
                if not any(self._rounds.values()):  # no request pending in any kind's rounds
                    if self._background.due(foreground_idle=True):
                        self._step_started = time.monotonic()
                        self._background.run(self.backend, self.tasks)
                    continue
                self._step_started = time.monotonic()
                for rounds in self._rounds.values():
                    if rounds:
                        rounds.run(self.tasks)
                self._background.foreground_ran()
                if self._background.due(foreground_idle=False):  # others' work that never pauses: after it
                    self._background.run(self.backend, self.tasks)
            except Exception:  # the worker must survive any one job's failure
                logger.exception("model worker: unexpected error")
            finally:
                self._step_started = None
        self._fail_all(ModelUnavailable())

    def _take_jobs(self, block: bool, wait: float | None = None) -> None:
        """Move the inbox's jobs to their rounds; ``block``: wait for one, up to ``IDLE_POLL_S`` or ``wait``."""
        timeout = IDLE_POLL_S if wait is None else min(wait, IDLE_POLL_S)
        try:
            job = self._inbox.get(timeout=timeout) if block and timeout > 0 else self._inbox.get_nowait()
        except queue.Empty:
            return
        while job is not None:
            if isinstance(job, _TaskUpdate):
                self._apply_tasks(job)
            elif isinstance(job, FeatureJob):
                self._background.add(job)
            else:
                self._rounds[job.kind].add(job)
            try:
                job = self._inbox.get_nowait()
            except queue.Empty:
                job = None

    def _apply_tasks(self, update: _TaskUpdate) -> None:
        for rounds in self._rounds.values():  # queued before the change: answered on the definitions admitted with
            rounds.drain(self.tasks)
        try:
            _prepare(self._rounds, update.tasks)
        except BaseException as exc:  # the backend kept its old scorers: so do we
            logger.warning("task change refused: {}", exc)
            update.error = exc if isinstance(exc, AllInOneError) else InvalidInput(f"The tasks cannot be served: {exc}")
        else:
            self._admission.tasks = update.tasks
            logger.info("tasks now served: {}", ", ".join(update.tasks.tasks))
        update.done.set()

    def _fail_all(self, error: AllInOneError) -> None:
        """Fail every queued and running request with ``error`` (on close, or an injected fault)."""
        self._take_jobs(block=False)
        for rounds in self._rounds.values():
            rounds.fail_all(error)
        self._background.fail_all(error)


def _prepare(rounds_of_kinds: dict, tasks: TaskRegistry) -> None:
    """Each kind builds what its tasks need (a classify task's scorer); all or nothing is the backend's rule."""
    for kind, rounds in rounds_of_kinds.items():
        rounds.prepare(tasks.of_kind(kind))
