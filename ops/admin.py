"""Operator routes, behind a bearer token.

``POST /admin/reload`` reloads the active model version beside the one
serving (see ``ModelService.reload``). ``POST /admin/fault/{kind}`` runs a
fault drill (``nan-weights``, ``hang``, ``error``, ``exit``) and exists only
with ``--fault-injection``, for classrooms and tests. With no admin token configured the
routes are off (403); a missing or wrong token is 401. Tokens are compared in
constant time.
"""

from __future__ import annotations

import os
import secrets
import threading

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from loguru import logger

from ops.lifecycle import ModelService

__all__ = ["add_admin_routes"]


FAULT_KINDS = ("nan-weights", "hang", "error", "exit")


def add_admin_routes(app: FastAPI, service: ModelService, admin_token: str | None,
                     fault_injection: bool = False) -> None:
    def authorize(request: Request) -> None:
        if not admin_token:
            raise HTTPException(403, "Admin routes are off: start the app with --admin-token.")
        given = request.headers.get("authorization", "")
        if not secrets.compare_digest(given.encode(), f"Bearer {admin_token}".encode()):
            raise HTTPException(401, "A valid admin token is required (Authorization: Bearer <token>).",
                                headers={"WWW-Authenticate": "Bearer"})

    @app.post("/admin/reload", include_in_schema=False)
    def reload(request: Request) -> JSONResponse:
        authorize(request)
        started = service.reload("operator request")
        return JSONResponse({"reloading": started, "state": service.snapshot().state.value}, status_code=202)

    @app.post("/admin/fault/{kind}", include_in_schema=False)
    def fault(kind: str, request: Request) -> JSONResponse:
        authorize(request)
        if not fault_injection:
            raise HTTPException(403, "Fault drills are off: start the app with --fault-injection.")
        if kind not in FAULT_KINDS:
            raise HTTPException(404, f"Unknown fault {kind!r}; known: {', '.join(FAULT_KINDS)}.")
        logger.warning("fault drill: {}", kind)
        if kind == "exit":
            # Answer first, then leave the way a crash would: no cleanup, for the supervisor to handle.
            threading.Timer(0.2, os._exit, args=(1,)).start()
        else:
            service.inject_fault(kind)
        return JSONResponse({"injected": kind}, status_code=202)
