"""Starting, swapping and stopping the model's worker processes: the worker supervisor.

One worker serves at a time. The lifecycle asks for ``start_worker``, ``swap_in`` (hands back the one
replaced), ``take_out``, ``retire`` (open requests finish first) and ``kill`` (a suspect worker). The
watchdog reads vitals here. ``WorkerHandle`` is the contract: everything the web process reads from a
worker (an ``Inference`` for the requests and self-tests); ``WorkerProcess`` in the app, fakes in tests.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable, Protocol

from engine.tasks import TaskRegistry
from engine.types import Fault, Inference

__all__ = ["WorkerHandle", "WorkerSupervisor"]


class WorkerHandle(Inference, Protocol):
    """What the supervisor, the lifecycle, the spare, the watchdog and the service need of one worker: an
    ``Inference`` (requests, and the self-tests' ``classify`` and ``generate``), its model and its vitals."""

    model_label: str | None
    model_path: Path | None
    precision: tuple[str, str] | None  # the weights' format and why that one, once loaded
    backend: tuple[str, str] | None  # the runtime serving them and why that one, once loaded
    heads: dict[str, dict]  # per classify task with examples: its linear head's state (engine.heads)
    pid: int | None

    def update_tasks(self, tasks: TaskRegistry) -> None: ...

    def close(self, drain: bool = False, timeout: float | None = None) -> None: ...

    def kill(self, grace_s: float = ...) -> None: ...

    def alive(self) -> bool: ...

    def stuck_for(self) -> float: ...

    def rss_bytes(self) -> int: ...

    def load(self) -> int: ...

    def inject_fault(self, kind: Fault) -> None: ...


class WorkerSupervisor:
    """Owns the worker processes; see the module doc."""

    def __init__(self, start_worker: Callable[[Path | None], WorkerHandle]) -> None:
        """``start_worker(version_dir)`` returns a started worker or raises why it could not."""
        self._start_worker = start_worker
        self._lock = threading.Lock()
        self._serving: WorkerHandle | None = None

    @property
    def serving(self) -> WorkerHandle | None:
        return self._serving

    def start_worker(self, target: Path | None) -> WorkerHandle:
        return self._start_worker(target)

    def swap_in(self, worker: WorkerHandle) -> WorkerHandle | None:
        with self._lock:
            old, self._serving = self._serving, worker
        return old

    def take_out(self) -> WorkerHandle | None:
        with self._lock:
            old, self._serving = self._serving, None
        return old

    @staticmethod
    def retire(worker: WorkerHandle | None) -> None:
        """Stop a worker once its open requests have finished (the request timeout at most)."""
        if worker is not None:
            worker.close(drain=True)

    @staticmethod
    def kill(worker: WorkerHandle | None) -> None:
        """End a worker now, whatever it is doing; its open requests fail with ``WorkerLost``."""
        if worker is not None:
            worker.kill()

    # ----- the serving worker's vitals ---------------------------------------------

    def stuck_for(self) -> float:
        worker = self._serving
        return worker.stuck_for() if worker is not None else 0.0

    def worker_alive(self) -> bool:
        """False when the serving worker's process has ended (True while nothing serves)."""
        worker = self._serving
        return worker is None or worker.alive()

    def worker_rss_bytes(self) -> int:
        worker = self._serving
        return worker.rss_bytes() if worker is not None else 0

    def queue_depth(self) -> int:
        worker = self._serving
        return worker.load() if worker is not None else 0
