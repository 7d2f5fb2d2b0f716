"""What crosses the pipe between the web process and the model's worker process. Pure: no torch.

Each message is a tuple whose first item is an ``Op``; ``rid`` numbers a
request within one worker's life.

    web -> worker   (SUBMIT, rid, task, request)   queue a ClassifyRequest, ChatRequest or FeatureRequest
                    (CANCEL, rid)                  the caller let go: drop the job
                    (TASKS, rid, registry)         serve these tasks from now on (``Engine.update_tasks``)
                    (FAULT, kind)                  a fault drill (``engine.types.Fault``)
                    (STOP,)                        fail what is left, close, exit
    worker -> web   (READY, WorkerInfo)            loaded and warmed up: send requests
                    (FAILED, error)                could not load; the process exits
                    (ACCEPTED, rid) | (REJECTED, rid, error)   admission, answered at once
                    (REPLY, rid, item)             a list of ClassifyResult or FeatureRows, a ChatUpdate, or an error
                    (TASKS_DONE, rid, error|None, heads|None)  the task change applied, with the heads' states
                                                   it left (as WorkerInfo.heads), or why not (old tasks kept)
                    (LOG, level, text)             a log record, written by the web process's logger

Errors cross as ``AllInOneError`` instances (they pickle by their message).
The worker's liveness is not a message: it writes the time of its loop's last
turn into shared memory (``beat``), which the web process can read even while
the worker is stopped or hung.
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
