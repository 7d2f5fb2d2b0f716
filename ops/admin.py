"""Operator routes, behind a bearer token.

``POST /admin/reload`` reloads the active model version beside the one
serving (see ``ModelService.reload``). With no admin token configured the
routes are off (403); a missing or wrong token is 401. Tokens are compared in
constant time.
"""

from __future__ import annotations

import secrets

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse

from ops.lifecycle import ModelService

__all__ = ["add_admin_routes"]


def add_admin_routes(app: FastAPI, service: ModelService, admin_token: str | None) -> None:
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
