"""The engine: one model thread that drives one backend (one loaded model) for many tasks.

It never imports torch: the model, its tokenizer and caches live behind the
seam in ``engine.backend``. A request is checked, fitted and counted on the
caller's thread first (``engine.admission``); this module runs what is
admitted. The concurrency rule, in one place:

    Only the engine's worker thread touches the model (the backend's model
    calls; ``encode`` and ``render`` are safe from any thread).
    Everyone else (UI handlers, API calls, self-tests) submits a job and
    waits for its result. The worker loops:

      1. take new jobs from the inbox (``priority`` chats to the front);
      2. run one batch of pending classifications (up to ``max_batch`` texts,
         one forward pass over their suffixes);
      3. start waiting chats while fewer than ``max_active_chats`` run (a
         ``priority`` chat may take one slot past that), at most
         ``ADMIT_PER_ROUND`` per round (each prompt prefilled alone);
      4. advance every active chat by one token in ONE forward pass
         (``Backend.step``: the torch backend keeps the chats' KV caches as
         one padded batch).

    So a classification waits at most one decode step plus one prefill,
    however many chats run; decode steps are bound by reading the weights,
    so eight chats cost little more per step than one, and each still streams
    its own tokens with the same greedy answer it would get alone. A model is
    never swapped under a running stream: a new model gets a new Engine, and
    the old one finishes its work and closes (see ``ops.lifecycle``).

Tasks can change while it serves (``update_tasks``): the change waits in the
inbox behind the jobs queued before it, which finish on the old definitions;
then the model thread builds the changed classify tasks' scorers (their
prompt prefixes) and only then do new requests see the new tasks. A change
the backend cannot apply (say, two labels that tokenize the same) is refused
whole, and the old tasks keep serving.

Memory is bounded: the KV caches hold at most ``max_active_chats`` x
(``context_tokens`` + ``max_new_tokens``) positions, and a finished chat's
cache is freed at once.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from loguru import logger

from engine.admission import Admission, ChatJob, ClassifyJob, Sink
from engine.backend import Backend
from engine.chat import ChatStream
from engine.errors import AllInOneError, InferenceFailed, InferenceTimeout, InvalidInput, ModelUnavailable
from engine.replies import ReplyStream
from engine.tasks import TaskRegistry
from engine.types import ChatRequest, ClassifyResult, EngineConfig, InferenceCalls, Request, TaskInfo

__all__ = ["Engine", "EngineConfig", "Sink"]

ADMIT_PER_ROUND = 1  # prefills per round: a prefill is compute-bound (about 1 s for a 50-token prompt here)
IDLE_POLL_S = 0.5  # an idle worker still turns its loop (and beats) this often
CHAT_TIMEOUT_MARGIN_S = 5.0  # a chat's caller waits this much past the deadline the worker itself stops at
TASK_UPDATE_TIMEOUT_S = 60.0  # building a classify task's scorer is one prefill; a queue ahead of it drains first


@dataclass(eq=False)
class _TaskUpdate:
    """A change of the task registry, applied by the model thread in inbox order."""

    tasks: TaskRegistry
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None


class Engine(InferenceCalls):
    """Answers classify and generate requests on one model; see the module doc for the rule.

    Requests come in through its ``Admission``; the worker thread hands every
    job back to it (``release``) when done with it, so ``load`` stays true.
    ``on_beat`` is called by the worker thread on every turn of its loop (at
    least every ``IDLE_POLL_S`` while idle, and between steps): the worker
    process publishes it so the web process can tell a hang from the outside.
    """

    def __init__(self, backend: Backend, tasks: TaskRegistry, config: EngineConfig = EngineConfig(),
                 on_beat: Callable[[], None] | None = None) -> None:
        self.backend = backend
        self.tasks = tasks
        self.config = config
        self._admission = Admission(backend, tasks, config)
        self._inbox: queue.Queue = queue.Queue()
        self._pending: list[ClassifyJob] = []
        self._waiting: list[ChatJob] = []
        self._active: list[ChatJob] = []
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
            timeout = self.config.request_timeout_s + 5.0 if drain else 30.0
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
    def model_label(self) -> str:
        return self.backend.info.label

    @property
    def model_path(self):
        return self.backend.info.path

    def task_infos(self) -> list[TaskInfo]:
        return self.tasks.infos()

    def update_tasks(self, tasks: TaskRegistry, timeout: float = TASK_UPDATE_TIMEOUT_S) -> None:
        """Serve ``tasks`` from now on (see the module doc). Raises the backend's error, with the old
        tasks still serving, when it cannot apply them; ``InferenceTimeout`` when the queue ahead is
        too long to wait for (the change still happens, in turn)."""
        update = _TaskUpdate(tasks)
        if self._closing.is_set():
            raise ModelUnavailable()
        self._inbox.put(update)
        if not update.done.wait(timeout):
            raise InferenceTimeout("The task change is queued behind other work; it applies in turn.")
        if update.error is not None:
            raise update.error

    def submit(self, task: str, request: Request) -> ReplyStream:
        """Queue a request; its replies come on the returned stream (see ``engine.replies``).
        Bad input and a full queue raise here, before anything is queued."""
        timeout = self.config.request_timeout_s
        if isinstance(request, ChatRequest):
            timeout += CHAT_TIMEOUT_MARGIN_S  # the worker itself stops the chat at its deadline
        stream = ReplyStream(timeout)
        stream.on_close(self.start_job(task, request, stream.sink).set)
        return stream

    def start_job(self, task: str, request: Request, sink: Sink) -> threading.Event:
        """Queue a request whose replies go to ``sink``; returns the event that cancels it.
        Raises ``InvalidInput`` or ``Busy`` at once, before anything is queued."""
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
            self.backend.prepare(self.tasks.of_kind("classify"), self.config.max_input_tokens)
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
                self._take_jobs(block=not (self._pending or self._waiting or self._active))
                if not (self._pending or self._waiting or self._active):
                    continue
                self._step_started = time.monotonic()
                if self._pending:
                    self._classify_round()
                self._admit_chats()
                self._decode_round()
            except Exception:  # the worker must survive any one job's failure
                logger.exception("model worker: unexpected error")
            finally:
                self._step_started = None
        self._fail_all(ModelUnavailable())

    def _take_jobs(self, block: bool) -> None:
        try:
            job = self._inbox.get(timeout=IDLE_POLL_S) if block else self._inbox.get_nowait()
        except queue.Empty:
            return
        while job is not None:
            if isinstance(job, _TaskUpdate):
                self._apply_tasks(job)
            elif isinstance(job, ClassifyJob):
                self._pending.append(job)
            elif job.priority:
                self._waiting.insert(0, job)
            else:
                self._waiting.append(job)
            try:
                job = self._inbox.get_nowait()
            except queue.Empty:
                job = None

    def _apply_tasks(self, update: _TaskUpdate) -> None:
        while self._pending:  # queued before the change: answered on the definitions they were admitted with
            self._classify_round()
        try:
            self.backend.prepare(update.tasks.of_kind("classify"), self.config.max_input_tokens)
        except BaseException as exc:  # the backend kept its old scorers: so do we
            logger.warning("task change refused: {}", exc)
            update.error = exc if isinstance(exc, AllInOneError) else InvalidInput(f"The tasks cannot be served: {exc}")
        else:
            self.tasks = update.tasks
            self._admission.tasks = update.tasks
            logger.info("tasks now served: {}", ", ".join(update.tasks.tasks))
        update.done.set()

    def _classify_round(self) -> None:
        """One batch: the oldest job's task, jobs of that task up to ``max_batch`` texts."""
        task = self._pending[0].task
        batch: list[ClassifyJob] = []
        size = 0
        for job in list(self._pending):
            if job.task is not task or (batch and size + len(job.texts) > self.config.max_batch):
                continue
            self._pending.remove(job)
            self._admission.release(job)
            if job.cancelled.is_set():
                continue  # its caller timed out or went away
            batch.append(job)
            size += len(job.texts)
        if not batch:
            return
        if self.tasks.tasks.get(task.name) is None:  # removed after these were admitted
            for job in batch:
                job.sink.put(InvalidInput(f"Task {task.name!r} was removed."))
            return
        texts = [t for job in batch for t in job.texts]
        modes = [job.mode for job in batch for _ in job.texts]
        try:
            scored = []
            for start in range(0, len(texts), self.config.max_batch):
                end = start + self.config.max_batch
                scored.extend(self.backend.score(task.name, texts[start:end], modes[start:end]))
        except Exception as exc:
            error = exc if isinstance(exc, AllInOneError) else InferenceFailed()
            if not isinstance(exc, AllInOneError):
                logger.opt(exception=exc).error("classification failed (requests {})",
                                                ", ".join(job.request_id or "?" for job in batch))
            for job in batch:
                job.sink.put(error)
            return
        offset = 0
        for job in batch:
            part = scored[offset : offset + len(job.texts)]
            offset += len(job.texts)
            job.sink.put([ClassifyResult(task.name, s.label, s.confidence, s.scores, s.truncated, s.mode)
                          for s in part])

    def _admit_chats(self) -> None:
        admitted = 0
        while self._waiting and admitted < ADMIT_PER_ROUND:
            if len(self._active) >= self.config.max_active_chats + (1 if self._waiting[0].priority else 0):
                break
            job = self._waiting.pop(0)
            if job.cancelled.is_set():
                self._admission.release(job)
                continue
            try:
                job.stream = self._start_stream(job)
            except Exception as exc:
                self._chat_failed(job, exc)
                continue
            self._active.append(job)
            admitted += 1

    def _start_stream(self, job: ChatJob) -> ChatStream:
        stream = ChatStream(
            prompt_ids=job.prompt_ids,
            max_new_tokens=job.max_new_tokens,
            temperature=job.temperature,
            deadline=job.deadline,
            notices=job.notices,
            seed=job.seed,
            updates=job.updates,
            cancelled=job.cancelled,
        )
        stream.start(self.backend)
        return stream

    def _decode_round(self) -> None:
        """Each active chat picks its next token; then one forward pass feeds them all."""
        tokens: dict[object, int] = {}
        for job in list(self._active):
            try:
                token = None if job.cancelled.is_set() else job.stream.choose(self.backend)
            except Exception as exc:
                self._chat_failed(job, exc)
                continue
            if token is None:
                self._end_chat(job)
            else:
                tokens[job.stream.sequence] = token
        if not tokens:
            return
        try:
            self.backend.step(tokens)
        except Exception as exc:  # NaN/inf or a broken model: every chat in the step fails, none gets garbage
            for job in list(self._active):
                self._chat_failed(job, exc)
            self.backend.reset()

    def _end_chat(self, job: ChatJob) -> None:
        """Take a chat out of the batch and free its cache and slot."""
        if job in self._active:
            self._active.remove(job)
        if job.stream is not None:
            job.stream.release(self.backend)
        self._admission.release(job)

    def _chat_failed(self, job: ChatJob, exc: Exception) -> None:
        if not isinstance(exc, AllInOneError):
            logger.opt(exception=exc).error("chat generation failed (request {})", job.request_id or "?")
            exc = InferenceFailed()
        job.updates.put(exc)
        self._end_chat(job)

    def _fail_all(self, error: AllInOneError) -> None:
        """Fail every queued and running request with ``error`` (on close, or an injected fault)."""
        self._take_jobs(block=False)
        for job in self._pending:
            self._admission.release(job)
            if not job.cancelled.is_set():
                job.sink.put(error)
        chats = self._waiting + self._active
        self._pending, self._waiting, self._active = [], [], []
        self.backend.reset()  # dropped whole, not row by row: every chat in it fails
        for job in chats:
            self._chat_failed(job, error)
