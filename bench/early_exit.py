"""Early exit: what a head on layer k saves, per backend, in one run.

    .venv/bin/python bench/early_exit.py [--runs 30] [--backends llamacpp,torch]

For each backend in turn (in this process, the default model, ``--precision
auto`` for torch): the sentiment task's head (its layer, from the head file),
then one short sentence's latency in ``prompt`` mode (the whole model and the
label scores) and in ``head`` mode (the first k blocks), the two calls
interleaved so that drift hits both alike, and the throughput of a batch of
16 mixed texts in each mode. Ratios within a backend are what to compare
across machines; the CPU heads the output.
"""

from __future__ import annotations

import argparse
import time

from common import cpu_flags_line, header, load_engine, median, percentile
from sentiment_latency import BATCH, SHORT


def measure(backend: str, runs: int) -> dict:
    engine = load_engine(backend=backend, request_timeout_s=600)
    try:
        info = engine.backend.info
        state = engine.backend.classifier.head_states().get("sentiment")
        print(f"{backend}: {info.label}, {info.precision}; head: {state.detail if state else 'none'}", flush=True)
        for mode in ("prompt", "head"):  # warm both paths (the early-exit context's first graph)
            engine.classify("sentiment", BATCH, mode)
        times: dict[str, list[float]] = {"prompt": [], "head": []}
        for _ in range(runs):
            for mode in times:
                started = time.perf_counter()
                engine.classify("sentiment", [SHORT], mode)
                times[mode].append(time.perf_counter() - started)
        result = {"backend": backend, "precision": info.precision}
        for mode, values in times.items():
            started = time.perf_counter()
            for _ in range(3):
                engine.classify("sentiment", BATCH, mode)
            result[mode] = {"p50_s": round(median(values), 4), "p95_s": round(percentile(values, 95), 4),
                            "batch16_texts_per_s": round(3 * len(BATCH) / (time.perf_counter() - started), 1)}
            print(f"  {mode}: {result[mode]}", flush=True)
        return result
    finally:
        engine.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--backends", default="llamacpp,torch")
    args = parser.parse_args()
    header("early exit: prompt (whole model) against the head on layer k")
    print(cpu_flags_line(), flush=True)
    results = [measure(backend, args.runs) for backend in args.backends.split(",")]
    print()
    print("| backend | format | prompt p50 | head p50 | head/prompt | prompt batch-16 texts/s | head batch-16 texts/s |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        p, h = r["prompt"], r["head"]
        print(f"| {r['backend']} | {r['precision']} | {p['p50_s']:.3f} s | {h['p50_s']:.3f} s "
              f"| {h['p50_s'] / p['p50_s']:.2f} | {p['batch16_texts_per_s']} | {h['batch16_texts_per_s']} |")


if __name__ == "__main__":
    main()
