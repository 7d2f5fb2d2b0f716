"""Serve ``/health`` and ``/ready`` from the first second, the full app once it is built.

``StagedApp`` is the ASGI app uvicorn runs: a small early app answers at once while the full app
(routes plus the Gradio UI) is built in a thread (about 3 s); then its lifespan is entered on the
server's loop and new requests go to it. If building it fails, the server stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Callable

from fastapi import Request
from fastapi.responses import HTMLResponse, JSONResponse
from loguru import logger

__all__ = ["StagedApp", "STARTING_PAGE", "add_starting_routes"]

STARTING_PAGE = """<!doctype html><html><head><meta charset="utf-8"><meta http-equiv="refresh" content="2">
<title>Qwen All-in-One</title></head><body style="font-family: sans-serif; margin: 3em">
<h1>Qwen All-in-One</h1><p>Starting… this page reloads itself.</p>
<p>正在启动…本页会自动刷新。</p></body></html>"""
RETRY_AFTER_S = 2
STARTING_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]


def add_starting_routes(app) -> None:
    """Answer every path the early app does not serve with 503 and ``Retry-After``, never 404.

    Added after the early app's own routes, which therefore still match
    first. A 503 says "not yet", which a load balancer may retry elsewhere
    (``retry-on 503`` in ``ops/deploy/haproxy.cfg``); a 404 for
    ``/gradio_api/queue/join`` from a restarted primary would reach the
    client as a hard failure during a failover.
    """
    headers = {"Retry-After": str(RETRY_AFTER_S)}

    def starting(request: Request):
        if request.url.path == "/" or "text/html" in request.headers.get("accept", ""):
            return HTMLResponse(STARTING_PAGE, status_code=503, headers=headers)
        return JSONResponse({"error": "starting", "retry_after_s": RETRY_AFTER_S}, status_code=503, headers=headers)

    app.add_api_route("/{path:path}", starting, methods=STARTING_METHODS, include_in_schema=False)


class StagedApp:
    """An ASGI app: ``early`` until ``build()`` has made the full app; see the module doc."""

    def __init__(self, early, build: Callable[[], object], on_failure: Callable[[], None]) -> None:
        self._current = early
        self._build = build
        self._on_failure = on_failure
        self._stack = contextlib.AsyncExitStack()
        self.full_ready = threading.Event()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        else:
            await self._current(scope, receive, send)

    async def _lifespan(self, receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                loop = asyncio.get_running_loop()
                threading.Thread(target=self._build_then_switch, args=(loop,), name="build-app", daemon=True).start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self._stack.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _build_then_switch(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            full = self._build()
            asyncio.run_coroutine_threadsafe(self._switch(full), loop).result()
        except Exception as exc:  # the UI cannot be served: let the supervisor start us again
            logger.opt(exception=exc).error("building the web app failed; stopping")
            self._on_failure()

    async def _switch(self, full) -> None:
        await self._stack.enter_async_context(full.router.lifespan_context(full))
        self._current = full
        self.full_ready.set()
