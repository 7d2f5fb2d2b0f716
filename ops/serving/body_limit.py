"""A cap on the request body of the app's own routes, checked before the route reads it.

The health, metrics and admin routes (and ``/v1`` when there is one) are
plain HTTP, so a client could send them a body of any size. ``BodyLimit``,
a pure ASGI middleware, answers 413 with the limit named when the declared
length is over ``--max-body-bytes``; otherwise it reads the body first (these
bodies are small), stops at the limit with the same 413, and hands the app
the body it read. Gradio's routes are left to Gradio: their inputs meet the
request limits (``ops.serving.limits``) at the queue.
"""

from __future__ import annotations

import json

__all__ = ["BodyLimit", "OWN_ROUTES"]

OWN_ROUTES = ("/admin", "/v1", "/health", "/ready", "/metrics")


class BodyLimit:
    def __init__(self, app, max_bytes: int, prefixes: tuple[str, ...] = OWN_ROUTES) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.prefixes = prefixes

    def _guarded(self, path: str) -> bool:
        return any(path == p or path.startswith(p + "/") for p in self.prefixes)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or not self._guarded(scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                await self._refuse(send, 400, "The Content-Length header is not a number.")
                return
            if size > self.max_bytes:
                await self._refuse(send, 413, self._message(size))
                return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > self.max_bytes:
                await self._refuse(send, 413, self._message(len(body), at_least=True))
                return
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()  # after the body: wait for the disconnect as usual
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)

    def _message(self, size: int, at_least: bool = False) -> str:
        return (f"Request body too large: {'more than ' if at_least else ''}{size} bytes, "
                f"the limit is {self.max_bytes} (--max-body-bytes).")

    @staticmethod
    async def _refuse(send, status: int, message: str) -> None:
        body = json.dumps({"error": {"message": message, "type": "invalid_request_error"}}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
