"""The failover drill: SIGKILL the HA demo's primary under steady client traffic, and measure the failover.

``failover_drill`` takes the demo's JSON line (``ops.tools.ha``); the failover test and
``bench/failover.py`` use it. ``SteadyTraffic`` sends requests the way a user's browser does.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass

import httpx
from loguru import logger

from ops.tools.ha import is_ready, serving, wait_until

__all__ = ["Attempt", "SteadyTraffic", "failover_drill", "requests_served"]


@dataclass(frozen=True)
class Attempt:
    started: float  # time.monotonic()
    ended: float
    ok: bool
    error: str = ""


class SteadyTraffic:
    """Client threads sending sentiment requests through ``url`` back to back, every attempt recorded.

    Each thread uses its own ``gradio_client.Client``, so requests take the
    path a user's do (queue join, then the event stream), sticky cookie included.
    """

    def __init__(self, url: str, clients: int = 2, pause_s: float = 0.05, timeout_s: float = 30.0,
                 text: str = "The food was great and the staff were friendly.") -> None:
        self.url, self.pause_s, self.timeout_s, self.text = url, pause_s, timeout_s, text
        self.n_clients = clients
        self.attempts: list[Attempt] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> "SteadyTraffic":
        from gradio_client import Client

        for _ in range(self.n_clients):
            client = Client(self.url, verbose=False)
            thread = threading.Thread(target=self._run, args=(client,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def _run(self, client) -> None:
        try:
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    result = client.submit(self.text, api_name="/sentiment").result(timeout=self.timeout_s)
                    ok = isinstance(result, dict) and result.get("label") in ("positive", "negative")
                    error = "" if ok else f"unexpected result {result!r}"
                except Exception as exc:  # any failure is a data point, not a crash of the drill
                    ok, error = False, f"{type(exc).__name__}: {exc}"[:300]
                with self._lock:
                    self.attempts.append(Attempt(started, time.monotonic(), ok, error))
                self._stop.wait(self.pause_s)
        finally:
            client.close()

    def snapshot(self) -> list[Attempt]:
        with self._lock:
            return list(self.attempts)

    def stop(self) -> list[Attempt]:
        self._stop.set()
        for thread in self._threads:
            thread.join(self.timeout_s + 5)
        return self.snapshot()


def requests_served(instance_url: str, task: str = "sentiment") -> float:
    """Successful requests of ``task`` this process has answered since it started (from its /metrics)."""
    from prometheus_client.parser import text_string_to_metric_families

    response = httpx.get(instance_url + "/metrics", timeout=5)
    for family in text_string_to_metric_families(response.text):
        if family.name == "allinone_requests":
            return sum(s.value for s in family.samples if s.name == "allinone_requests_total"
                       and s.labels.get("task") == task and s.labels.get("outcome") == "ok")
    return 0.0


def failover_drill(info: dict, warmup_s: float = 3.0, after_s: float = 3.0, timeout: float = 180.0,
                   clients: int = 2) -> dict:
    """SIGKILL the primary's app under steady traffic through HAProxy; measure failover, restart and failback.

    ``info`` is the demo's JSON line. Returns the figures (seconds from the
    kill): ``gap_s`` until a request sent after the kill is answered,
    ``restart_s`` until the supervisor's new primary passes /ready,
    ``failback_s`` until HAProxy sends new clients to it again; and the
    requests, failed ones split into those in flight at the kill and those
    sent after it, and how many each instance answered.
    """
    primary, standby = (f"http://127.0.0.1:{info[role]['port']}" for role in ("primary", "standby"))
    haproxy_port = info["haproxy"]["port"]
    standby_before = requests_served(standby)
    traffic = SteadyTraffic(f"http://127.0.0.1:{haproxy_port}", clients=clients).start()
    try:
        wait_until(lambda: any(a.ok for a in traffic.snapshot()), timeout, "a first answer through HAProxy")
        time.sleep(warmup_s)
        os.kill(info["primary"]["pid"], signal.SIGKILL)
        killed_at = time.monotonic()
        logger.info("killed the primary (pid {})", info["primary"]["pid"])
        answered_after = lambda: [a for a in traffic.snapshot() if a.ok and a.started > killed_at]  # noqa: E731
        wait_until(lambda: bool(answered_after()), timeout, "an answer after the kill")
        gap_s = min(a.ended for a in answered_after()) - killed_at
        restart_s = wait_until(lambda: is_ready(primary), timeout, "the restarted primary's /ready 200",
                               interval=0.1)
        failback_s = wait_until(lambda: serving(haproxy_port) == "primary", timeout, "HAProxy back on the primary",
                                interval=0.1) + restart_s
        back_at = time.monotonic()
        time.sleep(after_s)
    finally:
        attempts = traffic.stop()
    in_flight = [a for a in attempts if not a.ok and a.started <= killed_at]
    after = [a for a in attempts if not a.ok and a.started > killed_at]
    return {
        "gap_s": round(gap_s, 2), "restart_s": round(restart_s, 2), "failback_s": round(failback_s, 2),
        "requests": len(attempts), "ok": sum(a.ok for a in attempts),
        "failed_in_flight": len(in_flight), "failed_after_kill": len(after),
        "failures": [{"sent_s": round(a.started - killed_at, 2), "failed_s": round(a.ended - killed_at, 2),
                      "error": a.error} for a in in_flight + after],
        "ok_after_failback": sum(a.ok and a.started > back_at for a in attempts),
        "served_by_standby": requests_served(standby) - standby_before,
        "served_by_new_primary": requests_served(primary),
        "new_primary_uptime_s": httpx.get(primary + "/ready", timeout=5).json()["uptime_s"],
        "since_kill_s": round(time.monotonic() - killed_at, 1),
    }
