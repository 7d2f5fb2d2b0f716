"""The staged start: health and readiness from the first second, the full app once it is built."""

from __future__ import annotations

import threading

from fastapi import FastAPI
from fastapi.responses import PlainTextResponse
from fastapi.testclient import TestClient

from ops.serving.health import UI_STARTING, add_health_routes
from ops.serving.readiness import State
from ops.serving.staged_app import StagedApp, add_starting_routes
from tests.fakes import FakeWorker, running, wait_for


def ready_service():
    from engine.tasks import load_tasks
    from ops.serving.service import ModelService

    service = running(ModelService(load_tasks(), FakeWorker))
    assert service.readiness.wait_ready(5)
    return service


def test_the_early_app_answers_until_the_full_app_takes_over():
    service = ready_service()
    release, lifespan = threading.Event(), []
    early = FastAPI()
    add_health_routes(early, service.readiness, ui_served=False)
    add_starting_routes(early)

    def build():
        release.wait(10)  # importing Gradio and building the UI takes seconds
        import contextlib

        @contextlib.asynccontextmanager
        async def full_lifespan(app):
            lifespan.append("started")
            yield
            lifespan.append("stopped")

        full = FastAPI(lifespan=full_lifespan)
        add_health_routes(full, service.readiness)
        full.add_api_route("/", lambda: PlainTextResponse("the UI"))
        return full

    staged = StagedApp(early, build, on_failure=lambda: None)
    try:
        with TestClient(staged) as client:
            assert client.get("/health").status_code == 200
            ready = client.get("/ready")
            assert ready.status_code == 503 and ready.json()["reason"] == UI_STARTING
            assert ready.json()["state"] == State.READY.value  # the model itself is ready
            page = client.get("/")
            assert page.status_code == 503 and "Starting" in page.text and page.headers["retry-after"] == "2"
            # Any other path is "not yet" (a load balancer retries it), never 404 (a client sees that as final)
            join = client.post("/gradio_api/queue/join", json={"session_hash": "abc"})
            assert join.status_code == 503 and join.json()["error"] == "starting"
            assert join.headers["retry-after"] == "2"
            assert client.get("/health").status_code == 200  # the early routes still match first
            release.set()
            assert wait_for(staged.full_ready.is_set)
            assert lifespan == ["started"]  # the full app's startup ran (Gradio starts its queue there)
            assert client.get("/").text == "the UI"
            assert client.get("/ready").status_code == 200
        assert lifespan == ["started", "stopped"]
    finally:
        service.lifecycle.close()


def test_a_failed_build_stops_the_server():
    stopped = threading.Event()

    def build():
        raise RuntimeError("gradio is broken")

    with TestClient(StagedApp(FastAPI(), build, on_failure=stopped.set)):
        assert stopped.wait(5)
