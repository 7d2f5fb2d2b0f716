"""What a task kind is (``Kind``), and the edge's limits every kind checks its requests against. Pure.

A kind module (``engine.kinds.classify``, ``engine.kinds.generate``) fills in one ``Kind``: how its tasks
are parsed, how its requests are checked at the edge, admitted in the worker and answered round by round.
The registry that maps a task's ``kind`` to its module: ``engine.kinds``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Protocol

from engine.errors import ConfigError, InvalidInput
from engine.types import EngineConfig, TaskInfo

if TYPE_CHECKING:
    from engine.backend import Backend

__all__ = ["Kind", "Gate", "Rounds", "Sink", "RequestLimits", "LimitExceeded", "str_list", "check_unicode",
           "message_text"]


class Sink(Protocol):
    """Where a job's replies go: a ``QueuedReplies`` in this process, or the pipe to the web process.
    It gets a kind's result (a list of ``ClassifyResult``, a ``ChatUpdate``), or an exception (the job's end)."""

    def put(self, item: object) -> None: ...


class Job(Protocol):
    """A request admitted into the worker: its kind's rounds answer it into ``sink``."""

    kind: str
    cancelled: threading.Event


class Gate(Protocol):
    """A kind's admission in the worker: what the edge cannot know (the task now served, token counts,
    a head's readiness, room in line). ``admit`` raises ``InvalidInput`` or ``Busy`` with nothing counted;
    the model thread ``release``s every job it was given."""

    def admit(self, task: object, request: object, sink: Sink) -> Job: ...

    def release(self, job: Job) -> None: ...

    def load(self) -> int: ...


class Rounds(Protocol):
    """A kind's work on the model thread, one bounded round per turn of the engine's loop."""

    def __bool__(self) -> bool: ...  # work pending

    def add(self, job: Job) -> None: ...

    def prepare(self, tasks: list) -> None: ...  # the kind's tasks, at start and on a task change (all or nothing)

    def run(self, tasks) -> None: ...  # one round (``tasks``: the registry served now)

    def drain(self, tasks) -> None: ...  # before a task change: answer what needs the old definitions

    def fail_all(self, error: Exception) -> None: ...


@dataclass(frozen=True)
class Kind:
    """One task kind, as its module defines it; ``engine.kinds`` keeps the registry."""

    name: str  # the ``kind`` field of a task (a ``TaskKind`` for the built-in kinds)
    task_type: type  # the parsed task: a frozen dataclass with ``name``, ``title``, ``ui_examples``, ``kind``
    request_type: type  # what a caller submits for a task of this kind
    fields: frozenset[str]  # the task fields it accepts, besides kind, title and ui_examples
    parse: Callable[[str, dict, str, Path | None], object]  # (name, table, where, base_dir) -> task; ConfigError
    info: Callable[[object], TaskInfo]  # what the UI needs to build the task's tab
    check: Callable[[object, "RequestLimits"], object]  # the edge's one validation -> the request as admitted
    gate: Callable[["Backend", EngineConfig], Gate]
    rounds: Callable[["Backend", Gate, EngineConfig], Rounds]
    timeout_margin_s: float = 0.0  # how long past the request timeout its caller waits (the worker's own stop)


class LimitExceeded(InvalidInput):
    default_message = "The request is larger than this server accepts."


@dataclass(frozen=True)
class RequestLimits:
    """What one request may carry (``ops.serving.config`` sets them); each kind's ``check`` applies them
    (``engine.kinds.check_request``)."""

    max_message_chars: int = 4000  # one chat message, and each line to classify
    max_history_messages: int = 64
    max_history_chars: int = 24000  # about 6,000 tokens: ten times the default 512-token context
    max_lines: int = 64  # texts in one classification request


def check_unicode(text: str, what: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(f"{what} is not valid Unicode text (it contains a lone surrogate).") from None


def message_text(item: object) -> str:
    """A history message's text, however Gradio sent it (a string, or a list of parts)."""
    content = item.get("content", "") if isinstance(item, dict) else item
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return content if isinstance(content, str) else str(content)


def str_list(table: dict, key: str, where: str) -> tuple[str, ...]:
    """A task field that is a list of non-empty strings (``ConfigError`` otherwise)."""
    value = table.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ConfigError(f"{where}: '{key}' must be a list of non-empty strings.")
    return tuple(value)
