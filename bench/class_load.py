"""Classroom load: a simulated class through the real app, and batched decode vs one stream.

    .venv/bin/python bench/class_load.py [--students 20] [--backend auto] [--model-dir DIR] [--skip-class]
                                         [--skip-decode]

1. Decode scaling (in process, same run, same engine): the single-stream
   decode rate, then 8 chats at once; prints the aggregate rate and the ratio
   (the goal is at least 4x).
2. The class (through ``python app.py`` and ``gradio_client``, default model):
   N students at once, each with its own client session, sends 5 sentiment
   requests and one short chat turn (in a per-student order, so sentiment
   requests overlap running chats). Reports sentiment p50/p95, chat time to
   first token p95, total chat tokens/s, errors by kind and the server's peak
   RSS. Goals: sentiment p95 under 3 s, every chat answered, no errors except
   a clear busy message.
"""

from __future__ import annotations

import argparse
import collections
import json
import threading
import time
from pathlib import Path

import psutil

from common import DATA, REPO, PeakRss, header, load_engine, median, percentile, running_app

CHAT_PROMPTS = [
    "Write a short story about a robot who learns to paint.",
    "用几句话介绍一下长城的历史。",
    "Explain how a rainbow forms, step by step.",
    "Give me five ideas for a school science fair project.",
    "Describe your favourite season and why.",
    "请写一首关于春天的小诗。",
    "What are the benefits of reading books every day?",
    "Explain photosynthesis to a ten-year-old.",
]


def timed_chat(engine, prompt: str, options) -> tuple[float, float, int]:
    """One chat on an in-process engine: (first token time, last token time, tokens), perf_counter seconds."""
    first = last = update = None
    for update in engine.generate("chat", prompt, options=options):
        last = time.perf_counter()
        first = first or last
    return first, last, update.tokens


def decode_scaling(new_tokens: int = 48, widths: tuple[int, ...] = (8, 16), backend: str = "auto",
                   model_dir=None) -> dict:
    """Tokens/s of one chat alone vs ``width`` chats at once, excluding each chat's time to first token."""
    engine = load_engine(model_dir, backend=backend, max_new_tokens=new_tokens, max_active_chats=max(widths),
                         request_timeout_s=600)
    print(f"backend: {engine.backend.info.backend} ({engine.backend.info.backend_reason}), "
          f"{engine.backend.info.precision}", flush=True)
    try:
        from engine.types import GenerateOptions

        options = GenerateOptions(max_new_tokens=new_tokens)

        def run(prompt: str) -> tuple[float, float, int]:
            return timed_chat(engine, prompt, options)

        run("Warm up.")
        alone = [run(p) for p in CHAT_PROMPTS[:2]]
        single = sum(tokens - 1 for _, _, tokens in alone) / sum(last - first for first, last, _ in alone)
        print(f"decode, one chat alone: {single:.2f} tokens/s")
        report = {"single": single}
        for width in widths:
            prompts = [CHAT_PROMPTS[i % len(CHAT_PROMPTS)] + ("" if i < len(CHAT_PROMPTS) else f" (#{i})")
                       for i in range(width)]
            results: list = [None] * width
            threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, run(prompts[i])))
                       for i in range(width)]
            started = time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            tokens = sum(r[2] for r in results)
            aggregate = tokens / (max(r[1] for r in results) - min(r[0] for r in results))
            overall = tokens / (max(r[1] for r in results) - started)
            print(f"decode, {width} chats at once: {aggregate:.2f} tokens/s in total (first to last token), "
                  f"{overall:.2f} tokens/s including prefills; ratio {aggregate / single:.2f}x")
            report[width] = aggregate
        return report
    finally:
        engine.close()


def load_texts(n: int) -> list[str]:
    texts = []
    for name in ("sentiment_en_yelp.jsonl", "sentiment_zh_reviews.jsonl"):
        lines = (DATA / name).read_text(encoding="utf-8").splitlines()
        texts.append([json.loads(line)["text"] for line in lines[:n] if line.strip()])
    return [text for pair in zip(*texts) for text in pair]  # English and Chinese, alternating


def error_kind(exc: BaseException) -> str:
    text = str(exc).lower()
    if "busy" in text or "queue is full" in text:
        return "busy"
    if "took too long" in text or "timeout" in text:
        return "timeout"
    if "recovering" in text or "not ready" in text:
        return "unavailable"
    return f"other: {str(exc)[:80]}"


def simulate_class(students: int, new_tokens: int, backend: str = "auto", model_dir=None) -> dict:
    from gradio_client import Client
    from transformers import AutoTokenizer

    rss = PeakRss()
    with running_app(["--max-new-tokens", str(new_tokens), "--log-dir", "/tmp/allinone-bench-logs",
                      "--backend", backend, *(["--model-dir", str(model_dir)] if model_dir else [])],
                     on_start=rss.watch) as (proc, url, _):
        import httpx

        ready = httpx.get(url + "/ready").json()
        print(f"the app serves on {ready['backend']['name']} ({ready['backend']['reason']}), "
              f"{ready['precision']['format']}", flush=True)
        # The default model's tokenizer counts the replies of any Qwen2.5 model (one vocabulary), GGUF-only too.
        tokenizer = AutoTokenizer.from_pretrained(REPO / "models" / "current")
        texts = load_texts(students * 5)
        clients = [Client(url, verbose=False) for _ in range(students)]  # one session each, made up front
        sentiment, ttft, chat_tokens, errors = [], [], [], collections.Counter()
        chat_window = [float("inf"), 0.0]
        lock = threading.Lock()
        barrier = threading.Barrier(students)

        def student(i: int) -> None:
            client = clients[i]
            plan = ["sentiment"] * 5
            plan.insert(i % 6, "chat")  # students chat at different points of their session
            barrier.wait()
            for n, step in enumerate(plan):
                started = time.perf_counter()
                try:
                    if step == "sentiment":
                        client.predict(texts[i * 5 + min(n, 4)], api_name="/sentiment")
                        with lock:
                            sentiment.append(time.perf_counter() - started)
                        continue
                    first, text = None, ""
                    for text in client.submit(CHAT_PROMPTS[i % len(CHAT_PROMPTS)], api_name="/chat"):
                        if first is None and text:
                            first = time.perf_counter() - started
                    ended = time.perf_counter()
                    with lock:
                        ttft.append(first if first is not None else ended - started)
                        chat_tokens.append(len(tokenizer(text, add_special_tokens=False)["input_ids"]))
                        chat_window[0] = min(chat_window[0], started)
                        chat_window[1] = max(chat_window[1], ended)
                except Exception as exc:  # counted by kind; the goal is none but "busy"
                    with lock:
                        errors[f"{step}: {error_kind(exc)}"] += 1

        threads = [threading.Thread(target=student, args=(i,)) for i in range(students)]
        server, here = psutil.Process(proc.pid), psutil.Process()
        cpu_before = (sum(server.cpu_times()[:2]), sum(here.cpu_times()[:2]))
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - started
        server_cpu = sum(server.cpu_times()[:2]) - cpu_before[0]
        clients_cpu = sum(here.cpu_times()[:2]) - cpu_before[1]
        chat_rate = sum(chat_tokens) / (chat_window[1] - chat_window[0]) if chat_tokens else 0.0
        report = {
            "students": students,
            "wall_s": round(wall, 1),
            "sentiment_requests": len(sentiment),
            "sentiment_p50_s": round(median(sentiment), 2) if sentiment else None,
            "sentiment_p95_s": round(percentile(sentiment, 95), 2) if sentiment else None,
            "chats_answered": len(ttft),
            "chat_ttft_p50_s": round(median(ttft), 2) if ttft else None,
            "chat_ttft_p95_s": round(percentile(ttft, 95), 2) if ttft else None,
            "chat_tokens": sum(chat_tokens),
            "chat_tokens_per_s": round(chat_rate, 2),
            "errors": dict(errors),
            "server_peak_rss_gib": round(rss.peak / 2**30, 2),
            # Both run on the same cores here; in a classroom the clients are the students' machines.
            "server_cpu_s": round(server_cpu, 1),
            "clients_cpu_s": round(clients_cpu, 1),
        }
        print(f"class of {students}: " + json.dumps(report, ensure_ascii=False))
        return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--students", type=int, default=20)
    parser.add_argument("--chat-tokens", type=int, default=48, help="max new tokens of each chat turn")
    parser.add_argument("--skip-class", action="store_true")
    parser.add_argument("--skip-decode", action="store_true")
    parser.add_argument("--backend", default="auto", help="auto, torch or llamacpp (as the app's --backend)")
    parser.add_argument("--model-dir", type=Path, help="a model version (default: models/current)")
    args = parser.parse_args()
    header("classroom load")
    if not args.skip_decode:
        decode_scaling(args.chat_tokens, backend=args.backend, model_dir=args.model_dir)
    if not args.skip_class:
        simulate_class(args.students, args.chat_tokens, args.backend, args.model_dir)


if __name__ == "__main__":
    main()
