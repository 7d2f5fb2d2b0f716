"""Admission: a request's way in, on the caller's thread, before the model's thread sees it.

Checks the input, fits a chat into ``context_tokens``, resolves a classification's ``mode`` and builds
the job, so the model thread only gets work it can finish in bounded time. A full line answers ``Busy``
at once (``priority`` chats excepted); the model thread ``release``s each job. No torch. The rules in
full: docs/architecture.md, "Inside the worker".
"""

from __future__ import annotations

import functools
import threading
import time
from dataclasses import dataclass, field
from typing import Protocol, Sequence

from engine.backend import Backend
from engine.chat import ChatStream
from engine.errors import Busy, InvalidInput, Superseded
from engine.prompts import Message, fit_conversation, validate_history
from engine.sampling import DEFAULT_GUARD, RepetitionGuard, named_guard
from engine.tasks import ClassifyTask, GenerateTask, TaskRegistry
from engine.types import (
    NOTICE_HISTORY_TRIMMED,
    NOTICE_INPUT_TRUNCATED,
    ChatRequest,
    ClassifyRequest,
    ClassifyMode,
    EngineConfig,
    Request,
)

__all__ = ["Admission", "ChatJob", "ClassifyJob", "Sink"]

MAX_CHARS = 20_000  # before tokenization; the token caps do the real fitting


class Sink(Protocol):
    """Where a job's replies go: a ``QueuedReplies`` in this process, or the pipe to the web process.
    It gets a list of ``ClassifyResult``, ``ChatUpdate``s, or an exception (the job's end)."""

    def put(self, item: object) -> None: ...


@dataclass(eq=False)
class ClassifyJob:
    task: ClassifyTask
    texts: list[str]
    sink: Sink
    request_id: str = ""
    mode: ClassifyMode = ClassifyMode.PROMPT  # resolved: PROMPT or HEAD
    cancelled: threading.Event = field(default_factory=threading.Event)


@dataclass(eq=False)
class ChatJob:
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
    repetition: RepetitionGuard = DEFAULT_GUARD
    stream: ChatStream | None = None  # set by the model thread when the chat starts decoding
    cancelled: threading.Event = field(default_factory=threading.Event)


class Admission:
    """Turns requests into jobs and keeps the line's counts; the rules: docs/architecture.md, "Inside the worker".

    The counts and sessions are shared with the model thread, which calls
    ``release``; both sides change them under ``_counts_lock`` only."""

    def __init__(self, backend: Backend, tasks: TaskRegistry, config: EngineConfig) -> None:
        self.backend = backend
        self.tasks = tasks
        self.config = config
        self.default_guard = named_guard(config.repetition_guard)  # a chat's guard when its request does not say
        self._counts_lock = threading.Lock()
        self._queued_texts = 0
        self._queued_chats = 0
        self._sessions: dict[str, ChatJob] = {}  # session -> its unfinished chat (under _counts_lock)

    def admit(self, task: str, request: Request, sink: Sink) -> ClassifyJob | ChatJob:
        """Check ``request`` and count its job in; the caller queues the job, or ``release``s it
        if it cannot. Raises ``InvalidInput`` or ``Busy`` at once, with nothing counted."""
        if isinstance(request, ClassifyRequest):
            return self._classify_job(self._task(task, ClassifyTask), request, sink)
        if isinstance(request, ChatRequest):
            return self._chat_job(self._task(task, GenerateTask), request, sink)
        raise InvalidInput(f"Unknown request type {type(request).__name__}.")

    def release(self, job: ClassifyJob | ChatJob) -> None:
        """The model thread is done with ``job``'s place in line: texts taken into a batch, a chat
        ended, or any job dropped or never queued. Frees the slot (and the session's claim)."""
        with self._counts_lock:
            if isinstance(job, ClassifyJob):
                self._queued_texts -= len(job.texts)
                return
            self._queued_chats -= 1
            if job.session is not None and self._sessions.get(job.session) is job:
                del self._sessions[job.session]

    def load(self) -> int:
        """Texts and chats queued or running."""
        with self._counts_lock:
            return self._queued_texts + self._queued_chats

    # ----- building jobs ---------------------------------------------------

    def _task(self, name: str, kind: type):
        spec = self.tasks.get(name)
        if not isinstance(spec, kind):
            raise InvalidInput(f"Task {name!r} is a {spec.kind} task.")
        return spec

    def _classify_job(self, spec: ClassifyTask, request: ClassifyRequest, sink: Sink) -> ClassifyJob:
        clean = self._validate_texts(request.texts)
        job = ClassifyJob(spec, clean, sink, request.request_id, self._mode(spec, request.mode))
        with self._counts_lock:
            if self._queued_texts + len(clean) > self.config.max_pending_classify:
                raise Busy()
            self._queued_texts += len(clean)
        return job

    def _mode(self, spec: ClassifyTask, asked: ClassifyMode | str) -> ClassifyMode:
        mode = ClassifyMode.parse(asked)
        if mode is ClassifyMode.PROMPT:
            return mode
        state = self.backend.head_states().get(spec.name)
        if state is not None and state.ready:
            return ClassifyMode.HEAD
        if mode is ClassifyMode.HEAD:
            raise InvalidInput(f"Task {spec.name!r} cannot answer in head mode on this model: "
                               f"{state.detail if state else 'no head'}.")
        return ClassifyMode.PROMPT

    def _validate_texts(self, texts: Sequence[str]) -> list[str]:
        if isinstance(texts, str) or not isinstance(texts, (list, tuple)):
            raise InvalidInput("Expected a list of texts.")
        if not texts or any(not isinstance(t, str) or not t.strip() for t in texts):
            raise InvalidInput("Please enter some text.")
        if len(texts) > self.config.max_lines:
            raise InvalidInput(f"Too many lines: {len(texts)}, the limit is {self.config.max_lines} per request.")
        return [t.strip()[:MAX_CHARS] for t in texts]

    def _chat_job(self, spec: GenerateTask, request: ChatRequest, sink: Sink) -> ChatJob:
        options, message = request.options, request.message
        if not isinstance(message, str) or not message.strip():
            raise InvalidInput("Please type a message.")
        try:
            clean_history = validate_history(request.history)
        except ValueError as exc:
            raise InvalidInput(f"Invalid chat history: {exc}.") from None
        temperature = spec.temperature if options.temperature is None else options.temperature
        repetition = self.default_guard if options.repetition is None else options.repetition
        if not isinstance(repetition, RepetitionGuard):
            raise InvalidInput("The repetition guard must be an engine.sampling.RepetitionGuard.")
        system_prompt = spec.system_prompt if options.system_prompt is None else options.system_prompt
        if not isinstance(system_prompt, str) or not system_prompt.strip():
            raise InvalidInput("The system prompt is empty.")
        prompt_ids, notices = self._fit_prompt(system_prompt[:MAX_CHARS], clean_history, message[:MAX_CHARS])
        job = ChatJob(
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
            repetition=repetition,
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
        return job

    # ----- fitting the chat prompt -----------------------------------------

    def _count(self, messages: list[Message]) -> int:
        return len(self.backend.encode(self.backend.render(messages, True)))

    @functools.cached_property
    def _turn_overhead(self) -> int:
        """Tokens the chat template adds around one message (its role markers)."""
        system = [{"role": "system", "content": "x"}]
        return max(self._count(system + [{"role": "user", "content": ""}]) - self._count(system), 0)

    def _fit_prompt(self, system_prompt: str, history: list[Message], message: str) -> tuple[list[int], tuple]:
        """The prompt's token ids, the conversation fitted to ``context_tokens``, and its notices.
        Runs on the caller's thread (in the worker process, the one that receives requests), so a
        long conversation never holds up the model's thread."""
        fitted = fit_conversation(
            system_prompt, history, message, self.config.context_tokens,
            count_tokens=self._count,
            truncate_text=lambda text, n: self.backend.decode(self.backend.encode(text)[:n]),
            message_tokens=lambda m: len(self.backend.encode(m["content"])) + self._turn_overhead,
        )
        notices = tuple(name for name, on in ((NOTICE_HISTORY_TRIMMED, fitted.dropped_messages),
                                              (NOTICE_INPUT_TRUNCATED, fitted.truncated)) if on)
        return self.backend.encode(self.backend.render(fitted.messages, True)), notices
