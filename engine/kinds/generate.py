"""The ``generate`` kind: write an answer to a message after a history, streamed. Pure: no torch.

Owns the kind's task (``GenerateTask``: a system prompt and settings), its request and update types, the
edge's check, the worker's admission (``ChatGate``: the prompt fitted to the context, one chat a session,
room in line) and its rounds (``ChatRounds``: prefill a chunk, then one token for every chat in one pass).
"""

from __future__ import annotations

import functools
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from loguru import logger

from engine.chat import ChatStream, ChatUpdate  # the updates are made where a chat is decoded
from engine.errors import AllInOneError, Busy, ConfigError, InferenceFailed, InvalidInput, Superseded
from engine.kinds.base import Kind, LimitExceeded, RequestLimits, Sink, check_unicode, message_text, str_list
from engine.prompts import Message, fit_conversation, validate_history
from engine.sampling import DEFAULT_GUARD, RepetitionGuard, named_guard
from engine.types import (
    CHAT_TIMEOUT_MARGIN_S,
    NOTICE_HISTORY_TRIMMED,
    NOTICE_INPUT_TRUNCATED,
    EngineConfig,
    GenerateOptions,
    TaskInfo,
    TaskKind,
)

if TYPE_CHECKING:
    from engine.backend import Backend

__all__ = ["GenerateTask", "ChatRequest", "ChatUpdate", "ChatJob", "ChatGate", "ChatRounds", "KIND",
           "PREFILL_CHUNK_TOKENS", "fit_history"]

# Prompt tokens prefilled per round: a prefill is compute-bound (about 0.2 s for 64 tokens of the default
# model on two cores, docs/benchmarks.md), and a classification may wait behind one chunk.
PREFILL_CHUNK_TOKENS = 64


# ----- the task ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GenerateTask:
    name: str
    title: str
    system_prompt: str
    temperature: float = 0.0
    max_new_tokens: int = 256
    ui_examples: tuple[str, ...] = ()
    kind: TaskKind = TaskKind.GENERATE


def parse(name: str, table: dict, where: str, base_dir: Path | None) -> GenerateTask:
    system_prompt = table.get("system_prompt")
    if not isinstance(system_prompt, str) or not system_prompt.strip():
        raise ConfigError(f"{where}: 'system_prompt' is required.")
    temperature = table.get("temperature", 0.0)
    max_new_tokens = table.get("max_new_tokens", 256)
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0.0 <= temperature <= 2.0:
        raise ConfigError(f"{where}: 'temperature' must be between 0 and 2.")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or not 1 <= max_new_tokens <= 4096:
        raise ConfigError(f"{where}: 'max_new_tokens' must be an integer from 1 to 4096.")
    return GenerateTask(
        name=name,
        title=table.get("title", name.title()),
        system_prompt=system_prompt.strip(),
        temperature=float(temperature),
        max_new_tokens=max_new_tokens,
        ui_examples=str_list(table, "ui_examples", where),
    )


def info(task: GenerateTask) -> TaskInfo:
    return TaskInfo(task.name, task.kind, task.title, ui_examples=task.ui_examples)


# ----- requests and updates ------------------------------------------------------------------------


@dataclass(frozen=True)
class ChatRequest:
    """Answer ``message`` after ``history`` (``{"role", "content"}`` dicts), streaming."""

    message: str
    history: Sequence[dict] | None = None
    options: GenerateOptions = field(default_factory=GenerateOptions)
    request_id: str = ""

    @property
    def weight(self) -> int:
        return 1


def check(request: ChatRequest, limits: RequestLimits) -> ChatRequest:
    """The edge's validation: a message, a history of user and assistant messages and a system prompt, each
    within the limits. Returns the request as admitted (the history as plain ``{"role", "content"}``)."""
    message, options = request.message, request.options
    _check_size(message, "Message", limits)
    if not isinstance(message, str) or not message.strip():
        raise InvalidInput("Please type a message.")
    history = request.history
    if isinstance(history, (list, tuple)):
        if len(history) > limits.max_history_messages:
            raise LimitExceeded(f"History too long: {len(history)} messages, the limit is "
                                f"{limits.max_history_messages}.")
        chars = sum(len(message_text(item)) for item in history)
        if chars > limits.max_history_chars:
            raise LimitExceeded(f"History too long: {chars} characters, the limit is {limits.max_history_chars}.")
        for i, item in enumerate(history):
            check_unicode(message_text(item), f"history[{i}]")
    try:
        clean_history = validate_history(history)
    except ValueError as exc:
        raise InvalidInput(f"Invalid chat history: {exc}.") from None
    if options.system_prompt is not None:
        _check_size(options.system_prompt, "System prompt", limits)
        if not isinstance(options.system_prompt, str) or not options.system_prompt.strip():
            raise InvalidInput("The system prompt is empty.")
    if options.repetition is not None and not isinstance(options.repetition, RepetitionGuard):
        raise InvalidInput("The repetition guard must be an engine.sampling.RepetitionGuard.")
    return ChatRequest(message, clean_history, options, request.request_id)


def _check_size(text: object, what: str, limits: RequestLimits) -> None:
    if isinstance(text, str):
        if len(text) > limits.max_message_chars:
            raise LimitExceeded(f"{what} too long: {len(text)} characters, the limit is {limits.max_message_chars}.")
        check_unicode(text, f"The {what.lower()}")


def fit_history(history: Sequence[dict] | None, limits: RequestLimits) -> list[dict]:
    """The newest messages that fit the limits (what the chat tab sends: the model would drop the older
    ones to fit its context anyway). Starts with a user turn where it can."""
    kept: list[dict] = []
    chars = 0
    for item in reversed(list(history or [])):
        size = len(message_text(item))
        if len(kept) == limits.max_history_messages or chars + size > limits.max_history_chars:
            break
        kept.append(item)
        chars += size
    kept.reverse()
    while kept and isinstance(kept[0], dict) and kept[0].get("role") == "assistant":
        kept.pop(0)
    return kept


# ----- in the worker -------------------------------------------------------------------------------


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
    kind = TaskKind.GENERATE


class ChatGate:
    """Fits a chat's prompt into ``context_tokens`` (on the caller's thread, so a long conversation never
    holds up the model's), keeps one chat a browser session, and answers ``Busy`` when the line is full
    (``priority`` chats excepted). The counts and sessions change under ``_lock`` only."""

    def __init__(self, backend: "Backend", config: EngineConfig) -> None:
        self.backend, self.config = backend, config
        self.default_guard = named_guard(config.repetition_guard)  # a chat's guard when its request does not say
        self._lock = threading.Lock()
        self._queued_chats = 0
        self._sessions: dict[str, ChatJob] = {}  # session -> its unfinished chat

    def admit(self, task: GenerateTask, request: ChatRequest, sink: Sink) -> ChatJob:
        options = request.options
        temperature = task.temperature if options.temperature is None else options.temperature
        system_prompt = task.system_prompt if options.system_prompt is None else options.system_prompt
        prompt_ids, notices = self._fit_prompt(system_prompt, list(request.history or []), request.message)
        job = ChatJob(
            prompt_ids=prompt_ids,
            notices=notices,
            max_new_tokens=max(1, min(options.max_new_tokens or task.max_new_tokens, self.config.max_new_tokens)),
            temperature=min(max(float(temperature), 0.0), 2.0),
            seed=options.seed,
            deadline=time.monotonic() + self.config.request_timeout_s,
            updates=sink,
            request_id=request.request_id,
            session=options.session,
            priority=options.priority,
            repetition=self.default_guard if options.repetition is None else options.repetition,
        )
        with self._lock:
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

    def release(self, job: ChatJob) -> None:
        with self._lock:
            self._queued_chats -= 1
            if job.session is not None and self._sessions.get(job.session) is job:
                del self._sessions[job.session]

    def load(self) -> int:
        with self._lock:
            return self._queued_chats

    def _count(self, messages: list[Message]) -> int:
        return len(self.backend.text.encode(self.backend.text.render(messages, True)))

    @functools.cached_property
    def _turn_overhead(self) -> int:
        """Tokens the chat template adds around one message (its role markers)."""
        system = [{"role": "system", "content": "x"}]
        return max(self._count(system + [{"role": "user", "content": ""}]) - self._count(system), 0)

    def _fit_prompt(self, system_prompt: str, history: list[Message], message: str) -> tuple[list[int], tuple]:
        """The prompt's token ids, the conversation fitted to ``context_tokens``, and its notices."""
        fitted = fit_conversation(
            system_prompt, history, message, self.config.context_tokens,
            count_tokens=self._count,
            truncate_text=lambda text, n: self.backend.text.decode(self.backend.text.encode(text)[:n]),
            message_tokens=lambda m: len(self.backend.text.encode(m["content"])) + self._turn_overhead,
        )
        notices = tuple(name for name, on in ((NOTICE_HISTORY_TRIMMED, fitted.dropped_messages),
                                              (NOTICE_INPUT_TRUNCATED, fitted.truncated)) if on)
        return self.backend.text.encode(self.backend.text.render(fitted.messages, True)), notices


class ChatRounds:
    """Chats waiting for a slot, those whose prompts are being prefilled a chunk a round, and those
    decoding together one token a round."""

    def __init__(self, backend: "Backend", gate: ChatGate, config: EngineConfig) -> None:
        self.backend, self.gate, self.config = backend, gate, config
        self.waiting: list[ChatJob] = []
        self.prefilling: list[ChatJob] = []
        self.active: list[ChatJob] = []

    def __bool__(self) -> bool:
        return bool(self.waiting or self.prefilling or self.active)

    def add(self, job: ChatJob) -> None:
        if job.priority:  # the watchdog's probes go first
            self.waiting.insert(0, job)
        else:
            self.waiting.append(job)

    def prepare(self, tasks: list[GenerateTask]) -> None:
        """Nothing to build: a chat's task is read at admission."""

    def drain(self, tasks) -> None:
        """Nothing: an admitted chat carries all it needs of its task."""

    def run(self, tasks) -> None:
        """One round: start what fits, one prefill chunk, one decode step."""
        self.admit()
        self.prefill()
        self.decode()

    def admit(self) -> None:
        """Give waiting chats a sequence while there are slots (a chat still prefilling holds one); a
        ``priority`` chat may take one slot past ``max_active_chats``, and is prefilled first."""
        while self.waiting:
            taken = len(self.active) + len(self.prefilling)
            if taken >= self.config.max_active_chats + (1 if self.waiting[0].priority else 0):
                break
            job = self.waiting.pop(0)
            if job.cancelled.is_set():
                self.gate.release(job)
                continue
            try:
                job.stream = self._start_stream(job)
            except Exception as exc:
                self.fail(job, exc)
                continue
            if job.priority:
                self.prefilling.insert(0, job)
            else:
                self.prefilling.append(job)

    def prefill(self) -> None:
        """One chunk (``PREFILL_CHUNK_TOKENS``) of the oldest prompt still going in; once it is all in,
        that chat decodes with the others."""
        if not self.prefilling:
            return
        job = self.prefilling[0]
        if job.cancelled.is_set():
            self.end(job)
            return
        try:
            done = job.stream.prefill(self.backend, PREFILL_CHUNK_TOKENS)
        except Exception as exc:
            self.fail(job, exc)
            return
        if done:
            self.prefilling.remove(job)
            self.active.append(job)

    def _start_stream(self, job: ChatJob) -> ChatStream:
        stream = ChatStream(prompt_ids=job.prompt_ids, max_new_tokens=job.max_new_tokens,
                            temperature=job.temperature, deadline=job.deadline, notices=job.notices, seed=job.seed,
                            updates=job.updates, cancelled=job.cancelled, repetition=job.repetition)
        stream.start(self.backend)
        return stream

    def decode(self) -> None:
        """Each active chat picks its next token; then one forward pass feeds them all."""
        tokens: dict[object, int] = {}
        for job in list(self.active):
            try:
                token = None if job.cancelled.is_set() else job.stream.choose(self.backend)
            except Exception as exc:
                self.fail(job, exc)
                continue
            if token is None:
                self.end(job)
            else:
                tokens[job.stream.sequence] = token
        if not tokens:
            return
        try:
            self.backend.decoder.step(tokens)
        except Exception as exc:  # NaN/inf or a broken model: every chat in the step fails, none gets garbage
            for job in list(self.active):
                self.fail(job, exc)
            self.backend.decoder.reset()

    def end(self, job: ChatJob) -> None:
        """Take a chat out of the batch (or the prefill line) and free its cache and slot."""
        if job in self.active:
            self.active.remove(job)
        if job in self.prefilling:
            self.prefilling.remove(job)
        if job.stream is not None:
            job.stream.release(self.backend)
        self.gate.release(job)

    def fail(self, job: ChatJob, exc: Exception) -> None:
        if not isinstance(exc, AllInOneError):
            logger.opt(exception=exc).error("chat generation failed (request {})", job.request_id or "?")
            exc = InferenceFailed()
        job.updates.put(exc)
        self.end(job)

    def fail_all(self, error: AllInOneError) -> None:
        chats = self.waiting + self.prefilling + self.active
        self.waiting, self.prefilling, self.active = [], [], []
        self.backend.decoder.reset()  # dropped whole, not row by row: every chat in it fails
        for job in chats:
            self.fail(job, error)


KIND = Kind(
    name=TaskKind.GENERATE,
    task_type=GenerateTask,
    request_type=ChatRequest,
    fields=frozenset({"system_prompt", "temperature", "max_new_tokens"}),
    parse=parse,
    info=info,
    check=check,
    gate=ChatGate,
    rounds=ChatRounds,
    timeout_margin_s=CHAT_TIMEOUT_MARGIN_S,
)
