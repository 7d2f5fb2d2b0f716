"""Cold start: process start -> ``/health`` 200 and -> ``/ready`` 200, on the installed default model.

    .venv/bin/python bench/cold_start.py [--runs 3] [--model-dir DIR] [--precisions auto,fp32]

Each run starts ``python app.py`` fresh (the web process; it starts the
model's worker process first thing, so Gradio's import and torch's overlap)
and prints both times, and the peak resident memory of the worker (the
process that holds the model; sampled every 0.1 s) up to ``/ready``. With
several precisions the runs alternate between them, so each comparison is
made in one run on the same machine; the median per precision is the figure
that counts.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

import httpx

from common import REPO, PeakRss, cpu_flags_line, free_port, header, median


def one_run(extra: list[str]) -> tuple[float, float, int]:
    """(seconds to /health 200, seconds to /ready 200, the worker's peak RSS in bytes until then)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, str(REPO / "app.py"), "--port", str(port),
                             "--log-dir", "/tmp/allinone-cold-logs", *extra], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    memory = PeakRss()
    memory.watch(proc)
    health = None
    try:
        while time.perf_counter() - started < 300:
            try:
                if health is None and httpx.get(url + "/health", timeout=1).status_code == 200:
                    health = time.perf_counter() - started
                if httpx.get(url + "/ready", timeout=1).status_code == 200:
                    return health, time.perf_counter() - started, memory.worker_peak
            except httpx.HTTPError:
                pass
            if proc.poll() is not None:
                raise SystemExit("the app exited")
            time.sleep(0.05)
        raise SystemExit("the app did not become ready in 300 s")
    finally:
        memory.stop()
        proc.terminate()
        proc.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--model-dir")
    parser.add_argument("--precisions", default="auto", help="comma-separated, e.g. fp32,int8 (default auto)")
    args = parser.parse_args()
    header("cold start")
    print(cpu_flags_line(), flush=True)
    extra = ["--model-dir", args.model_dir] if args.model_dir else []
    precisions = args.precisions.split(",")
    readies: dict[str, list[float]] = {p: [] for p in precisions}
    peaks: dict[str, list[int]] = {p: [] for p in precisions}
    for i in range(args.runs):
        for precision in precisions:
            health, ready, peak = one_run([*extra, "--precision", precision])
            readies[precision].append(ready)
            peaks[precision].append(peak)
            print(f"run {i + 1} {precision}: /health 200 after {health:.1f} s, /ready 200 after {ready:.1f} s, "
                  f"worker peak RSS {peak / 2**20:.0f} MiB", flush=True)
            time.sleep(2)
    for precision in precisions:
        times = readies[precision]
        print(f"{precision}: cold start to /ready 200: median {median(times):.1f} s over {args.runs} runs "
              f"(min {min(times):.1f}, max {max(times):.1f}); worker peak RSS median "
              f"{median(peaks[precision]) / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
