"""Two models side by side on this machine: decode speed, cold start, memory and a class of 20.

    python bench/model_compare.py [--models current,qwen2.5-coder-1.5b-instruct@0.2.0] [--backends auto,llamacpp]
                                  [--skip-class]

A model is a folder under ``models/``. Every figure comes from one run with
the models interleaved, so they are compared as ratios on the same machine:
1. decode: one chat at a time (tokens/s after the first token), both engines
   loaded in this process, asked in turn;
2. cold start: ``python app.py --model-dir ...`` to ``/ready`` 200, with the
   worker's peak RSS, alternating between the models;
3. the class of 20 (``bench/class_load.py``), one model after the other.
Accuracy lives in ``bench/head_features.py`` / ``head_layers.py``, chat answers in ``bench/chat_quality.py``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from class_load import CHAT_PROMPTS, simulate_class, timed_chat
from cold_start import one_run
from common import REPO, cpu_flags_line, header, load_engine, median

NEW_TOKENS = 64


def decode_rates(models: list[Path], backend: str, rounds: int) -> dict[str, list[float]]:
    """Each model's single-chat decode rates (tokens/s after the first token), asked in turn."""
    from engine.types import GenerateOptions

    engines = {m.name: load_engine(m, backend=backend, max_new_tokens=NEW_TOKENS, request_timeout_s=600)
               for m in models}
    options = GenerateOptions(max_new_tokens=NEW_TOKENS)
    rates: dict[str, list[float]] = {name: [] for name in engines}
    try:
        for name, engine in engines.items():
            info = engine.backend.info
            print(f"{name}: {info.label} on {info.backend} ({info.precision})", flush=True)
            list(engine.generate("chat", "Warm up.", options=options))
        for r in range(rounds):
            for name, engine in engines.items():
                first, last, tokens = timed_chat(engine, CHAT_PROMPTS[r % len(CHAT_PROMPTS)], options)
                rate = (tokens - 1) / (last - first)
                rates[name].append(rate)
                print(f"  decode round {r + 1}, {name}: {tokens} tokens, {rate:.1f} tokens/s", flush=True)
    finally:
        for engine in engines.values():
            engine.close()
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="current,qwen2.5-coder-1.5b-instruct@0.2.0",
                        help="folders under models/, comma-separated")
    parser.add_argument("--backends", default="auto,llamacpp",
                        help="the app's --backend for each model's class and cold start (decode: llamacpp for all)")
    parser.add_argument("--rounds", type=int, default=4, help="decode chats per model")
    parser.add_argument("--starts", type=int, default=2, help="cold starts per model")
    parser.add_argument("--skip-class", action="store_true")
    args = parser.parse_args()
    header("model comparison")
    print(cpu_flags_line(), flush=True)
    models = [REPO / "models" / name for name in args.models.split(",")]
    backends = dict(zip((m.name for m in models), args.backends.split(",")))
    # Decode on llama.cpp for every model: the one runtime both can use (the 1.5B has no torch copy).
    rates = decode_rates(models, "llamacpp", args.rounds)
    starts: dict[str, list[tuple[float, int]]] = {m.name: [] for m in models}
    for _ in range(args.starts):
        for model in models:
            _, ready, peak = one_run(["--model-dir", str(model), "--backend", backends[model.name]])
            starts[model.name].append((ready, peak))
            print(f"  cold start {model.name} ({backends[model.name]}): /ready after {ready:.1f} s, "
                  f"worker peak RSS {peak / 2**20:.0f} MiB", flush=True)
            time.sleep(2)
    classes = {}
    if not args.skip_class:
        for model in models:
            print(f"class of 20 on {model.name} ({backends[model.name]}):", flush=True)
            classes[model.name] = simulate_class(20, 48, backends[model.name], model)
    print("\n| model | app backend | decode tokens/s (median, llama.cpp) | cold start to /ready (median) | "
          "worker peak RSS | class: sentiment p50 / p95 | chat TTFT p50 / p95 | chat tokens/s | errors |")
    print("|---|---|---|---|---|---|---|---|---|")
    for model in models:
        name = model.name
        c = classes.get(name, {})
        print(f"| {name} | {backends[name]} | {median(rates[name]):.1f} | "
              f"{median([s[0] for s in starts[name]]):.1f} s | "
              f"{median([s[1] for s in starts[name]]) / 2**20:.0f} MiB | "
              f"{c.get('sentiment_p50_s')} / {c.get('sentiment_p95_s')} s | "
              f"{c.get('chat_ttft_p50_s')} / {c.get('chat_ttft_p95_s')} s | {c.get('chat_tokens_per_s')} | "
              f"{json.dumps(c.get('errors', {}), ensure_ascii=False)} |")
    first, *others = models
    for other in others:
        print(f"decode {other.name} / {first.name}: {median(rates[other.name]) / median(rates[first.name]):.2f}x")


if __name__ == "__main__":
    main()
