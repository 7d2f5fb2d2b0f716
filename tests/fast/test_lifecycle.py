"""Readiness states and routes, with a fake worker (no model, no process needed)."""

from __future__ import annotations

import time

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from engine.errors import ModelNotFound, ModelUnavailable
from engine.tasks import load_tasks
from ops.serving.health import add_health_routes
from ops.serving.readiness import State
from ops.serving.service import ModelService
from tests.fakes import FakeWorker, ready_service, running, wait_for


def routes(service):
    app = FastAPI()
    add_health_routes(app, service.readiness)
    return TestClient(app)


def test_missing_model_keeps_the_process_up_and_says_why():
    attempts = []

    def load(target=None):
        attempts.append(time.monotonic())
        raise ModelNotFound("No model at /x/models/current. Install the default model with: python -m ops.models install-default")

    service = running(ModelService(load_tasks(), load, max_backoff_s=0.05))
    try:
        assert wait_for(lambda: service.readiness.snapshot().state is State.FAILED)
        client = routes(service)
        assert client.get("/health").status_code == 200
        ready = client.get("/ready")
        assert ready.status_code == 503
        body = ready.json()
        assert body["state"] == "failed" and "/x/models/current" in body["reason"]
        assert {"model", "last_self_test", "consecutive_failures", "uptime_s"} <= set(body)
        with pytest.raises(ModelUnavailable, match="install-default"):
            service.classify("sentiment", ["hi"])
        time.sleep(0.3)
        assert len(attempts) >= 2  # it keeps retrying with backoff
    finally:
        service.lifecycle.close()


def test_becomes_ready_after_load_and_self_test():
    with ready_service() as service:
        body = routes(service).get("/ready").json()
        assert body["state"] == "ready" and body["model"] == "fake@1"
        assert body["last_self_test"]["passed"] is True
        assert service.classify("sentiment", ["hi"])[0].label == "positive"


def test_ready_shows_the_heads_a_task_change_left_without_a_reload():
    """A head fitted while the model serves (ops.api.teach) reaches the worker as a task change; the worker answers
    with its heads' states, and /ready (the Status tab's source) shows them at once."""

    class Teachable(FakeWorker):
        heads = {"topic": {"status": "missing", "detail": "no head fitted for this model yet"}}

        def update_tasks(self, tasks):
            super().update_tasks(tasks)
            self.heads = {"topic": {"status": "ready", "detail": "linear head fitted"}}

    with ready_service(Teachable) as service:
        assert routes(service).get("/ready").json()["heads"]["topic"]["status"] == "missing"
        service.update_tasks(load_tasks())
        assert routes(service).get("/ready").json()["heads"]["topic"]["status"] == "ready"
        service.readiness.set_heads(12345, {})  # the answer of a worker no longer serving is left out
        assert routes(service).get("/ready").json()["heads"]["topic"]["status"] == "ready"


def test_a_model_that_fails_its_self_test_is_never_served():
    engines = []

    def load(target=None):
        engines.append(FakeWorker())
        return engines[-1]

    def failing_test(engine):
        raise ModelUnavailable("self-test: wrong answer")

    service = running(ModelService(load_tasks(), load, self_test=failing_test, max_backoff_s=0.05))
    try:
        time.sleep(0.3)
        assert service.readiness.snapshot().state is State.FAILED
        assert "wrong answer" in service.readiness.snapshot().reason
        assert engines and all(e.closed for e in engines)
        with pytest.raises(ModelUnavailable):
            service.classify("sentiment", ["hi"])
    finally:
        service.lifecycle.close()


def test_loading_state_answers_503_at_once():
    def slow_load(target=None):
        time.sleep(5)
        return FakeWorker()

    service = running(ModelService(load_tasks(), slow_load))
    try:
        started = time.monotonic()
        response = routes(service).get("/ready")
        assert time.monotonic() - started < 1.0
        assert response.status_code == 503 and response.json()["state"] == "loading"
    finally:
        service.lifecycle.close()


def admin_client(service, token):
    from ops.api.admin import AdminActions, add_admin_routes

    app = FastAPI()
    add_admin_routes(app, AdminActions(service, token))
    return TestClient(app)


def test_reload_swaps_in_a_new_engine_and_drains_the_old():
    engines = []

    def load(target=None):
        engines.append(FakeWorker())
        return engines[-1]

    with ready_service(load) as service:
        assert service.lifecycle.reload("test") is True
        assert wait_for(lambda: len(engines) == 2 and engines[0].closed)
        assert not engines[1].closed and service.readiness.snapshot().ready
        assert service.classify("sentiment", ["hi"])[0].label == "positive"


def test_a_failed_reload_keeps_the_old_engine_serving():
    calls = []

    def load(target=None):
        calls.append(1)
        if len(calls) > 1:
            raise ModelNotFound("No model at /gone")
        return FakeWorker()

    with ready_service(load) as service:
        service.lifecycle.reload("test")
        assert wait_for(lambda: service.readiness.snapshot().reason is not None)
        snapshot = service.readiness.snapshot()
        assert snapshot.ready and "still serving the previous model" in snapshot.reason
        assert service.classify("sentiment", ["hi"])[0].label == "positive"


def test_admin_routes_need_the_token():
    with ready_service() as service:
        assert admin_client(service, None).post("/admin/reload").status_code == 403
        client = admin_client(service, "s3cret")
        assert client.post("/admin/reload").status_code == 401
        assert client.post("/admin/reload", headers={"Authorization": "Bearer wrong"}).status_code == 401
        ok = client.post("/admin/reload", headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 202 and ok.json()["reloading"] is True


def test_changed_model_files_are_noticed(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"weights")

    class WorkerOnDisk(FakeWorker):
        model_path = tmp_path

    with ready_service(WorkerOnDisk) as service:
        assert service.disk.check().files_changed is False
        (tmp_path / "model.safetensors").write_bytes(b"tampered!")
        assert service.disk.check().files_changed is True


def test_a_request_that_finds_the_worker_gone_starts_the_recovery_and_is_served_by_the_new_one():
    from engine.errors import WorkerGone

    workers = []

    class MortalWorker(FakeWorker):
        def submit(self, task, request):
            if self.closed:  # its process ended: the request is never sent
                raise WorkerGone()
            return super().submit(task, request)

    def load(target=None):
        workers.append(MortalWorker())
        return workers[-1]

    service = running(ModelService(load_tasks(), load, ready_wait_s=10))
    try:
        assert service.readiness.wait_ready(5)
        workers[0].closed = True  # SIGKILLed, say; no watchdog runs in this test
        assert service.classify("sentiment", ["hi"])[0].label == "positive"  # waited, then served
        assert len(workers) == 2 and service.readiness.stats.recoveries["worker_exit"] == 1
    finally:
        service.lifecycle.close()


def test_without_a_wait_a_request_during_a_recovery_gets_retry_shortly_at_once():
    def slow_load(target=None):
        time.sleep(5)
        return FakeWorker()

    service = running(ModelService(load_tasks(), slow_load, ready_wait_s=0))
    try:
        started = time.monotonic()
        with pytest.raises(ModelUnavailable, match="retry shortly"):
            service.classify("sentiment", ["hi"])
        assert time.monotonic() - started < 1.0
    finally:
        service.lifecycle.close()


@pytest.mark.parametrize("replacement_passes", [True, False])
def test_a_worker_that_hangs_while_its_replacement_loads_is_taken_out_at_once(replacement_passes):
    """A long replacement (a reload whose worker takes its time to load) must not hide a hung serving
    worker behind a 200: the watchdog's vitals take it out (503) and kill it within the usual detection,
    and the replacement comes into service; if the replacement fails, a load follows."""
    import threading

    from ops.serving.readiness import RecoveryCause
    from ops.serving.watchdog import WatchdogConfig, Watchdog, load_probes

    release = threading.Event()
    started: list[FakeWorker] = []

    class Hangs(FakeWorker):
        stuck = 0.0

        def stuck_for(self):
            return self.stuck

    def start_worker(target=None):
        if started:  # the replacement: slow to load, then passes or fails
            release.wait(10)
            if not replacement_passes and len(started) == 1:
                started.append(None)
                raise ModelUnavailable("the replacement failed to load")
        started.append(Hangs())
        return started[-1]

    service = running(ModelService(load_tasks(), start_worker, max_backoff_s=0.05))
    try:
        assert service.readiness.wait_ready(5)
        first = started[0]
        assert service.lifecycle.reload("operator", operator=True)
        first.stuck = 60.0  # hangs while the replacement loads
        dog = Watchdog(service, load_probes(), WatchdogConfig(hang_limit_s=10), rss=lambda: 1)
        assert dog.check_vitals().value == "recover"
        snapshot = service.readiness.snapshot()
        assert snapshot.state is State.RECOVERING and not snapshot.ready  # /ready leaves 200 at once
        assert "replacement" in snapshot.reason
        assert wait_for(lambda: first.killed)
        assert routes(service).get("/ready").status_code == 503
        release.set()
        assert wait_for(lambda: service.readiness.snapshot().ready, timeout=10)
        serving = service.lifecycle.supervisor.serving
        assert serving is started[-1] and serving is not first
        assert service.lifecycle.readiness.stats.recoveries[RecoveryCause.HANG.value] == 1
    finally:
        release.set()
        service.lifecycle.close()
