"""The engine's typed interface: requests in, frozen results out; ``ui/`` and ``ops/`` import these.

Result shapes never depend on the input. Every layer between a user and the model implements one
generic call, ``submit(task, request) -> Iterator[Reply]``; ``InferenceCalls`` builds ``classify``,
``generate`` and ``chat`` on it, so a layer forwards one call and a new request kind touches one place.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum, StrEnum
from typing import TYPE_CHECKING, Iterator, Protocol, Sequence

if TYPE_CHECKING:
    from engine.sampling import RepetitionGuard

__all__ = [
    "ClassifyMode",
    "ClassifyResult",
    "ChatUpdate",
    "GenerateOptions",
    "ClassifyRequest",
    "ChatRequest",
    "Request",
    "Reply",
    "TaskInfo",
    "Inference",
    "InferenceCalls",
    "EngineConfig",
    "Fault",
    "NOTICE_HISTORY_TRIMMED",
    "NOTICE_INPUT_TRUNCATED",
    "FINISH_STOP",
    "FINISH_LENGTH",
    "FINISH_TIME_LIMIT",
]

NOTICE_HISTORY_TRIMMED = "history_trimmed"  # oldest turns dropped to fit the context budget
NOTICE_INPUT_TRUNCATED = "input_truncated"  # the input itself was cut to fit

FINISH_STOP = "stop"  # the model ended its answer
FINISH_LENGTH = "length"  # max_new_tokens reached
FINISH_TIME_LIMIT = "time_limit"  # the per-request wall-clock limit reached


class ClassifyMode(str, Enum):
    """How a classify task answers (``engine.heads``): asked per request, reported per result."""

    AUTO = "auto"  # the head where the task has one fitted for this model, else the prompt
    PROMPT = "prompt"  # the label words' scores at the answer position
    HEAD = "head"  # the task's linear head on the same forward pass

    @classmethod
    def parse(cls, value: "ClassifyMode | str | None") -> "ClassifyMode":
        """A mode from a request (``None`` is ``auto``); ``InvalidInput`` names the choices."""
        if value is None or value == "":
            return cls.AUTO
        try:
            return cls(value)
        except ValueError:
            from engine.errors import InvalidInput

            raise InvalidInput(f"Unknown mode {value!r}; use one of: {', '.join(m.value for m in cls)}.") from None


@dataclass(frozen=True)
class ClassifyResult:
    task: str
    label: str
    confidence: float
    scores: dict[str, float]
    truncated: bool
    mode: ClassifyMode = ClassifyMode.PROMPT  # the mode that answered: ``prompt`` or ``head``, never ``auto``

    def to_api(self) -> dict:
        """The ``/sentiment`` API shape (the public contract, ``../shared/DESIGN.md``)."""
        return {
            "label": self.label,
            "confidence": round(self.confidence, 4),
            "scores": {k: round(v, 4) for k, v in self.scores.items()},
            "truncated": self.truncated,
            "mode": self.mode.value,
        }


@dataclass(frozen=True)
class ChatUpdate:
    """One step of a streamed answer: the whole text so far, and what is new."""

    text: str
    delta: str
    done: bool = False
    finish_reason: str | None = None
    notices: tuple[str, ...] = ()
    tokens: int = 0  # generated so far
    prompt_tokens: int = 0  # the fitted prompt's (system prompt, history and message, as rendered)


@dataclass(frozen=True)
class GenerateOptions:
    """Per-request overrides; ``None`` takes the task's setting, capped by the server's."""

    max_new_tokens: int | None = None
    temperature: float | None = None
    seed: int = 0
    # Who is asking (a browser session): a session's new chat replaces its unfinished one,
    # so one student never holds two of the engine's chat slots.
    session: str | None = None
    # The watchdog's probes: they go to the front of the line and may use one slot past the
    # cap, so a busy classroom never makes a health check time out (and trigger a reload).
    priority: bool = False
    # The caller's own system prompt in place of the task's (the OpenAI API's system messages).
    system_prompt: str | None = None
    # What to do when the answer loops ("你好，你好，你好，..."); None: the engine's default guard.
    repetition: RepetitionGuard | None = None


@dataclass(frozen=True)
class ClassifyRequest:
    """Label each of ``texts`` (validated by the engine: a list of non-empty strings)."""

    texts: Sequence[str]
    request_id: str = ""  # for the logs of both processes (set by the metrics wrapper)
    mode: ClassifyMode | str = ClassifyMode.AUTO  # checked at admission

    @property
    def weight(self) -> int:
        """Queue depth this request adds: one per text."""
        return len(self.texts) if isinstance(self.texts, (list, tuple)) else 1


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


Request = ClassifyRequest | ChatRequest
Reply = ClassifyResult | ChatUpdate


class TaskKind(StrEnum):
    """What a task does with a request: label a text, or write an answer. A StrEnum, so a kind is its
    own name in JSON, TOML and the API (\"classify\", \"generate\")."""

    CLASSIFY = "classify"
    GENERATE = "generate"


@dataclass(frozen=True)
class TaskInfo:
    name: str
    kind: TaskKind
    title: str
    labels: tuple[str, ...] = ()
    ui_examples: tuple[str, ...] = field(default_factory=tuple)
    modes: tuple[str, ...] = ()  # a classify task with an examples file: the ``ClassifyMode``s one may ask for
    display: dict[str, tuple[str, ...]] = field(default_factory=dict)  # language -> the labels' names shown


# A chat's caller waits this much past the request timeout, at which the worker itself stops the chat.
CHAT_TIMEOUT_MARGIN_S = 5.0


class ReplyStream(Protocol):
    """The replies of one request (``engine.replies.QueuedReplies``, or a generator over one). ``close``
    cancels the request wherever it runs: call it when done, or when the caller goes away."""

    def __iter__(self) -> Iterator[Reply]: ...

    def __next__(self) -> Reply: ...

    def close(self) -> None: ...


class Inference(Protocol):
    """What the UI and the operations code may ask of the engine (or of whatever forwards to it)."""

    def task_infos(self) -> list[TaskInfo]: ...

    def submit(self, task: str, request: Request) -> ReplyStream: ...

    def classify(self, task: str, texts: Sequence[str], mode: ClassifyMode | str = ClassifyMode.AUTO
                 ) -> list[ClassifyResult]: ...

    def generate(
        self, task: str, message: str, history: Sequence[dict] | None = None, options: GenerateOptions | None = None
    ) -> ReplyStream: ...


class InferenceCalls:
    """``classify``, ``generate`` and ``chat`` built on a class's ``submit``."""

    def submit(self, task: str, request: Request) -> ReplyStream:
        raise NotImplementedError

    def classify(self, task: str, texts: Sequence[str], mode: ClassifyMode | str = ClassifyMode.AUTO
                 ) -> list[ClassifyResult]:
        """Label each text with the task's labels; blocks until done or timed out."""
        return list(self.submit(task, ClassifyRequest(texts, mode=mode)))

    def generate(
        self, task: str, message: str, history: Sequence[dict] | None = None, options: GenerateOptions | None = None
    ) -> ReplyStream:
        """Stream an answer: each ``ChatUpdate`` holds the whole text so far. Closing the
        iterator early (a user pressed Stop) cancels the request."""
        return self.submit(task, ChatRequest(message, history, options or GenerateOptions()))

    def chat(self, task: str, message: str, history: Sequence[dict] | None = None,
             options: GenerateOptions | None = None) -> ChatUpdate:
        """The non-streaming call: the last update of ``generate``."""
        last = None
        stream = self.generate(task, message, history, options)
        try:
            for last in stream:
                pass
        finally:
            stream.close()
        assert last is not None
        return last


@dataclass(frozen=True)
class EngineConfig:
    """The engine's limits and sizes (plain data: the web process builds it for the worker)."""

    context_tokens: int = 512  # chat prompt budget: system prompt + history + new message
    max_new_tokens: int = 256  # server-wide cap on one answer
    max_input_tokens: int = 256  # classification input cap (longer input is truncated, with a notice)
    request_timeout_s: float = 60.0  # wall-clock limit per request
    max_batch: int = 16
    max_active_chats: int = 8  # chats decoded together in one batch
    max_waiting_chats: int = 16
    max_pending_classify: int = 256
    max_lines: int = 64  # texts in one classification request
    repetition_guard: str = "stop"  # a chat's guard when its request does not say (engine.sampling.GUARDS)


class Fault(str, Enum):
    """The fault drills (``POST /admin/fault/{kind}``, ``--fault-injection`` only), defined once.

    The engine applies the first three between its steps; the worker process
    handles ``exit``; the web process handles ``exit-app``.
    """

    NAN_WEIGHTS = "nan-weights"  # poison the weights in memory: answers turn to NaN
    HANG = "hang"  # the worker's next step blocks until its process is replaced
    SLOW = "slow"  # the worker's next step computes for a while first: an overloaded machine, not a hang
    ERROR = "error"  # the next three steps raise
    EXIT = "exit"  # the worker process exits at once, as a crash would
    EXIT_APP = "exit-app"  # the web process exits, for supervisord or systemd to restart
