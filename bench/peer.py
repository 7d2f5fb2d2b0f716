"""Our two backends side by side, with plain llama.cpp as the yardstick, in one run.

    .venv/bin/python bench/peer.py [--rows N] [--chat-questions N] [--cold-runs 3] [--no-fp32]

Needs llama-cpp-python (``make llamacpp``); without it the script says so and
exits with status 2. The default model's version must hold its GGUF
(``python -m ops.models install-default`` keeps it).

Each engine runs in its own process, one after another (``bench/precision.py
--one``: its peak RSS is its own):

- **plain llama.cpp**: llama-cpp-python's ``Llama`` on the version's GGUF
  with the same threads, one greedy stream: the decode speed our llamacpp
  backend is held to (at least 90 % of it; the overhead budget);
- **ours, llamacpp** and **ours, torch** (``--precision auto``), and torch
  **fp32**, the reference of the accuracy gate (``--no-fp32`` leaves it out).

For each of ours: accuracy on every shared sentiment file, sentiment p50 (one
short sentence) and batch-16 throughput, decode tokens/s of 1 and 8
concurrent chats, the chat questions, load time and peak RSS. Then the app's
cold start on each backend (process start to ``/ready`` 200, median of
``--cold-runs``, alternating) with the worker's peak RSS, and the gate
(``precision.gate``: within 1 point of fp32 on every file, at most 2 chat
questions fewer). The date and the CPU head the output.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from common import REPO, cpu_flags_line, header, median
from precision import DECODE_PROMPT, DECODE_TOKENS, FILES, gate, json_child, measure_in_child

NOT_INSTALLED = """llama-cpp-python is not installed ({error}).

This benchmark compares our llamacpp backend with the torch one. Install the optional backend with

    make llamacpp

which builds llama.cpp from source once (a C++ compiler and cmake; about 10 minutes on
2 cores). Then run this script again."""
DECODE_RUNS = 3


def require_llama_cpp():
    """The llama_cpp module, or the explanation and exit status 2 (before any model is loaded)."""
    try:
        import llama_cpp
    except (ImportError, OSError, RuntimeError) as exc:  # RuntimeError: its shared library failed to load
        print(NOT_INSTALLED.format(error=exc), file=sys.stderr)
        sys.exit(2)
    return llama_cpp


def plain_llama_decode(gguf: str, threads: int) -> dict:
    """Plain llama.cpp (the high-level ``Llama``): tokens/s of one greedy stream, first token to last,
    median of ``DECODE_RUNS``; in this process (run as ``--plain``)."""
    import llama_cpp

    from engine.tasks import load_tasks

    llm = llama_cpp.Llama(model_path=gguf, n_ctx=2048, n_threads=threads, n_threads_batch=threads, verbose=False)
    messages = [{"role": "system", "content": load_tasks().get("chat").system_prompt},
                {"role": "user", "content": f"{DECODE_PROMPT} (0)"}]
    rates = []
    for _ in range(DECODE_RUNS):
        llm.reset()
        first, count = None, 0
        for _chunk in llm.create_chat_completion(messages=messages, max_tokens=DECODE_TOKENS, temperature=0,
                                                 repeat_penalty=1.0, stream=True):
            first = first or time.perf_counter()
            count += 1
        rates.append((count - 1) / (time.perf_counter() - first))
    return {"decode_1_tok_s": round(median(rates), 2), "threads": threads}


def cold_starts(runs: int) -> dict[str, dict]:
    """Per backend: median seconds to /ready 200 and the worker's largest peak RSS, runs alternating."""
    from cold_start import one_run

    seen: dict[str, list] = {"llamacpp": [], "torch": []}
    for _ in range(runs):
        for backend in seen:
            _, ready, worker_peak = one_run(["--backend", backend])
            seen[backend].append((ready, worker_peak))
            print(f"cold start {backend}: {ready:.1f} s, worker peak RSS {worker_peak / 2**20:.0f} MiB", flush=True)
    return {b: {"ready_s": round(median([r for r, _ in v]), 2), "worker_peak_mib": round(max(p for _, p in v) / 2**20)}
            for b, v in seen.items()}


def print_report(plain: dict, results: dict[str, dict], cold: dict[str, dict]) -> None:
    short = [f.replace("sentiment_", "").replace(".jsonl", "") for f in FILES]
    verdicts = gate(results)
    print()
    print("| engine | " + " | ".join(short) + " | sentiment p50 | batch-16 texts/s | decode 1 chat tok/s "
          "| decode 8 chats tok/s (x one) | chat questions | load (in process) | peak RSS (in process) "
          "| cold start to /ready | worker peak RSS | gate |")
    print("|---" * (len(short) + 11) + "|")
    print(f"| plain llama.cpp ({plain['threads']} threads) | " + " | ".join("" for _ in short)
          + f" | | | {plain['decode_1_tok_s']} | | | | | | | yardstick |")
    for name, r in results.items():
        start = cold.get("llamacpp" if name == "llamacpp" else "torch" if name == "auto" else "", {})
        print(f"| {name} ({r['format']}) | " + " | ".join(f"{r['accuracy'][f]:.3f}" for f in FILES)
              + f" | {r['sentiment_p50_s']:.3f} s | {r['batch16_texts_per_s']} | {r['decode_1_tok_s']} "
              f"| {r['decode_8_tok_s']} ({r['decode_8_tok_s'] / r['decode_1_tok_s']:.2f}x) "
              f"| {r['chat_right']}/{r['chat_asked']} | {r['load_s']} s | {r['peak_rss_mib']} MiB "
              f"| {start.get('ready_s', '-')} s | {start.get('worker_peak_mib', '-')} MiB | {verdicts[name]} |")
    ours = results.get("llamacpp")
    if ours is None:
        return
    print()
    print("The llamacpp backend's targets:")
    checks = [
        ("decode, one chat >= 90 % of plain llama.cpp", ours["decode_1_tok_s"] / plain["decode_1_tok_s"], 0.9, ">="),
        ("8 chats >= 3x one chat", ours["decode_8_tok_s"] / ours["decode_1_tok_s"], 3.0, ">="),
        ("sentiment p50 <= 0.08 s", ours["sentiment_p50_s"], 0.08, "<="),
        ("cold start to /ready <= 5 s", cold.get("llamacpp", {}).get("ready_s", float("nan")), 5.0, "<="),
        ("worker RSS <= 0.8 GiB (819 MiB)", cold.get("llamacpp", {}).get("worker_peak_mib", float("nan")), 819, "<="),
    ]
    for what, value, bound, op in checks:
        met = value >= bound if op == ">=" else value <= bound
        print(f"- {what}: {value:.3g} -> {'met' if met else 'NOT MET'}")
    print(f"- accuracy gate against torch fp32: {verdicts['llamacpp']}")
    if "auto" in results:
        torch = results["auto"]
        print(f"- against torch {torch['format']}: decode {ours['decode_1_tok_s'] / torch['decode_1_tok_s']:.2f}x, "
              f"8 chats {ours['decode_8_tok_s'] / torch['decode_8_tok_s']:.2f}x, "
              f"sentiment p50 {ours['sentiment_p50_s'] / torch['sentiment_p50_s']:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1000, help="rows per sentiment file (all: 1000)")
    parser.add_argument("--chat-questions", type=int, default=32)
    parser.add_argument("--cold-runs", type=int, default=3)
    parser.add_argument("--no-fp32", action="store_true", help="leave out torch fp32 (and so the gate)")
    parser.add_argument("--plain", help=argparse.SUPPRESS)  # the child: plain llama.cpp on this GGUF
    args = parser.parse_args()
    from engine.backends.llamacpp_runtime import cpu_threads

    threads = cpu_threads()  # the backend's own rule, so plain llama.cpp gets the same threads
    if args.plain:
        print(json.dumps(plain_llama_decode(args.plain, threads)), flush=True)
        return
    llama_cpp = require_llama_cpp()  # first: nothing is loaded when it is missing
    from engine.loader import gguf_file

    gguf = gguf_file((REPO / "models" / "current").resolve())
    if gguf is None:
        sys.exit("The current model version has no GGUF: reinstall it with python -m ops.models install-default.")
    header("our backends, llamacpp and torch, with plain llama.cpp as the yardstick")
    print(cpu_flags_line())
    print(f"llama-cpp-python {getattr(llama_cpp, '__version__', '?')}, {threads} threads; {DECODE_TOKENS} new tokens "
          f"per chat, greedy; {args.rows} rows per sentiment file, {args.chat_questions} chat questions", flush=True)
    plain = json_child([__file__, "--plain", str(gguf)])
    print(f"plain llama.cpp: {plain}", flush=True)
    results = {}
    for name in ["llamacpp", "auto"] + ([] if args.no_fp32 else ["fp32"]):
        result = measure_in_child(name, args.rows, args.chat_questions)
        if result is not None:
            results[name] = result
            print(f"{name}: {json.dumps(result)}", flush=True)
    cold = cold_starts(args.cold_runs)
    if plain is not None:
        print_report(plain, results, cold)


if __name__ == "__main__":
    main()
