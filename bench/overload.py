"""Overload is not a hang: a CPU hog beside a class, on each backend.

    .venv/bin/python bench/overload.py [--backends torch,llamacpp] [--students 10] [--seconds 150]

For each backend: ``python app.py`` on the default model with the default
watchdog (hang limit 10 s), ``--students`` users working as a class does
(``bench/soak.py``'s mix: five sentiment requests and one chat turn each, a
pause between clicks), and beside them for ``--seconds`` the hog that once
made the watchdog kill a busy worker: two busy Python loops and two torch
matmul loops (3072 x 3072, two threads each). Reports recoveries, failed
requests, wrong answers, whether ``/ready`` ever left 200, and sentiment p50
and p95 with and without the hog (the class alone first, for as long).
Goal: 0 recoveries, 0 failed requests, ``/ready`` 200 throughout; it only
gets slower.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from chaos import TOKEN, recoveries
from common import cpu_flags_line, header, median, percentile, start_app
from soak import ClassTraffic

BUSY_LOOP = "while True: pass"
MATMUL_LOOP = ("import torch; torch.set_num_threads(2); a = torch.randn(3072, 3072); b = torch.randn(3072, 3072)\n"
               "while True: a @ b")


def window(traffic: ClassTraffic, start: float, end: float) -> dict:
    attempts, samples = traffic.since(start)
    attempts = [a for a in attempts if a.started <= end]
    sentiment = [a.ended - a.started for a in attempts if a.kind == "sentiment" and a.ok]
    return {"requests": len(attempts), "failed": sum(not a.ok for a in attempts),
            "errors": sorted({a.error for a in attempts if not a.ok}), "wrong_answers": sum(a.wrong for a in attempts),
            "ready_left_200": sorted({state for at, state, _ in samples if at <= end and state != "ready"}),
            "sentiment_p50_s": round(median(sentiment), 2) if sentiment else None,
            "sentiment_p95_s": round(percentile(sentiment, 95), 2) if sentiment else None}


def run(backend: str, students: int, seconds: float) -> dict:
    proc, url, _ = start_app(["--backend", backend, "--max-new-tokens", "16", "--log-dir", "/tmp/allinone-overload-logs"],
                             env={"ALLINONE_ADMIN_TOKEN": TOKEN})
    hogs: list[subprocess.Popen] = []
    traffic = ClassTraffic(url, students).start()
    try:
        time.sleep(10)  # every student past their first click
        quiet_start = time.monotonic()
        time.sleep(seconds)
        before = sum(recoveries(url).values())
        hog_start = time.monotonic()
        hogs = [subprocess.Popen([sys.executable, "-c", code]) for code in (BUSY_LOOP, BUSY_LOOP, MATMUL_LOOP,
                                                                             MATMUL_LOOP)]
        time.sleep(seconds)
        hog_end = time.monotonic()
        after = sum(recoveries(url).values())
    finally:
        for hog in hogs:
            hog.kill()
        traffic.stop()
        proc.terminate()
        proc.wait(30)
    return {"backend": backend, "students": students, "seconds": seconds, "recoveries_under_hog": after - before,
            "quiet": window(traffic, quiet_start, hog_start), "hog": window(traffic, hog_start, hog_end)}


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
