"""Failover of a primary/standby pair behind HAProxy, with the shipped settings.

    .venv/bin/python bench/failover.py [--runs 3] [--clients 2] [APP OPTIONS, e.g. --model-dir DIR]

Starts ``python -m ops.ha``'s demo (two instances of the default model, each
under supervisord, behind HAProxy with ops/deploy/haproxy.cfg), then, per
run, keeps clients sending sentiment requests through HAProxy, SIGKILLs the
primary's app and reports: the failover gap (kill -> first answer to a
request sent after the kill), the supervisor's restart (kill -> the new
primary's /ready 200), the failback (kill -> HAProxy sends new clients to
the primary again), and the failed requests (in flight at the kill, or sent
after it; the target is none of the latter).
"""

from __future__ import annotations

import argparse
import json
import statistics

from common import REPO, free_port, header

from ops.tools.ha import HaDemo
from ops.tools.ha_drill import failover_drill


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--clients", type=int, default=2)
    args, app_args = parser.parse_known_args()
    header("Failover: SIGKILL of the primary behind HAProxy")
    demo = HaDemo(free_port(), app_args or ["--model-dir", str(REPO / "models" / "current")])
    try:
        info = demo.start(timeout=600)
        print(f"primary :{info['primary']['port']}, standby :{info['standby']['port']}, "
              f"HAProxy :{info['haproxy']['port']}", flush=True)
        print("| run | gap | restart (to /ready 200) | failback | requests | failed in flight | failed after kill |")
        print("|---|---|---|---|---|---|---|")
        results = []
        for run in range(1, args.runs + 1):
            info["primary"]["pid"] = demo.instances["primary"].app_pid()
            r = failover_drill(info, clients=args.clients, timeout=600)
            results.append(r)
            print(f"| {run} | {r['gap_s']:.2f} s | {r['restart_s']:.1f} s | {r['failback_s']:.1f} s | {r['requests']} "
                  f"| {r['failed_in_flight']} | {r['failed_after_kill']} |", flush=True)
            for failure in r["failures"]:
                print(f"  failure: {json.dumps(failure)}")
        print(f"median gap {statistics.median(r['gap_s'] for r in results):.2f} s, "
              f"median restart {statistics.median(r['restart_s'] for r in results):.1f} s")
    finally:
        demo.stop()


if __name__ == "__main__":
    main()
