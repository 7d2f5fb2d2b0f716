"""Other instances as the Status tab shows them: readiness, model version and latency.

Each check asks every peer's ``GET /ready`` at once, with a short timeout, so
a dead or slow peer costs the page at most that timeout and never an error.
The result is plain dicts; the UI only renders them.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import httpx

__all__ = ["Peers"]


class Peers:
    def __init__(self, urls: Sequence[str], timeout_s: float = 1.0) -> None:
        self.urls = tuple(urls)
        self.timeout_s = timeout_s

    def check(self) -> list[dict]:
        """One row per peer, in the configured order: url, ready, state, model, latency_ms, error."""
        if not self.urls:
            return []
        with ThreadPoolExecutor(max_workers=len(self.urls)) as pool:
            return list(pool.map(self._check_one, self.urls))

    def _check_one(self, url: str) -> dict:
        started = time.perf_counter()
        try:
            response = httpx.get(url + "/ready", timeout=self.timeout_s)
            body = response.json()
            if not isinstance(body, dict):
                raise ValueError("not a readiness answer")
        except (httpx.HTTPError, ValueError) as exc:
            return {"url": url, "ready": False, "state": "unreachable", "model": None, "latency_ms": None,
                    "error": type(exc).__name__}
        return {"url": url, "ready": response.status_code == 200 and body.get("state") == "ready",
                "state": body.get("state", "?"), "model": body.get("model"),
                "latency_ms": round((time.perf_counter() - started) * 1000), "error": body.get("reason")}
