"""The engine's shared vocabulary: kinds, modes, options, limits, faults and the ``Inference`` contract.

Every layer between a user and the model implements one generic call, ``submit(task, request) ->
ReplyStream``. Each kind's request and result types live in its module (``engine.kinds``), where
``InferenceCalls`` builds ``classify``, ``generate`` and ``chat`` on ``submit``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum, StrEnum
from typing import TYPE_CHECKING, Iterator, Protocol, Sequence

if TYPE_CHECKING:
    from engine.kinds import Reply, Request
    from engine.kinds.classify import ClassifyResult
    from engine.sampling import RepetitionGuard

__all__ = [
    "ClassifyMode",
    "GenerateOptions",
    "TaskKind",
    "TaskInfo",
    "ReplyStream",
    "Inference",
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
