"""The engine's typed interface: requests in, frozen results out.

``ui/`` and ``ops/`` import these (and ``engine.errors``), never torch. Result
shapes never depend on the input.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Protocol, Sequence

__all__ = [
    "ClassifyResult",
    "ChatUpdate",
    "GenerateOptions",
    "TaskInfo",
    "Inference",
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


@dataclass(frozen=True)
class ClassifyResult:
    task: str
    label: str
    confidence: float
    scores: dict[str, float]
    truncated: bool

    def to_api(self) -> dict:
        """The ``/sentiment`` API shape (see DESIGN.md)."""
        return {
            "label": self.label,
            "confidence": round(self.confidence, 4),
            "scores": {k: round(v, 4) for k, v in self.scores.items()},
            "truncated": self.truncated,
        }


@dataclass(frozen=True)
class ChatUpdate:
    """One step of a streamed answer: the whole text so far, and what is new."""

    text: str
    delta: str
    done: bool = False
    finish_reason: str | None = None
    notices: tuple[str, ...] = ()
    tokens: int = 0


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


@dataclass(frozen=True)
class TaskInfo:
    name: str
    kind: str
    title: str
    labels: tuple[str, ...] = ()
    ui_examples: tuple[str, ...] = field(default_factory=tuple)


class Inference(Protocol):
    """What the UI and the operations code may ask of the engine."""

    def task_infos(self) -> list[TaskInfo]: ...

    def classify(self, task: str, texts: Sequence[str]) -> list[ClassifyResult]: ...

    def generate(
        self, task: str, message: str, history: Sequence[dict] | None = None, options: GenerateOptions | None = None
    ) -> Iterator[ChatUpdate]: ...
