"""fp32 vs bf16 on this machine: classification latency and decode speed.

    .venv/bin/python bench/dtype_speed.py

The loader's ``dtype=auto`` choice (fp32 on CPU) rests on this measurement.
"""

from __future__ import annotations

import gc
import time

from common import header, load_engine, median

SHORT = "The food was great but the service was a bit slow."


def main() -> None:
    header("dtype speed")
    for dtype in ("float32", "bfloat16"):
        engine = load_engine(dtype=dtype, max_new_tokens=32)
        engine.classify("sentiment", [SHORT])
        times = []
        for _ in range(10):
            started = time.perf_counter()
            engine.classify("sentiment", [SHORT])
            times.append(time.perf_counter() - started)
        started = time.perf_counter()
        last = engine.chat("chat", "Write a short paragraph about the sea.")
        elapsed = time.perf_counter() - started
        print(f"{dtype}: sentiment p50 {median(times):.3f} s; chat {last.tokens} tokens in {elapsed:.1f} s "
              f"= {last.tokens / elapsed:.2f} tokens/s (incl. prefill)", flush=True)
        engine.close()
        del engine
        gc.collect()


if __name__ == "__main__":
    main()
