"""Fake workers for the tests of the web process's side (no model, no process).

``FakeWorker`` implements ``ops.serving.supervisor.WorkerHandle``: it answers every
classification ``positive`` and every chat ``OK``. Subclasses (or tests)
override ``classify`` and ``generate``; ``submit`` forwards to them, so the
layers above see the one generic call the real worker offers.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Iterator

from engine.chat import ChatUpdate
from engine.kinds.classify import ClassifyRequest, ClassifyResult
from engine.tasks import load_tasks
from ops.serving.service import ModelService

__all__ = ["FakeWorker", "ready_service", "replies", "running", "wait_for"]


def replies(items):
    """A ``ReplyStream`` over ready answers: a generator, so it has ``close`` as the contract says."""
    yield from items


class FakeWorker:
    model_label = "fake@1"
    model_path: Path | None = None
    precision = ("fp32", "fake")
    backend = ("torch", "fake")
    heads: dict = {}
    pid = None

    def __init__(self, path: Path | None = None):
        self.closed = False
        self.killed = False
        self.faults: list = []

    def task_infos(self):
        return load_tasks().infos()

    def classify(self, task, texts):
        return [ClassifyResult(task, "positive", 0.9, {"positive": 0.9, "negative": 0.1}, False) for _ in texts]

    def generate(self, task, message, history=None, options=None):
        yield ChatUpdate("OK", "OK", True, "stop", (), 1)

    def submit(self, task, request):
        if isinstance(request, ClassifyRequest):
            return replies(self.classify(task, request.texts))
        return self.generate(task, request.message, request.history, request.options)

    def update_tasks(self, tasks):
        self.tasks = tasks

    def close(self, drain=False, timeout=None):
        self.closed = True

    def kill(self, grace_s=2.0):
        self.closed = self.killed = True

    def alive(self):
        return not self.closed

    def stuck_for(self):
        return 0.0

    def rss_bytes(self):
        return 1

    def load(self):
        return 0

    def inject_fault(self, kind):
        self.faults.append(kind)


@contextlib.contextmanager
def ready_service(start=None, **settings) -> Iterator:
    """A ``ModelService`` over fake workers (``FakeWorker`` unless ``start`` says), ready; closed at the end."""
    service = running(ModelService(load_tasks(), start or FakeWorker, **settings))
    try:
        assert service.readiness.wait_ready(5)
        yield service
    finally:
        service.lifecycle.close()


def running(service):
    """``service`` (a ``ModelService``) with its lifecycle started: its first load under way."""
    service.lifecycle.start()
    return service


def wait_for(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.01)
    return predicate()
