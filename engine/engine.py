"""The engine: the scheduler that drives one backend (one loaded model) for many tasks.

It never imports torch: the model, its tokenizer and caches live behind the
seam in ``engine.backend``. The concurrency rule, in one place:

    Only the engine's worker thread touches the model (the backend's model
    calls; ``encode`` and ``render`` are safe from any thread).
    Everyone else (UI handlers, API calls, self-tests) submits a job and
    waits for its result. The worker loops:

      1. take new jobs from the inbox;
      2. run one batch of pending classifications (up to ``max_batch`` texts,
         one forward pass over their suffixes);
      3. admit waiting chats while fewer than ``max_active_chats`` run, at
         most ``ADMIT_PER_ROUND`` per round (build the prompt, prefill it alone);
      4. advance every active chat by one token in ONE forward pass
         (``Backend.step``: the torch backend keeps the chats' KV caches as
         one padded batch).

    So a classification waits at most one decode step plus one prefill,
    however many chats run; decode steps are bound by reading the weights,
    so eight chats cost little more per step than one, and each still streams
    its own tokens with the same greedy answer it would get alone. A model is
    never swapped under a running stream: a new model gets a new Engine, and
    the old one finishes its work and closes (see ``ops.lifecycle``).

Admission: at most ``max_pending_classify`` texts and ``max_waiting_chats``
chats may wait; past that, callers get ``Busy`` at once instead of a hang.
``priority`` chats (the watchdog's probes) go first and may take one slot past
the cap, so health checks stay fast in a full classroom. A
chat that names a ``session`` replaces that session's unfinished chat (one
browser session never holds two slots). Memory is bounded: the KV caches hold
at most ``max_active_chats`` x (``context_tokens`` + ``max_new_tokens``)
positions, and a finished chat's cache is freed at once.
"""

from __future__ import annotations

import functools
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence

from loguru import logger

from engine.backend import Backend
from engine.chat import ChatStream
from engine.errors import (
    AllInOneError,
    Busy,
    InferenceFailed,
    InvalidInput,
    ModelUnavailable,
    Superseded,
)
from engine.prompts import Message, fit_conversation, validate_history
from engine.replies import ReplyStream
from engine.tasks import ClassifyTask, GenerateTask, TaskRegistry
from engine.types import (
    NOTICE_HISTORY_TRIMMED,
    NOTICE_INPUT_TRUNCATED,
    ChatRequest,
    ClassifyRequest,
    ClassifyResult,
    EngineConfig,
    InferenceCalls,
    Request,
    TaskInfo,
)

__all__ = ["Engine", "EngineConfig", "Sink"]

MAX_CHARS = 20_000  # before tokenization; the token caps below do the real fitting
ADMIT_PER_ROUND = 1  # prefills per round: a prefill is compute-bound (about 1 s for a 50-token prompt here)
IDLE_POLL_S = 0.5  # an idle worker still turns its loop (and beats) this often


CHAT_TIMEOUT_MARGIN_S = 5.0  # a chat's caller waits this much past the deadline the worker itself stops at


class Sink(Protocol):
    """Where a job's replies go: a ``ReplyStream`` in this process, or the pipe to the web process.
    It gets a list of ``ClassifyResult``, ``ChatUpdate``s, or an exception (the job's end)."""

    def put(self, item: object) -> None: ...


@dataclass(eq=False)
class _ClassifyJob:
    task: ClassifyTask
    texts: list[str]
    sink: Sink
    request_id: str = ""
    cancelled: threading.Event = field(default_factory=threading.Event)


@dataclass(eq=False)
class _ChatJob:
    prompt_ids: list[int]  # the fitted conversation, rendered and tokenized at admission
    notices: tuple[str, ...]
    max_new_tokens: int
    temperature: float
    seed: int
    deadline: float
    updates: Sink
    request_id: str = ""
    session: str | None = None
    priority: bool = False
    stream: ChatStream | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)


class Engine(InferenceCalls):
    """Answers classify and generate requests on one model; see the module doc for the rule.

    ``on_beat`` is called by the worker thread on every turn of its loop (at
    least every ``IDLE_POLL_S`` while idle, and between steps): the worker
    process publishes it so the web process can tell a hang from the outside.
    """

    def __init__(self, backend: Backend, tasks: TaskRegistry, config: EngineConfig = EngineConfig(),
                 on_beat: Callable[[], None] | None = None) -> None:
        self.backend = backend
        self.tasks = tasks
        self.config = config
        self._inbox: queue.Queue = queue.Queue()
        self._pending: list[_ClassifyJob] = []
        self._waiting: list[_ChatJob] = []
        self._active: list[_ChatJob] = []
        self._sessions: dict[str, _ChatJob] = {}  # session -> its unfinished chat (under _counts_lock)
        self._closing = threading.Event()
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._worker = threading.Thread(target=self._run, name=f"model-worker[{backend.info.label}]", daemon=True)
        self._counts_lock = threading.Lock()
        self._queued_texts = 0
        self._queued_chats = 0
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
        with self._counts_lock:
            return self._queued_texts + self._queued_chats

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
        if isinstance(request, ClassifyRequest):
            return self._start_classify(self._task(task, ClassifyTask), request, sink)
        if isinstance(request, ChatRequest):
            return self._start_chat(self._task(task, GenerateTask), request, sink)
        raise InvalidInput(f"Unknown request type {type(request).__name__}.")

    def _start_classify(self, spec: ClassifyTask, request: ClassifyRequest, sink: Sink) -> threading.Event:
        clean = self._validate_texts(request.texts)
        job = _ClassifyJob(spec, clean, sink, request.request_id)
        with self._counts_lock:
            if self._queued_texts + len(clean) > self.config.max_pending_classify:
                raise Busy()
            self._queued_texts += len(clean)
        try:
            self._submit(job)
        except BaseException:
            with self._counts_lock:
                self._queued_texts -= len(clean)
            raise
        return job.cancelled

    def _start_chat(self, spec: GenerateTask, request: ChatRequest, sink: Sink) -> threading.Event:
        options, message = request.options, request.message
        if not isinstance(message, str) or not message.strip():
            raise InvalidInput("Please type a message.")
        try:
            clean_history = validate_history(request.history)
        except ValueError as exc:
            raise InvalidInput(f"Invalid chat history: {exc}.") from None
        temperature = spec.temperature if options.temperature is None else options.temperature
        prompt_ids, notices = self._fit_prompt(spec, clean_history, message[:MAX_CHARS])
        job = _ChatJob(
            prompt_ids=prompt_ids,
            notices=notices,
            max_new_tokens=max(1, min(options.max_new_tokens or spec.max_new_tokens, self.config.max_new_tokens)),
            temperature=min(max(float(temperature), 0.0), 2.0),
            seed=options.seed,
            deadline=time.monotonic() + self.config.request_timeout_s,
            updates=sink,
            request_id=request.request_id,
            session=options.session,
            priority=options.priority,
        )
        with self._counts_lock:
            previous = self._sessions.pop(job.session, None) if job.session is not None else None
            if previous is not None:  # the same browser session sent a new message: it replaces the old one
                previous.cancelled.set()
                previous.updates.put(Superseded())
            if self._queued_chats >= self.config.max_waiting_chats + self.config.max_active_chats and not job.priority:
                raise Busy()
            self._queued_chats += 1
            if job.session is not None:
                self._sessions[job.session] = job
        try:
            self._submit(job)
        except BaseException:
            self._chat_finished(job)
            raise
        return job.cancelled

    # ----- caller-side helpers ---------------------------------------------

    def _task(self, name: str, kind: type):
        spec = self.tasks.get(name)
        if not isinstance(spec, kind):
            raise InvalidInput(f"Task {name!r} is a {spec.kind} task.")
        return spec

    def _validate_texts(self, texts: Sequence[str]) -> list[str]:
        if isinstance(texts, str) or not isinstance(texts, (list, tuple)):
            raise InvalidInput("Expected a list of texts.")
        if not texts or any(not isinstance(t, str) or not t.strip() for t in texts):
            raise InvalidInput("Please enter some text.")
        if len(texts) > self.config.max_lines:
            raise InvalidInput(f"Too many lines: {len(texts)}, the limit is {self.config.max_lines} per request.")
        return [t.strip()[:MAX_CHARS] for t in texts]

    def _submit(self, job) -> None:
        if self._closing.is_set():
            raise ModelUnavailable()
        self._inbox.put(job)

    # ----- the worker --------------------------------------------------------

    def _run(self) -> None:
        try:
            self._warm_up()
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

    def _warm_up(self) -> None:
        self.backend.prepare(self.tasks.of_kind("classify"), self.config.max_input_tokens)

    def _count(self, messages: list[Message]) -> int:
        return len(self.backend.encode(self.backend.render(messages, True)))

    @functools.cached_property
    def _turn_overhead(self) -> int:
        """Tokens the chat template adds around one message (its role markers)."""
        system = [{"role": "system", "content": "x"}]
        return max(self._count(system + [{"role": "user", "content": ""}]) - self._count(system), 0)

    def _fit_prompt(self, spec: GenerateTask, history: list[Message], message: str) -> tuple[list[int], tuple]:
        """The prompt's token ids, the conversation fitted to ``context_tokens``, and its notices.
        Runs at admission, on the caller's thread (in the worker process, the one that receives
        requests), so a long conversation never holds up the model's thread."""
        fitted = fit_conversation(
            spec.system_prompt, history, message, self.config.context_tokens,
            count_tokens=self._count,
            truncate_text=lambda text, n: self.backend.decode(self.backend.encode(text)[:n]),
            message_tokens=lambda m: len(self.backend.encode(m["content"])) + self._turn_overhead,
        )
        notices = tuple(name for name, on in ((NOTICE_HISTORY_TRIMMED, fitted.dropped_messages),
                                              (NOTICE_INPUT_TRUNCATED, fitted.truncated)) if on)
        return self.backend.encode(self.backend.render(fitted.messages, True)), notices

    def _take_jobs(self, block: bool) -> None:
        try:
            job = self._inbox.get(timeout=IDLE_POLL_S) if block else self._inbox.get_nowait()
        except queue.Empty:
            return
        while job is not None:
            if isinstance(job, _ClassifyJob):
                self._pending.append(job)
            elif job.priority:
                self._waiting.insert(0, job)
            else:
                self._waiting.append(job)
            try:
                job = self._inbox.get_nowait()
            except queue.Empty:
                job = None

    def _classify_round(self) -> None:
        """One batch: the oldest job's task, jobs of that task up to ``max_batch`` texts."""
        task = self._pending[0].task
        batch: list[_ClassifyJob] = []
        size = 0
        for job in list(self._pending):
            if job.task is not task or (batch and size + len(job.texts) > self.config.max_batch):
                continue
            self._pending.remove(job)
            with self._counts_lock:
                self._queued_texts -= len(job.texts)
            if job.cancelled.is_set():
                continue  # its caller timed out or went away
            batch.append(job)
            size += len(job.texts)
        if not batch:
            return
        texts = [t for job in batch for t in job.texts]
        try:
            scored = []
            for start in range(0, len(texts), self.config.max_batch):
                scored.extend(self.backend.score(task.name, texts[start : start + self.config.max_batch]))
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
            job.sink.put([ClassifyResult(task.name, s.label, s.confidence, s.scores, s.truncated) for s in part])

    def _admit_chats(self) -> None:
        admitted = 0
        while self._waiting and admitted < ADMIT_PER_ROUND:
            if len(self._active) >= self.config.max_active_chats + (1 if self._waiting[0].priority else 0):
                break
            job = self._waiting.pop(0)
            if job.cancelled.is_set():
                self._chat_finished(job)
                continue
            try:
                job.stream = self._start_stream(job)
            except Exception as exc:
                self._chat_failed(job, exc)
                continue
            self._active.append(job)
            admitted += 1

    def _start_stream(self, job: _ChatJob) -> ChatStream:
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

    def _end_chat(self, job: _ChatJob) -> None:
        """Take a chat out of the batch and free its cache and slot."""
        if job in self._active:
            self._active.remove(job)
        if job.stream is not None:
            job.stream.release(self.backend)
        self._chat_finished(job)

    def _chat_failed(self, job: _ChatJob, exc: Exception) -> None:
        if not isinstance(exc, AllInOneError):
            logger.opt(exception=exc).error("chat generation failed (request {})", job.request_id or "?")
            exc = InferenceFailed()
        job.updates.put(exc)
        self._end_chat(job)

    def _chat_finished(self, job: _ChatJob) -> None:
        with self._counts_lock:
            self._queued_chats -= 1
            if job.session is not None and self._sessions.get(job.session) is job:
                del self._sessions[job.session]

    def _fail_all(self, error: AllInOneError) -> None:
        """Fail every queued and running request with ``error`` (on close, or an injected fault)."""
        self._take_jobs(block=False)
        for job in self._pending:
            with self._counts_lock:
                self._queued_texts -= len(job.texts)
            if not job.cancelled.is_set():
                job.sink.put(error)
        chats = self._waiting + self._active
        self._pending, self._waiting, self._active = [], [], []
        self.backend.reset()  # dropped whole, not row by row: every chat in it fails
        for job in chats:
            self._chat_failed(job, error)
