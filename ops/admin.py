"""Operator actions, behind a bearer token: over HTTP and from the Status tab.

``POST /admin/reload`` reloads the active model version beside the one
serving (see ``ops.lifecycle``). ``POST /admin/fault/{kind}`` runs a fault
drill (``engine.types.Fault``: ``nan-weights``, ``hang``, ``error`` and
``exit`` hit the worker process, ``exit-app`` ends this web process) and
exists only with ``--fault-injection``, for classrooms and tests. With no admin token configured the
routes are off (403); a missing or wrong token is 401. Tokens are compared in
constant time.

``AdminActions`` holds the rules once; the routes and the Status tab's drill
buttons both go through it, so a button can do nothing the route would refuse.
"""

from __future__ import annotations

import os
import secrets
import threading

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from loguru import logger

from engine.types import Fault
from ops.service import ModelService

__all__ = ["AdminActions", "AdminDenied", "add_admin_routes", "FAULT_KINDS"]


FAULT_KINDS = tuple(kind.value for kind in Fault)


class AdminDenied(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class AdminActions:
    def __init__(self, service: ModelService, admin_token: str | None, fault_injection: bool = False) -> None:
        self.service = service
        self._token = admin_token
        self.fault_injection = fault_injection

    @property
    def enabled(self) -> bool:
        return bool(self._token)

    @property
    def fault_kinds(self) -> tuple[str, ...]:
        return FAULT_KINDS if self.fault_injection else ()

    def authorize(self, token: str | None) -> None:
        if not self._token:
            raise AdminDenied(403, "Admin actions are off: start the app with --admin-token.")
        if not secrets.compare_digest((token or "").encode(), self._token.encode()):
            raise AdminDenied(401, "A valid admin token is required.")

    def reload(self, token: str | None) -> dict:
        self.authorize(token)
        started = self.service.reload("operator request")
        return {"reloading": started, "state": self.service.snapshot().state.value}

    def fault(self, kind: str, token: str | None) -> dict:
        self.authorize(token)
        if not self.fault_injection:
            raise AdminDenied(403, "Fault drills are off: start the app with --fault-injection.")
        if kind not in FAULT_KINDS:
            raise AdminDenied(404, f"Unknown fault {kind!r}; known: {', '.join(FAULT_KINDS)}.")
        logger.warning("fault drill: {}", kind)
        if kind == Fault.EXIT_APP:
            # Answer first, then leave the way a crash would: no cleanup, for the supervisor to handle.
            threading.Timer(0.2, os._exit, args=(1,)).start()
        else:
            self.service.inject_fault(Fault(kind))
        return {"injected": kind}


def _bearer(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token if scheme.lower() == "bearer" else None


def add_admin_routes(app: FastAPI, actions: AdminActions) -> None:
    def run(action, *args) -> JSONResponse:
        try:
            return JSONResponse(action(*args), status_code=202)
        except AdminDenied as denied:
            if denied.status == 401:
                raise HTTPException(401, f"{denied.message} Send Authorization: Bearer <token>.",
                                    headers={"WWW-Authenticate": "Bearer"}) from None
            raise HTTPException(denied.status, denied.message) from None

    @app.post("/admin/reload", include_in_schema=False)
    def reload(request: Request) -> JSONResponse:
        return run(actions.reload, _bearer(request))

    @app.post("/admin/fault/{kind}", include_in_schema=False)
    def fault(kind: str, request: Request) -> JSONResponse:
        return run(actions.fault, kind, _bearer(request))
