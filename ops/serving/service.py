"""The model service: the one door to the model for the UI, the routes and the watchdog's probes. No torch here.

``ModelService`` builds the serving parts and exposes each for its job: ``supervisor`` (the workers),
``readiness`` (state, events, totals), ``lifecycle`` (start, reload, restore, close), ``recovery``,
``disk`` (the serving files), ``spare``. It serves requests itself (``submit``); its request rules (waiting
out a recovery, resending ``WorkerGone``, when failures mean a sick model): docs/internals.md, "The web
process's serving path".
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Callable, Generator

from loguru import logger

from engine.errors import InferenceFailed, InvalidOutput, ModelUnavailable, WorkerGone, WorkerLost
from engine.kinds.base import RequestLimits
from engine.kinds.registry import InferenceCalls, Reply, Request, check_request
from engine.tasks import TaskRegistry
from engine.teach import FeatureRequest
from engine.types import Fault, Inference, ReplyStream, TaskInfo
from ops.common.proc import free_memory_bytes
from ops.serving.disk import ServingFiles
from ops.serving.lifecycle import Lifecycle
from ops.serving.loader import WorkerLoader, basic_self_test
from ops.serving.readiness import Readiness, RecoveryCause, State
from ops.serving.recovery import Recovery
from ops.serving.spare import WarmSpare
from ops.serving.supervisor import WorkerHandle, WorkerSupervisor
from ops.store.follower import StoreFollower
from ops.store.integrity import IntegrityMonitor
from ops.store.versions import ModelSource

__all__ = ["ModelService"]


class ModelService(InferenceCalls):
    """Implements ``Inference`` over whichever worker serves; its rules: docs/internals.md."""

    def __init__(
        self,
        tasks: TaskRegistry,
        start_worker: Callable[[Path | None], WorkerHandle],
        self_test: Callable[[Inference], str] = basic_self_test,
        max_backoff_s: float = 60.0,
        source: ModelSource | None = None,
        available_memory: Callable[[], int] = free_memory_bytes,
        ready_wait_s: float = 0.0,
        limits: RequestLimits = RequestLimits(),
        failures_before_reload: int = 3,
        spare_worker: bool = False,
    ) -> None:
        """``start_worker(version_dir)`` starts a worker (the directory is None without a ``source``);
        ``ready_wait_s``: how long a request waits for a load or recovery under way; ``spare_worker``:
        keep a warm spare worker for recoveries (``ops.serving.spare``). Nothing starts until
        ``lifecycle.start()``."""
        self.tasks = tasks
        self.limits = limits
        self._ready_wait_s = ready_wait_s
        self._failures_before_reload = failures_before_reload
        self._failures_lock = threading.Lock()
        self._failures_in_a_row = 0
        self.supervisor = WorkerSupervisor(start_worker)
        self.readiness = Readiness()
        self.follower = StoreFollower(source)
        self.integrity = IntegrityMonitor()
        self.spare = WarmSpare(self.supervisor.start_worker, self_test,
                               on_change=lambda pid: self.readiness.update(spare_pid=pid)) if spare_worker else None
        loader = WorkerLoader(self.supervisor, self.readiness, self.follower, self.integrity, self_test,
                              max_backoff_s, available_memory, self.spare)
        self.lifecycle = Lifecycle(loader, self.supervisor, self.readiness, self.follower, self.integrity, self.spare)
        self.recovery = Recovery(loader, self.supervisor, self.readiness, self.spare)
        self.disk = ServingFiles(self.supervisor, self.integrity, self.follower)
        self._last_success: float | None = None  # monotonic time of the last successful request

    def update_tasks(self, tasks: TaskRegistry) -> None:
        """Serve ``tasks`` (``ops.api.runtime_tasks``). The serving worker applies them first, and its refusal
        leaves the old ones serving; a worker started later gets them in its spec."""
        worker = self.supervisor.serving
        if worker is not None:
            worker.update_tasks(tasks)
            self.readiness.set_heads(worker.pid, worker.heads)  # /ready: a head fitted since answers now
        self.tasks = tasks
        if self.spare is not None and worker is not None:  # a spare with the old tasks would serve them
            self.spare.refill(worker.model_path, again=True)

    def inject_fault(self, kind: Fault) -> None:
        """A fault drill on the serving worker (the admin route checks ``--fault-injection``)."""
        self._current().inject_fault(kind)

    def seconds_since_success(self) -> float | None:
        """Since the last request that succeeded (None: none yet); the watchdog skips its probes after one."""
        last = self._last_success
        return None if last is None else time.monotonic() - last

    # ----- Inference ------------------------------------------------------------------------

    def task_infos(self) -> list[TaskInfo]:
        return self.tasks.infos()

    def _current(self) -> WorkerHandle:
        snapshot, worker = self.readiness.snapshot(), self.supervisor.serving
        if snapshot.state is not State.READY and self._ready_wait_s > 0:
            snapshot = self.readiness.wait_until_settled(self._ready_wait_s)
            worker = self.supervisor.serving
        if snapshot.state is not State.READY or worker is None:
            if snapshot.state is State.FAILED:
                raise ModelUnavailable(f"The model is not available: {snapshot.reason}")
            raise ModelUnavailable()
        return worker

    def submit(self, task: str, request: Request) -> ReplyStream:
        """Forward to the serving worker; once more on the new one if a hot swap stopped the old
        one between picking it and handing it the request (it never ran, so retrying is safe)."""
        if not isinstance(request, FeatureRequest):  # a fit's reading: its examples were checked when saved
            request = check_request(request, self.limits)  # the one validation, before anything is queued
        worker = self._current()
        try:
            try:
                stream = worker.submit(task, request)
            except WorkerGone:  # it died before taking the request: replace it, and wait for the new one
                self._worker_lost(worker)
                worker = self._current()
                stream = worker.submit(task, request)
            except ModelUnavailable:
                if self.supervisor.serving in (worker, None) or not self.readiness.snapshot().ready:
                    raise
                worker = self._current()
                stream = worker.submit(task, request)
        except InferenceFailed as exc:
            self._request_failed(request, exc)
            raise
        return self._watch(stream, worker, request)

    def _watch(self, stream: ReplyStream, worker: WorkerHandle, request: Request) -> Generator[Reply, None, None]:
        try:
            yield from stream
        except InferenceFailed as exc:
            self._request_failed(request, exc)
            raise
        except WorkerLost:
            self._worker_lost(worker)
            raise
        finally:
            stream.close()
        self._last_success = time.monotonic()
        with self._failures_lock:
            self._failures_in_a_row = 0

    def _worker_lost(self, worker: WorkerHandle) -> None:
        """The serving worker ended on its own: recover now, not at the next vitals check. (A
        worker this service stopped, or one no longer serving, is not a reason.)"""
        if self.supervisor.serving is worker and not worker.alive():
            self.recovery.recover(RecoveryCause.WORKER_EXIT, "the model's worker process ended")

    def _request_failed(self, request: Request, exc: InferenceFailed) -> None:
        """One failed request is the request's problem; NaN/inf, or several failures in a row,
        are the model's (docs/internals.md)."""
        if isinstance(exc, InvalidOutput):
            self.recovery.recover(RecoveryCause.INVALID_OUTPUT, f"a request failed: {exc}")
            return
        with self._failures_lock:
            self._failures_in_a_row += 1
            failures = self._failures_in_a_row
            if failures >= self._failures_before_reload:
                self._failures_in_a_row = 0
        logger.error("request {} failed ({} in a row): {}", request.request_id or "?", failures, exc)
        if failures >= self._failures_before_reload:
            self.recovery.recover(RecoveryCause.FAILED_REQUEST, f"{failures} requests in a row failed: {exc}")
