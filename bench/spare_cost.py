"""What the warm spare worker (``--spare-worker``) costs: memory, idle CPU, and the time to park it.

    .venv/bin/python bench/spare_cost.py [--backends torch,llamacpp] [--idle-s 30]

For each backend: ``python app.py --spare-worker`` on the default model, no
traffic. Reports the serving worker's and the spare's resident memory (RSS,
and USS: the pages only that process holds; llama.cpp maps the GGUF, which
two workers share in the page cache), the spare's CPU use over ``--idle-s``
seconds of parking, the time from start to ``/ready`` 200 and until the spare
is parked.
"""

from __future__ import annotations

import argparse
import json
import time

import httpx
import psutil

from common import cpu_flags_line, header, running_app


def measure(backend: str, idle_s: float) -> dict:
    app_args = ["--backend", backend, "--spare-worker", "--log-dir", "/tmp/allinone-spare-logs"]
    with running_app(app_args) as (_, url, ready_s):
        started = time.monotonic()
        while (body := httpx.get(url + "/ready", timeout=5).json())["spare_pid"] is None:
            time.sleep(0.2)
        parked_s = ready_s + time.monotonic() - started
        time.sleep(5)  # past the spare's warm-up
        serving, spare = psutil.Process(body["worker_pid"]), psutil.Process(body["spare_pid"])
        cpu_before = sum(spare.cpu_times()[:2])
        time.sleep(idle_s)
        idle_cpu = (sum(spare.cpu_times()[:2]) - cpu_before) / idle_s
        memory = {name: {"rss_mib": round(p.memory_full_info().rss / 2**20), "uss_mib": round(p.memory_full_info().uss / 2**20)}
                  for name, p in (("serving", serving), ("spare", spare))}
        return {"backend": body["backend"]["name"], "ready_s": round(ready_s, 1), "spare_parked_s": round(parked_s, 1),
                "spare_idle_cpu_share_of_a_core": round(idle_cpu, 4), **memory}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default="torch,llamacpp")
    parser.add_argument("--idle-s", type=float, default=30)
    args = parser.parse_args()
    header("the warm spare worker's cost")
    print(cpu_flags_line(), flush=True)
    for backend in args.backends.split(","):
        print(json.dumps(measure(backend, args.idle_s)), flush=True)


if __name__ == "__main__":
    main()
