"""Fault drills on the default model under steady client traffic.

    .venv/bin/python bench/drill.py [--kinds nan-weights,hang,exit,slow] [--clients 2] [--backend auto]

Starts ``python app.py`` with ``--fault-injection`` and the default watchdog
settings (self-test every 15 s, hang limit 10 s), keeps clients sending
sentiment requests with known answers, injects each fault and reports:
detection time (fault -> /ready leaves ready), recovery time (fault -> ready
again), requests that failed (by message), wrong answers, responses with
stack traces, and whether /health answered throughout.
"""

from __future__ import annotations

import argparse
import collections
import threading
import time

import httpx

from common import KNOWN, header, running_app

TOKEN = "drill-token"


def drill(url: str, kind: str, clients: int) -> dict:
    from gradio_client import Client

    stop = threading.Event()
    outcomes: collections.Counter = collections.Counter()
    wrong, traces = [], []

    def traffic(i: int) -> None:
        client = Client(url, verbose=False)
        n = i
        while not stop.is_set():
            text, label = KNOWN[n % len(KNOWN)]
            n += 1
            try:
                got = client.predict(text, api_name="/sentiment")["label"]
                outcomes["ok"] += 1
                if got != label:
                    wrong.append((text, got))
            except Exception as exc:
                message = str(exc)
                outcomes[message[:60]] += 1
                if "Traceback" in message:
                    traces.append(message)

    threads = [threading.Thread(target=traffic, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    time.sleep(3)
    injected = time.monotonic()
    httpx.post(f"{url}/admin/fault/{kind}", headers={"Authorization": f"Bearer {TOKEN}"}).raise_for_status()
    detected = recovered = None
    health_ok = True
    while time.monotonic() - injected < 180:
        health_ok &= httpx.get(url + "/health", timeout=5).status_code == 200
        state = httpx.get(url + "/ready", timeout=5).json()["state"]
        now = time.monotonic() - injected
        if detected is None and state != "ready":
            detected = now
        if detected is not None and state == "ready":
            recovered = now
            break
        time.sleep(0.2)
    time.sleep(3)
    stop.set()
    for t in threads:
        t.join(60)
    return {"kind": kind, "detected_s": detected, "ready_again_s": recovered, "outcomes": dict(outcomes),
            "wrong_answers": len(wrong), "stack_traces": len(traces), "health_up": health_ok}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kinds", default="nan-weights,hang")
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--backend", default="auto", help="auto, torch or llamacpp (as the app's --backend)")
    args = parser.parse_args()
    header("fault drills on the default model")
    with running_app(["--admin-token", TOKEN, "--fault-injection", "--log-dir", "/tmp/allinone-drill-logs",
                      "--backend", args.backend]) as (_, url, _):
        for kind in args.kinds.split(","):
            print(drill(url, kind, args.clients), flush=True)


if __name__ == "__main__":
    main()
