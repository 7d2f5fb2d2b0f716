"""Cold start: process start -> ``/health`` 200 and -> ``/ready`` 200, on the installed default model.

    .venv/bin/python bench/cold_start.py [--runs 3] [--model-dir DIR]

Each run starts ``python app.py`` fresh (the web process; it starts the
model's worker process first thing, so Gradio's import and torch's overlap)
and prints both times; the median of the runs is the figure that counts.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

import httpx

from common import REPO, free_port, header, median


def one_run(extra: list[str]) -> tuple[float, float]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, str(REPO / "app.py"), "--port", str(port),
                             "--log-dir", "/tmp/allinone-cold-logs", *extra], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    health = None
    try:
        while time.perf_counter() - started < 300:
            try:
                if health is None and httpx.get(url + "/health", timeout=1).status_code == 200:
                    health = time.perf_counter() - started
                if httpx.get(url + "/ready", timeout=1).status_code == 200:
                    return health, time.perf_counter() - started
            except httpx.HTTPError:
                pass
            if proc.poll() is not None:
                raise SystemExit("the app exited")
            time.sleep(0.05)
        raise SystemExit("the app did not become ready in 300 s")
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--model-dir")
    args = parser.parse_args()
    header("cold start")
    extra = ["--model-dir", args.model_dir] if args.model_dir else []
    readies = []
    for i in range(args.runs):
        health, ready = one_run(extra)
        readies.append(ready)
        print(f"run {i + 1}: /health 200 after {health:.1f} s, /ready 200 after {ready:.1f} s", flush=True)
        time.sleep(2)
    print(f"cold start to /ready 200: median {median(readies):.1f} s over {args.runs} runs "
          f"(min {min(readies):.1f}, max {max(readies):.1f})")


if __name__ == "__main__":
    main()
