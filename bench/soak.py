"""Soak: a simulated class for half an hour, with a fault every few minutes in rotation.

    .venv/bin/python bench/soak.py [--minutes 30] [--every 180] [--students 20] [--spare-worker] [--store DIR]

Builds a store under ``--store`` (once, as ``bench/chaos.py`` does: the
default model as good versions ``a``, ``b`` and ``d`` and a bad release
``c`` that loads and answers wrongly), serves ``b`` with ``--fault-injection``
and the default watchdog, and keeps ``--students`` users working as a class
does (``bench/class_load.py``'s mix: five sentiment requests and one chat
turn each, in a per-student order, reading each answer for 1-5 s). Every
``--every`` seconds the next fault of the rotation hits: SIGKILL and SIGSTOP
of the worker, the hang and nan-weights drills, one weight file of the serving
version overwritten, a hot swap to another good version, a swap to the bad one
(rolled back by the app), and a flood of admin requests with a wrong token.

Per fault: detection time, time to ready, requests failed (in flight, after),
wrong answers, and sentiment p95 in the minute before and from the fault until
30 s after it was over. For the whole run: the web and worker processes' memory
at the first and the last fault, the worker processes, the web process's open
file descriptors, and whether any state stuck. The table goes into
``docs/reliability.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import threading
import time
from pathlib import Path

import httpx
import psutil

from chaos import TOKEN, Traffic, build_store, damage_store, memory, one_fault, recoveries, wait_spare
from common import REPO, header, percentile, running_app, store_cli

ROTATION = ("sigkill", "sigstop", "hang", "nan-weights", "overwrite", "swap-good", "swap-bad", "token-flood")
THINK_S = (1.0, 5.0)  # a student reads the answer before the next click: this long, evenly spread


class ClassTraffic(Traffic):
    """``Traffic`` as a class works: each student repeats five sentiment requests and one chat turn."""

    def _user(self, i: int, chats: bool) -> None:
        from gradio_client import Client

        client = Client(self.url, verbose=False)
        plan = ["sentiment"] * 5
        plan.insert(i % 6, "chat")
        n = i
        while not self._stop.is_set():
            for kind in plan:
                if self._stop.is_set():
                    return
                self._attempt(client, kind, n)
                n += 1
                time.sleep(random.uniform(*THINK_S))


def sentiment_p95(traffic: Traffic, start: float, end: float) -> float | None:
    with traffic._lock:
        times = [a.ended - a.started for a in traffic.attempts
                 if a.kind == "sentiment" and a.ok and start <= a.started <= end]
    return round(percentile(times, 95), 2) if times else None


def serving(url: str) -> str:
    return httpx.get(url + "/ready", timeout=5).json()["model"]


def intact(store: Path, key: str) -> bool:
    from ops.store.versions import ModelStore

    return not ModelStore(store).verify(key)


def swap(url: str, store: Path, traffic: Traffic, target: str, expect: str) -> dict:
    """``activate target``; follow until ``/ready`` names ``expect`` (the target, or the version a bad
    target is rolled back to) and the link points there again."""
    from ops.store.versions import ModelStore

    t0 = time.monotonic()
    before = recoveries(url)
    activate_s = store_cli(store, "activate", target, "--force")
    ready = None
    while time.monotonic() - t0 < 300:
        if serving(url) == expect and ModelStore(store).current() == expect:
            ready = time.monotonic()
            break
        time.sleep(0.2)
    time.sleep(3)
    attempts, samples = traffic.since(t0)
    after = recoveries(url)
    return {"detected_by": "rollback" if target != expect else "switch",
            "detected_s": round(activate_s, 1),  # the command (it hashes the version) ends: the link moved
            "ready_s": None if ready is None else round(ready - t0, 1), "t0": t0,
            "failed_in_flight": sum(not a.ok and a.started < t0 for a in attempts),
            "failed_after": sum(not a.ok and a.started >= t0 for a in attempts),
            "wrong_answers": sum(a.wrong for a in attempts),
            "ever_served": sorted({s[1] for s in samples}),
            "recoveries": sum(after.values()) - sum(before.values())}


def token_flood(url: str, traffic: Traffic, count: int = 400) -> dict:
    t0 = time.monotonic()
    codes: dict[int, int] = {}
    lock = threading.Lock()

    def hammer(share: int) -> None:
        with httpx.Client(base_url=url, timeout=10) as client:
            for _ in range(share):
                code = client.post("/admin/reload", headers={"Authorization": "Bearer wrong"}).status_code
                with lock:
                    codes[code] = codes.get(code, 0) + 1

    threads = [threading.Thread(target=hammer, args=(count // 8,)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    time.sleep(3)
    attempts, _ = traffic.since(t0)
    return {"detected_by": f"refused: {codes}", "detected_s": "-", "ready_s": "-", "t0": t0,
            "failed_in_flight": 0, "failed_after": sum(not a.ok for a in attempts),
            "wrong_answers": sum(a.wrong for a in attempts)}


def apply(kind: str, url: str, proc, traffic: Traffic, store: Path, name: str) -> dict:
    if kind in ("sigkill", "sigstop", "hang", "nan-weights"):
        row = one_fault(kind, url, proc.pid, traffic)
        return {**row, "failed_after": row["failed_before_detection"] + row["failed_after_detection"]}
    if kind == "overwrite":
        row = damage_store("overwrite", url, proc.pid, traffic, store)
        return {**row, "failed_in_flight": 0, "failed_after": row["failed_after_detection"]}
    current = serving(url)
    if kind == "swap-good":
        target = next((f"{name}@{v}" for v in ("a", "b", "d") if f"{name}@{v}" != current
                       and intact(store, f"{name}@{v}")), None)
        if target is None:
            return {"detected_by": "skipped: no other intact version", "t0": time.monotonic()}
        return swap(url, store, traffic, target, target)
    if kind == "swap-bad":
        return swap(url, store, traffic, f"{name}@c", current)
    return token_flood(url, traffic)


def worker_processes(web_pid: int) -> int:
    return sum("engine.worker" in " ".join(child.cmdline()) for child in psutil.Process(web_pid).children(recursive=True))


def table(rows: list[dict]) -> str:
    lines = ["| # | fault | detected by | detected after | ready after | failed in flight | failed after | "
             "wrong answers | sentiment p95 before → around |", "|---|---|---|---|---|---|---|---|---|"]
    for n, r in enumerate(rows, 1):
        lines.append(f"| {n} | {r['fault']} | {r.get('detected_by', '-')} | {r.get('detected_s', '-')} s | "
                     f"{r.get('ready_s', '-')} s | {r.get('failed_in_flight', '-')} | {r.get('failed_after', '-')} | "
                     f"{r.get('wrong_answers', '-')} | {r.get('p95_before')} → {r.get('p95_around')} s |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--every", type=float, default=180, help="seconds between faults")
    parser.add_argument("--students", type=int, default=20)
    parser.add_argument("--spare-worker", action="store_true")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--source", type=Path, default=REPO / "models" / "current", help="the model to copy")
    parser.add_argument("--store", type=Path, default=Path("/tmp/allinone-soak-store"))
    args = parser.parse_args()
    name = build_store(args.source, args.store, versions=("a", "d", "b"))  # b current
    store_cli(args.store, "verify")  # recorded: activate hashes nothing that has not changed since
    header(f"soak: {args.students} students, {args.minutes:.0f} min, a fault every {args.every:.0f} s"
           + (", warm spare worker" if args.spare_worker else ""))
    app_args = ["--models-root", str(args.store), "--log-dir", "/tmp/allinone-soak-logs", "--fault-injection",
                "--max-new-tokens", "16", "--backend", args.backend] + (["--spare-worker"] if args.spare_worker else [])
    with running_app(app_args, env={"ALLINONE_ADMIN_TOKEN": TOKEN}) as (proc, url, cold):
        print(f"cold start: {cold:.1f} s; {json.dumps(httpx.get(url + '/ready').json()['backend'])}", flush=True)
        web = psutil.Process(proc.pid)
        traffic = ClassTraffic(url, args.students).start()
        rows, resources = [], []
        started = time.monotonic()
        try:
            for n in range(int(args.minutes * 60 // args.every)):
                time.sleep(max(0.0, started + (n + 1) * args.every - time.monotonic() - 3))
                kind = ROTATION[n % len(ROTATION)]
                if args.spare_worker:
                    wait_spare(url)
                resources.append((memory(url), web.num_fds(), worker_processes(proc.pid)))
                row = {"fault": kind, **apply(kind, url, proc, traffic, args.store, name)}
                row["p95_before"] = sentiment_p95(traffic, row["t0"] - 60, row["t0"])
                time.sleep(30)
                row["p95_around"] = sentiment_p95(traffic, row["t0"], time.monotonic())
                rows.append(row)
                print(json.dumps({k: v for k, v in row.items() if k != "t0"}, ensure_ascii=False), flush=True)
            time.sleep(10)
            resources.append((memory(url), web.num_fds(), worker_processes(proc.pid)))
            final = httpx.get(url + "/ready", timeout=5).json()
        finally:
            traffic.stop()
    (web0, worker0), fds0, _ = resources[0]
    (web1, worker1), fds1, _ = resources[-1]
    summary = {
        "requests": len(traffic.attempts), "failed": sum(not a.ok for a in traffic.attempts),
        "wrong_answers": sum(a.wrong for a in traffic.attempts),
        "web_rss_mib": [round(web0 / 2**20), round(web1 / 2**20)],
        "worker_rss_mib": [round(worker0 / 2**20), round(worker1 / 2**20)],
        "rss_growth": round((web1 + worker1) / (web0 + worker0) - 1, 3),
        "open_fds": [r[1] for r in resources], "worker_processes": [r[2] for r in resources],
        "final_state": final["state"], "final_model": final["model"], "degraded": final.get("degraded"),
        "spare_pid": final.get("spare_pid"), "cpu": os.popen("lscpu | grep 'Model name'").read().split(":")[-1].strip(),
    }
    print(table(rows))
    print(json.dumps(summary, ensure_ascii=False))


if __name__ == "__main__":
    main()
