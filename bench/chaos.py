"""Chaos report: faults against the running app under steady traffic, one row per fault.

    .venv/bin/python bench/chaos.py [--faults sigkill,sigstop,hang,hang-x10] [--clients 4]

Starts ``python app.py`` on the default model with ``--fault-injection``
(default watchdog settings: vitals every 2 s, hang limit 10 s), keeps
``--clients`` users busy (sentiment with known answers; one of them chats
with a question whose answer is checked), applies each fault in turn, waits
until the app is ready again on a new worker, and reports per fault:

- how it was detected (the recovery cause that was counted) and after how
  long, and the time until ``/ready`` is 200 again;
- requests that failed: in flight (sent before the fault), sent after the
  fault but before it was detected, and sent after detection; and wrong
  answers (any);
- the web and worker processes' RSS before the fault and after recovery.

``hang-x10`` is ten ``hang`` drills in a row: worker RSS after the last against
the first ready value, and web RSS growth (the leak a hung thread used to
cause). The table at the end goes into ``docs/reliability.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import threading
import time
from dataclasses import dataclass

import httpx

from common import KNOWN, header, start_app, tree_rss

TOKEN = "chaos-token"
CHAT = ("What is 2 + 3? Answer with just the number.", "5")


@dataclass(frozen=True)
class Attempt:
    kind: str  # sentiment or chat
    started: float
    ended: float
    ok: bool
    wrong: bool = False
    error: str = ""


class Traffic:
    """Users sending requests back to back, each attempt recorded; a watcher samples /ready."""

    def __init__(self, url: str, clients: int) -> None:
        self.url = url
        self.attempts: list[Attempt] = []
        self.samples: list[tuple[float, str, int | None]] = []  # (time, state, worker pid)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._user, args=(i, i == 0 and clients > 1), daemon=True)
                         for i in range(clients)]
        self._threads.append(threading.Thread(target=self._watch, daemon=True))

    def _user(self, i: int, chats: bool) -> None:
        from gradio_client import Client

        client = Client(self.url, verbose=False)
        n = i
        while not self._stop.is_set():
            started = time.monotonic()
            if chats:
                kind, (text, expected) = "chat", CHAT
            else:
                kind, (text, expected) = "sentiment", KNOWN[n % len(KNOWN)]
                n += 1
            try:
                if kind == "chat":
                    got = client.predict(text, api_name="/chat")
                    attempt = Attempt(kind, started, time.monotonic(), True, wrong=expected not in got)
                else:
                    got = client.predict(text, api_name="/sentiment")["label"]
                    attempt = Attempt(kind, started, time.monotonic(), True, wrong=got != expected)
            except Exception as exc:  # noqa: BLE001 - every failure is a data point
                attempt = Attempt(kind, started, time.monotonic(), False, error=str(exc)[:120])
            with self._lock:
                self.attempts.append(attempt)
            time.sleep(0.05)

    def _watch(self) -> None:
        while not self._stop.is_set():
            try:
                body = httpx.get(self.url + "/ready", timeout=2).json()
                sample = (time.monotonic(), body["state"], body.get("worker_pid"))
            except (httpx.HTTPError, ValueError):
                sample = (time.monotonic(), "unreachable", None)
            with self._lock:
                self.samples.append(sample)
            time.sleep(0.1)

    def start(self) -> "Traffic":
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(90)

    def since(self, t: float) -> tuple[list[Attempt], list[tuple[float, str, int | None]]]:
        with self._lock:
            return ([a for a in self.attempts if a.ended >= t], [s for s in self.samples if s[0] >= t])


def recoveries(url: str) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(url + "/metrics", timeout=5).text
    return {s.labels["cause"]: s.value for f in text_string_to_metric_families(text) for s in f.samples
            if s.name == "allinone_recoveries_total"}


def worker_pid(url: str) -> int | None:
    return httpx.get(url + "/ready", timeout=5).json().get("worker_pid")


def inject(kind: str, url: str) -> None:
    if kind == "sigkill":
        os.kill(worker_pid(url), signal.SIGKILL)
    elif kind == "sigstop":
        os.kill(worker_pid(url), signal.SIGSTOP)
    else:
        httpx.post(f"{url}/admin/fault/{kind}", headers={"Authorization": f"Bearer {TOKEN}"},
                   timeout=10).raise_for_status()


def one_fault(kind: str, url: str, web_pid: int, traffic: Traffic, timeout: float = 180.0) -> dict:
    """Apply one fault and follow it until the app is ready on a new worker."""
    time.sleep(3)  # steady traffic first
    before_pid, before_causes = worker_pid(url), recoveries(url)
    web_before, worker_before = tree_rss(web_pid)
    t0 = time.monotonic()
    inject(kind, url)
    detected = ready = None
    while time.monotonic() - t0 < timeout and ready is None:
        time.sleep(0.2)
        _, samples = traffic.since(t0)
        for at, state, pid in samples:
            if detected is None and (state != "ready" or pid != before_pid):
                detected = at
            if detected is not None and state == "ready" and pid not in (None, before_pid):
                ready = at
                break
    time.sleep(3)  # and after: requests sent once it is back must succeed too
    attempts, _ = traffic.since(t0)
    web_after, worker_after = tree_rss(web_pid)
    after_causes = recoveries(url)
    causes = [c for c in after_causes if after_causes[c] > before_causes.get(c, 0)]
    cut = detected if detected is not None else t0
    return {
        "fault": kind,
        "detected_by": ",".join(causes) or "-",
        "detected_s": None if detected is None else round(detected - t0, 1),
        "ready_s": None if ready is None else round(ready - t0, 1),
        "requests": len(attempts),
        "failed_in_flight": sum(not a.ok and a.started < t0 for a in attempts),
        "failed_before_detection": sum(not a.ok and t0 <= a.started < cut for a in attempts),
        "failed_after_detection": sum(not a.ok and a.started >= cut for a in attempts),
        "errors": sorted({a.error for a in attempts if not a.ok}),
        "wrong_answers": sum(a.wrong for a in attempts),
        "worker_rss_mib": [round(worker_before / 2**20), round(worker_after / 2**20)],
        "web_rss_mib": [round(web_before / 2**20), round(web_after / 2**20)],
    }


def repeated_hangs(url: str, web_pid: int, traffic: Traffic, times: int, first_worker_rss: int) -> dict:
    web_before, _ = tree_rss(web_pid)
    rows = [one_fault("hang", url, web_pid, traffic) for _ in range(times)]
    web_after, worker_after = tree_rss(web_pid)
    return {
        "fault": f"hang x{times}",
        "detected_by": ",".join(sorted({r["detected_by"] for r in rows})),
        "detected_s": max(r["detected_s"] or 0 for r in rows),
        "ready_s": max(r["ready_s"] or float("inf") for r in rows),
        "ready_s_median": statistics.median(r["ready_s"] or float("inf") for r in rows),
        "requests": sum(r["requests"] for r in rows),
        "failed_in_flight": sum(r["failed_in_flight"] for r in rows),
        "failed_before_detection": sum(r["failed_before_detection"] for r in rows),
        "failed_after_detection": sum(r["failed_after_detection"] for r in rows),
        "errors": sorted({e for r in rows for e in r["errors"]}),
        "wrong_answers": sum(r["wrong_answers"] for r in rows),
        "worker_rss_mib": [round(first_worker_rss / 2**20), round(worker_after / 2**20)],
        "worker_rss_change": round(worker_after / first_worker_rss - 1, 3),
        "web_rss_mib": [round(web_before / 2**20), round(web_after / 2**20)],
        "web_rss_growth_mib": round((web_after - web_before) / 2**20, 1),
    }


def table(rows: list[dict]) -> str:
    lines = ["| fault | detected by | detected after | /ready 200 after | requests | failed in flight | failed "
             "before detection | failed after detection | wrong answers | worker RSS before → after | "
             "web RSS before → after |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['fault']} | {r['detected_by']} | {r['detected_s']} s | {r['ready_s']} s | "
                     f"{r['requests']} | {r['failed_in_flight']} | {r['failed_before_detection']} | "
                     f"{r['failed_after_detection']} | {r['wrong_answers']} | "
                     f"{r['worker_rss_mib'][0]} → {r['worker_rss_mib'][1]} MiB | "
                     f"{r['web_rss_mib'][0]} → {r['web_rss_mib'][1]} MiB |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--faults", default="sigkill,sigstop,hang,hang-x10")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--model-dir", help="default: the store's current version")
    args = parser.parse_args()
    header("chaos report")
    app_args = ["--admin-token", TOKEN, "--fault-injection", "--log-dir", "/tmp/allinone-chaos-logs",
                "--max-new-tokens", "16"] + (["--model-dir", args.model_dir] if args.model_dir else [])
    proc, url, cold = start_app(app_args)
    print(f"cold start: {cold:.1f} s", flush=True)
    time.sleep(2)
    _, first_worker_rss = tree_rss(proc.pid)
    traffic = Traffic(url, args.clients).start()
    rows = []
    try:
        for kind in args.faults.split(","):
            if kind.startswith("hang-x"):
                row = repeated_hangs(url, proc.pid, traffic, int(kind[len("hang-x"):]), first_worker_rss)
            else:
                row = one_fault(kind, url, proc.pid, traffic)
            rows.append(row)
            print(json.dumps(row, ensure_ascii=False), flush=True)
    finally:
        traffic.stop()
        proc.terminate()
        proc.wait(30)
    print(table(rows))


if __name__ == "__main__":
    main()
