"""Overload is not a hang: a CPU hog beside a class, on each backend.

    .venv/bin/python bench/overload.py [--backends torch,llamacpp] [--students 10] [--seconds 150]

For each backend: ``python app.py`` on the default model with the default
watchdog (hang limit 10 s). A class of ``--students`` works as in
``bench/class_load.py`` (each student, at once, five sentiment requests and
one chat turn in a per-student order: 60 requests for 10), first on a quiet
machine, then beside the hog that once made the watchdog kill a busy worker:
two busy Python loops and two torch matmul loops (3072 x 3072, two threads
each), running for ``--seconds`` from just before the class starts. Reports
recoveries, failed requests, wrong answers, whether ``/ready`` ever left 200,
and sentiment p50/p95, quiet and hogged. Goal: 0 recoveries, 0 failed
requests, ``/ready`` 200 throughout; the class only gets slower.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time

import httpx

from chaos import CHAT, recoveries
from common import KNOWN, cpu_flags_line, header, median, percentile, running_app

BUSY_LOOP = "while True: pass"
MATMUL_LOOP = ("import torch; torch.set_num_threads(2); a = torch.randn(3072, 3072); b = torch.randn(3072, 3072)\n"
               "while True: a @ b")


def one_class(url: str, students: int) -> dict:
    """Every student's six clicks at once; what they saw."""
    from gradio_client import Client

    clients = [Client(url, verbose=False) for _ in range(students)]
    sentiment, failed, wrong, lock = [], [], [0], threading.Lock()

    def student(i: int) -> None:
        plan = ["sentiment"] * 5
        plan.insert(i % 6, "chat")
        for n, step in enumerate(plan):
            started = time.perf_counter()
            try:
                if step == "chat":
                    bad = CHAT[1] not in clients[i].predict(CHAT[0], api_name="/chat")
                else:
                    text, label = KNOWN[(i + n) % len(KNOWN)]
                    bad = clients[i].predict(text, api_name="/sentiment")["label"] != label
                    with lock:
                        sentiment.append(time.perf_counter() - started)
                with lock:
                    wrong[0] += bad
            except Exception as exc:  # noqa: BLE001 - every failure is a finding
                with lock:
                    failed.append(f"{step}: {str(exc)[:100]}")

    threads = [threading.Thread(target=student, args=(i,)) for i in range(students)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {"wall_s": round(time.perf_counter() - started, 1), "failed": failed, "wrong_answers": wrong[0],
            "sentiment_p50_s": round(median(sentiment), 2) if sentiment else None,
            "sentiment_p95_s": round(percentile(sentiment, 95), 2) if sentiment else None}


def run(backend: str, students: int, seconds: float) -> dict:
    app_args = ["--backend", backend, "--max-new-tokens", "16", "--log-dir", "/tmp/allinone-overload-logs"]
    with running_app(app_args) as (_, url, _):
        states: set[str] = set()
        stop = threading.Event()

        def watch() -> None:
            while not stop.is_set():
                try:
                    states.add(str(httpx.get(url + "/ready", timeout=5).status_code))
                except httpx.HTTPError as exc:
                    states.add(type(exc).__name__)
                time.sleep(0.2)

        hogs: list[subprocess.Popen] = []
        try:
            quiet = one_class(url, students)
            before = sum(recoveries(url).values())
            watcher = threading.Thread(target=watch, daemon=True)
            watcher.start()
            hog_started = time.monotonic()
            hogs = [subprocess.Popen([sys.executable, "-c", code])
                    for code in (BUSY_LOOP, BUSY_LOOP, MATMUL_LOOP, MATMUL_LOOP)]
            time.sleep(5)
            hogged = one_class(url, students)
            time.sleep(max(0.0, seconds - (time.monotonic() - hog_started)))
            stop.set()
            watcher.join()
            return {"backend": backend, "students": students, "hog_s": round(time.monotonic() - hog_started),
                    "recoveries_under_hog": sum(recoveries(url).values()) - before,
                    "ready_codes_under_hog": sorted(states), "quiet": quiet, "hog": hogged}
        finally:
            stop.set()
            for hog in hogs:
                hog.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default="torch,llamacpp")
    parser.add_argument("--students", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=150)
    args = parser.parse_args()
    header(f"overload: a CPU hog beside a class of {args.students}")
    print(cpu_flags_line(), flush=True)
    for backend in args.backends.split(","):
        print(json.dumps(run(backend, args.students, args.seconds), ensure_ascii=False), flush=True)


if __name__ == "__main__":
    main()
