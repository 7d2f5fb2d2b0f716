"""What crosses the pipe between the web process and the model's worker process. Pure: no torch.

Each message is a tuple whose first item is an ``Op``; ``rid`` numbers a request within one worker's
life. The messages: docs/internals.md, "Inside the worker". Errors cross as ``AllInOneError`` instances. Liveness is no message:
the worker writes its loop's last turn into shared memory (``beat``), readable even when it hangs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from engine.tasks import TaskRegistry
from engine.types import EngineConfig

__all__ = ["Op", "WorkerSpec", "WorkerInfo"]


class Op(str, Enum):
    SUBMIT = "submit"
    CANCEL = "cancel"
    FAULT = "fault"
    STOP = "stop"
    TASKS = "tasks"
    TASKS_DONE = "tasks_done"
    READY = "ready"
    FAILED = "failed"
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    REPLY = "reply"
    LOG = "log"


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker process needs to load one model version and serve it."""

    model_dir: Path
    tasks: TaskRegistry
    engine: EngineConfig = EngineConfig()
    backend: str = "auto"
    precision: str = "auto"
    device: str = "cpu"
    fault_drills: bool = True  # wrap the backend for the drills (``--fault-injection``); off, it is not on the path


@dataclass(frozen=True)
class WorkerInfo:
    """What a worker reports once its model is loaded and warmed up."""

    label: str  # name@version
    path: Path  # the version directory really loaded (the link resolved once)
    precision: str
    precision_reason: str
    device: str
    load_seconds: float
    pid: int
    heads: dict[str, dict] = field(default_factory=dict)  # task -> HeadState.to_api(), for tasks with examples
    backend: str = "torch"  # the runtime serving the model, and why that one (engine.backends)
    backend_reason: str = ""
