"""Liveness and readiness routes.

``GET /health``: the process answers at all (200 even while loading, busy or
recovering). ``GET /ready``: 200 only when a model is loaded and its last
self-test passed, and the UI and API are served, else 503; the body always
says why. Both read the service's snapshot and never wait for the model.
The early app (``ops.staged_app``) adds them with ``ui_served=False``: until
the full app takes over, a ready model still answers 503, "the web UI is
starting".
"""

from __future__ import annotations

import time

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from ops.service import ModelService

__all__ = ["add_health_routes"]


UI_STARTING = "the web UI is starting"


def add_health_routes(app: FastAPI, service: ModelService, ui_served: bool = True) -> None:
    started = time.time()

    @app.get("/health", include_in_schema=False)
    def health() -> JSONResponse:
        return JSONResponse({"status": "alive", "uptime_s": round(time.time() - started, 1)})

    @app.get("/ready", include_in_schema=False)
    def ready() -> JSONResponse:
        snapshot = service.snapshot()
        body = snapshot.to_json()
        if snapshot.ready and not ui_served:
            body["reason"] = UI_STARTING
        return JSONResponse(
            body,
            status_code=200 if snapshot.ready and ui_served else 503,
            headers={"Cache-Control": "no-store"},
        )
