"""Liveness and readiness routes: ``GET /health`` (the process answers) and ``GET /ready``.

``/ready`` is 200 only when a model serves, its last self-test passed and the UI is served, else 503;
the body says why. Both read the readiness snapshot and never wait for the model. On a non-loopback
address the reasons name no filesystem path unless the request carries the admin token.
"""

from __future__ import annotations

import re
import time

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from ops.serving.readiness import Readiness

__all__ = ["add_health_routes"]


UI_STARTING = "the web UI is starting"
_ABSOLUTE_PATH = re.compile(r"(?<![\w.~])(/[^\s'\"():;,/]+)+/?")


def redact_paths(text: str | None) -> str | None:
    """Every absolute path in ``text`` shortened to its last part: ``…/current``."""
    if text is None:
        return None
    return _ABSOLUTE_PATH.sub(lambda m: "…/" + m.group(0).rstrip("/").rsplit("/", 1)[-1], text)


def add_health_routes(app: FastAPI, readiness: Readiness, ui_served: bool = True,
                      hide_paths: bool = False, is_admin=None) -> None:
    """``is_admin(request)``: whether a request may see paths when they are hidden."""
    started = time.time()

    @app.get("/health", include_in_schema=False)
    def health() -> JSONResponse:
        return JSONResponse({"status": "alive", "uptime_s": round(time.time() - started, 1)})

    @app.get("/ready", include_in_schema=False)
    def ready(request: Request) -> JSONResponse:
        snapshot = readiness.snapshot()
        body = snapshot.to_json()
        if snapshot.ready and not ui_served:
            body["reason"] = UI_STARTING
        if hide_paths and not (is_admin is not None and is_admin(request)):
            body["reason"], body["degraded"] = redact_paths(body["reason"]), redact_paths(body["degraded"])
        return JSONResponse(
            body,
            status_code=200 if snapshot.ready and ui_served else 503,
            headers={"Cache-Control": "no-store"},
        )
