"""A cap on the request body of the app's own routes, checked before the route reads it.

``BodyLimit``, a pure ASGI middleware, answers 413 naming ``--max-body-bytes`` when the declared or
read length passes it; a ``RouteLimit`` gives one route its own cap. Gradio's routes are left to
Gradio: their inputs meet the request limits (``engine.kinds.base.RequestLimits``) at the queue.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

__all__ = ["BodyLimit", "OWN_ROUTES", "RouteLimit"]

OWN_ROUTES = ("/admin", "/v1", "/health", "/ready", "/metrics")
DEFAULT_NAMED = "--max-body-bytes"


@dataclass(frozen=True)
class RouteLimit:
    """``max_bytes`` for ``method`` on ``path`` (a ``{name}`` in it matches one path segment); ``named`` says
    in a refusal where the limit comes from."""

    method: str
    path: str
    max_bytes: int
    named: str
    pattern: re.Pattern = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        parts = re.split(r"\{[^/{}]+\}", self.path)
        object.__setattr__(self, "pattern", re.compile("[^/]+".join(map(re.escape, parts))))

    def matches(self, method: str, path: str) -> bool:
        return method.upper() == self.method.upper() and self.pattern.fullmatch(path) is not None


def _size(n: int) -> str:
    for unit, scale in (("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale and n % scale == 0:
            return f"{n // scale} {unit}, "
    return ""


class BodyLimit:
    def __init__(self, app, max_bytes: int, prefixes: tuple[str, ...] = OWN_ROUTES,
                 routes: tuple[RouteLimit, ...] = ()) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.prefixes = prefixes
        self.routes = tuple(routes)

    def _guarded(self, path: str) -> bool:
        return any(path == p or path.startswith(p + "/") for p in self.prefixes)

    def _limit(self, method: str, path: str) -> tuple[int, str]:
        """The cap on this request's body, and where it comes from."""
        for route in self.routes:
            if route.matches(method, path):
                return route.max_bytes, route.named
        return self.max_bytes, DEFAULT_NAMED

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or not self._guarded(scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        limit = self._limit(scope.get("method", ""), scope.get("path", ""))
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                await self._refuse(send, 400, "The Content-Length header is not a number.")
                return
            if size > limit[0]:
                await self._refuse(send, 413, self._message(size, limit))
                return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > limit[0]:
                await self._refuse(send, 413, self._message(len(body), limit, at_least=True))
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

    @staticmethod
    def _message(size: int, limit: tuple[int, str], at_least: bool = False) -> str:
        max_bytes, named = limit
        return (f"Request body too large: {'more than ' if at_least else ''}{size} bytes, "
                f"the limit is {max_bytes} bytes ({_size(max_bytes)}{named}).")

    @staticmethod
    async def _refuse(send, status: int, message: str) -> None:
        body = json.dumps({"error": {"message": message, "type": "invalid_request_error"}}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
