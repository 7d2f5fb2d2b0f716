"""Liveness and readiness routes.

``GET /health``: the process answers at all (200 even while loading, busy or
recovering). ``GET /ready``: 200 only when a model is loaded and its last
self-test passed, else 503; the body always says why. Both read the
service's snapshot and never wait for the model.
"""

from __future__ import annotations

import time

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from ops.lifecycle import ModelService

__all__ = ["add_health_routes"]


def add_health_routes(app: FastAPI, service: ModelService) -> None:
    started = time.time()

    @app.get("/health", include_in_schema=False)
    def health() -> JSONResponse:
        return JSONResponse({"status": "alive", "uptime_s": round(time.time() - started, 1)})

    @app.get("/ready", include_in_schema=False)
    def ready() -> JSONResponse:
        snapshot = service.snapshot()
        return JSONResponse(
            snapshot.to_json(),
            status_code=200 if snapshot.ready else 503,
            headers={"Cache-Control": "no-store"},
        )
