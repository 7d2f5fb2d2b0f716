"""The registry of task kinds (``KINDS``: a new kind is one line here), and what is built on it. Pure.

``check_request`` is the edge's one validation of a request; ``Admission`` is the worker's door, which hands
each request to its kind's gate; ``InferenceCalls`` builds ``classify``, ``generate`` and ``chat`` on a
layer's ``submit``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from engine.errors import InvalidInput
from engine.kinds import classify, generate
from engine.kinds.base import Gate, Job, Kind, RequestLimits, Sink
from engine.kinds.classify import ClassifyRequest, ClassifyResult
from engine.kinds.generate import ChatRequest, ChatUpdate
from engine.types import ClassifyMode, EngineConfig, GenerateOptions, ReplyStream

if TYPE_CHECKING:
    from engine.backend import Backend
    from engine.tasks import TaskRegistry

__all__ = ["KINDS", "Kind", "Admission", "InferenceCalls", "Request", "Reply", "kind_named", "kind_for_request",
           "check_request", "reply_timeout"]

KINDS: dict[str, Kind] = {kind.name: kind for kind in (classify.KIND, generate.KIND)}

Request = ClassifyRequest | ChatRequest
Reply = ClassifyResult | ChatUpdate


def kind_named(name: object) -> Kind:
    """The kind a task names; ``KeyError`` for none."""
    return KINDS[name]


def _kind_of(request: object) -> Kind | None:
    return next((kind for kind in KINDS.values() if isinstance(request, kind.request_type)), None)


def kind_for_request(request: object) -> Kind:
    kind = _kind_of(request)
    if kind is not None:
        return kind
    raise InvalidInput(f"Unknown request type {type(request).__name__}.")


def reply_timeout(request: object, config: EngineConfig) -> float:
    """How long a caller waits for a request's replies: the request timeout, plus its kind's margin (a chat's
    worker stops it at its own deadline, so its caller waits a little longer)."""
    kind = _kind_of(request)
    return config.request_timeout_s + (kind.timeout_margin_s if kind else 0.0)  # none: a fit's reading (engine.teach)


def check_request(request: object, limits: RequestLimits) -> object:
    """``request`` as admitted (cleaned), or ``InvalidInput`` (``LimitExceeded`` for a limit) naming the
    first problem: the one validation of a request, at the edge, by its kind."""
    return kind_for_request(request).check(request, limits)


class Admission:
    """The worker's door: the task served now, and its kind's gate (admission past the edge's check)."""

    def __init__(self, backend: "Backend", tasks: "TaskRegistry", config: EngineConfig) -> None:
        self.tasks = tasks
        self.gates: dict[str, Gate] = {name: kind.gate(backend, config) for name, kind in KINDS.items()}

    def admit(self, task: str, request: object, sink: Sink) -> Job:
        """Count ``request``'s job in; raises ``InvalidInput`` or ``Busy`` at once, with nothing counted."""
        spec = self.tasks.get(task)
        if not isinstance(request, KINDS[spec.kind].request_type):
            raise InvalidInput(f"Task {task!r} is a {spec.kind} task.")
        return self.gates[spec.kind].admit(spec, request, sink)

    def release(self, job: Job) -> None:
        self.gates[job.kind].release(job)

    def load(self) -> int:
        """Texts and chats queued or running."""
        return sum(gate.load() for gate in self.gates.values())


class InferenceCalls:
    """``classify``, ``generate`` and ``chat`` built on a class's ``submit``."""

    def submit(self, task: str, request: Request) -> ReplyStream:
        raise NotImplementedError

    def classify(self, task: str, texts: Sequence[str], mode: ClassifyMode | str = ClassifyMode.AUTO
                 ) -> list[ClassifyResult]:
        """Label each text with the task's labels; blocks until done or timed out."""
        return list(self.submit(task, ClassifyRequest(texts, mode=mode)))

    def generate(self, task: str, message: str, history: Sequence[dict] | None = None,
                 options: GenerateOptions | None = None) -> ReplyStream:
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
