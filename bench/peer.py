"""Our two backends side by side, with plain llama.cpp as the yardstick, in one run.

    .venv/bin/python bench/peer.py [--rows N] [--chat-questions N] [--cold-runs 3] [--no-fp32]

The default model's version must hold its GGUF (``python -m ops.models
install-default`` keeps it). Each engine runs in its own process, one after
another (``bench/precision.py --one``: its peak RSS is its own):

- **plain llama.cpp**: llama.cpp's own greedy loop, as its ``examples/simple``
  does it (``llama_batch_get_one``, ``llama_decode`` and a greedy
  ``llama_sampler``, all in C but the loop), on the version's GGUF through the
  same prebuilt library (``engine.backends.llama_capi``), with llama.cpp's
  default context and the same threads: the decode speed our llamacpp backend
  is held to (at least 90 % of it; the overhead budget);
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
import ctypes
import json
import sys
import time

from common import REPO, cpu_flags_line, header, median
from precision import DECODE_PROMPT, DECODE_TOKENS, FILES, gate, json_child, measure_in_child

DECODE_RUNS = 3


def plain_llama_decode(gguf: str, threads: int) -> dict:
    """Plain llama.cpp (module doc): tokens/s of one greedy stream, first token to last, median of
    ``DECODE_RUNS``; in this process (run as ``--plain``)."""
    from engine.backends.llama_capi import load_api
    from engine.tasks import load_tasks

    api = load_api()
    lib = api.library
    lib.llama_batch_get_one.restype, lib.llama_batch_get_one.argtypes = api.llama_batch, [
        ctypes.POINTER(api.llama_token), ctypes.c_int32]
    lib.llama_sampler_init_greedy.restype, lib.llama_sampler_init_greedy.argtypes = ctypes.c_void_p, []
    lib.llama_sampler_sample.restype = api.llama_token
    lib.llama_sampler_sample.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int32]
    lib.llama_sampler_free.argtypes = [ctypes.c_void_p]
    api.llama_backend_init()
    model = api.llama_model_load_from_file(gguf.encode(), api.llama_model_default_params())
    params = api.llama_context_default_params()
    params.n_ctx, params.n_threads, params.n_threads_batch = 2048, threads, threads
    vocab = api.llama_model_get_vocab(model)
    system = load_tasks().get("chat").system_prompt
    prompt = (f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{DECODE_PROMPT} (0)<|im_end|>\n"
              "<|im_start|>assistant\n").encode()
    ids = (api.llama_token * (len(prompt) + 8))()
    count = api.llama_tokenize(vocab, prompt, len(prompt), ids, len(ids), False, True)
    rates = []
    for _ in range(DECODE_RUNS):
        ctx = api.llama_init_from_model(model, params)
        sampler = lib.llama_sampler_init_greedy()
        batch = lib.llama_batch_get_one(ids, count)
        token = api.llama_token()
        first, produced = None, 0
        while produced < DECODE_TOKENS:
            if api.llama_decode(ctx, batch) != 0:
                raise SystemExit("plain llama.cpp: llama_decode failed")
            token.value = lib.llama_sampler_sample(sampler, ctx, -1)
            first = first or time.perf_counter()
            produced += 1
            if api.llama_vocab_is_eog(vocab, token.value):
                break
            batch = lib.llama_batch_get_one(ctypes.byref(token), 1)
        rates.append((produced - 1) / (time.perf_counter() - first))
        lib.llama_sampler_free(sampler)
        api.llama_free(ctx)
    api.llama_model_free(model)
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
        ("8 chats >= 2x one chat", ours["decode_8_tok_s"] / ours["decode_1_tok_s"], 2.0, ">="),
        ("sentiment p50 <= 0.08 s", ours["sentiment_p50_s"], 0.08, "<="),
        ("cold start to /ready < 6 s", cold.get("llamacpp", {}).get("ready_s", float("nan")), 6.0, "<"),
        ("worker RSS <= 0.9 GiB (922 MiB)", cold.get("llamacpp", {}).get("worker_peak_mib", float("nan")), 922, "<="),
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
    from engine.backends.llama_capi import load_api
    from engine.loader import gguf_file

    library = load_api().path  # first: nothing else is loaded when it is missing

    gguf = gguf_file((REPO / "models" / "current").resolve())
    if gguf is None:
        sys.exit("The current model version has no GGUF: reinstall it with python -m ops.models install-default.")
    header("our backends, llamacpp and torch, with plain llama.cpp as the yardstick")
    print(cpu_flags_line())
    print(f"llama.cpp {library.name} ({library.parent.name}), {threads} threads; {DECODE_TOKENS} new tokens "
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
