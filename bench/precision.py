"""Weight formats side by side, and the accuracy gate that ``--precision auto`` rests on.

    .venv/bin/python bench/precision.py [--formats fp32,bf16,int8,llamacpp] [--rows N] [--chat-questions N]

``llamacpp`` in ``--formats`` is the llamacpp backend on the version's GGUF
(its own Q4_K_M format): the same gate decides whether ``--backend auto``
may pick it (``engine.backends.LLAMACPP_GATE``).

Each format runs in its own process (so its peak RSS is its own), on the
in-process engine with the default model, one after another in the same
run. For each: accuracy on every sentiment file in ../shared/data, sentiment
p50 (one short sentence), batch-16 throughput, decode tokens/s for 1 and 8
concurrent chats, the chat questions answered (the first N rows of
bench/data/chat_questions.jsonl, scored by bench/chat_checks.py as
bench/chat_quality.py scores them), load time and peak RSS. Then the gate: a
format passes if its accuracy is within 1 point of fp32 on every file and it
answers at most 2 chat questions fewer than fp32. The CPU model and flags
head the output.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from chat_checks import load_questions, passes
from common import DATA, REPO, cpu_flags_line, header, load_engine, median

FILES = ["sentiment_en_sst2_train.jsonl", "sentiment_en_yelp.jsonl",
         "sentiment_zh_chnsenticorp_train.jsonl", "sentiment_zh_reviews.jsonl"]
SHORT = "The staff were friendly and the room was spotless."
DECODE_PROMPT = "Write a short story about a robot who learns to paint."
DECODE_TOKENS = 64
ACCURACY_POINTS = 1.0  # the gate: at most this many points below fp32 on any file
CHAT_QUESTIONS_SLACK = 2  # the gate: at most this many chat questions fewer than fp32


def decode_rate(engine, chats: int) -> float:
    """Tokens/s over all chats together, from the first token to the last (prefills excluded)."""
    from engine.types import GenerateOptions

    firsts, ends, counts = [], [], []
    lock = threading.Lock()

    def one(i: int) -> None:
        first = None
        tokens = 0
        for update in engine.generate("chat", f"{DECODE_PROMPT} ({i})",
                                      options=GenerateOptions(max_new_tokens=DECODE_TOKENS)):
            if first is None:
                first = time.perf_counter()
            tokens = update.tokens
        with lock:
            firsts.append(first)
            ends.append(time.perf_counter())
            counts.append(tokens - 1)

    with ThreadPoolExecutor(chats) as pool:
        list(pool.map(one, range(chats)))
    return sum(counts) / (max(ends) - max(firsts))


def chat_correct(engine, limit: int) -> tuple[int, int, list[str]]:
    """The first ``limit`` chat questions, scored as bench/chat_quality.py scores them."""
    from engine.types import GenerateOptions

    questions = load_questions()[:limit]

    def ask(q: dict) -> bool:
        reply = engine.chat("chat", q["q"], q.get("history"), options=GenerateOptions(max_new_tokens=48)).text
        return passes(q, reply)

    with ThreadPoolExecutor(8) as pool:
        right = list(pool.map(ask, questions))
    return sum(right), len(questions), [q["q"] for q, ok in zip(questions, right) if not ok]


def measure(precision: str, rows: int, chat_questions: int) -> dict:
    """Everything for one format (or ``llamacpp``: that backend), in this process."""
    started = time.perf_counter()
    backend = "llamacpp" if precision == "llamacpp" else "torch"
    engine = load_engine(precision="auto" if backend == "llamacpp" else precision, backend=backend,
                         max_new_tokens=DECODE_TOKENS, max_active_chats=8, request_timeout_s=600)
    result = {"format": engine.backend.info.precision, "reason": engine.backend.info.precision_reason,
              "load_s": round(time.perf_counter() - started, 1), "accuracy": {}}
    time.sleep(3)  # let the fp32 weight copy finish before timing anything
    for name in FILES:
        data = [json.loads(line) for line in open(DATA / name, encoding="utf-8")][:rows]
        predictions = []
        for i in range(0, len(data), 16):
            predictions += engine.classify("sentiment", [r["text"] for r in data[i: i + 16]])
        result["accuracy"][name] = sum(p.label == r["label"] for p, r in zip(predictions, data)) / len(data)
    times = []
    for _ in range(20):
        t0 = time.perf_counter()
        engine.classify("sentiment", [SHORT])
        times.append(time.perf_counter() - t0)
    result["sentiment_p50_s"] = round(median(times), 4)
    batch = [f"{SHORT} ({i})" for i in range(16)]
    engine.classify("sentiment", batch)
    t0 = time.perf_counter()
    for _ in range(3):
        engine.classify("sentiment", batch)
    result["batch16_texts_per_s"] = round(48 / (time.perf_counter() - t0), 1)
    result["decode_1_tok_s"] = round(decode_rate(engine, 1), 2)
    result["decode_8_tok_s"] = round(decode_rate(engine, 8), 2)
    right, asked, missed = chat_correct(engine, chat_questions)
    result.update(chat_right=right, chat_asked=asked, chat_missed=missed)
    result["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    engine.close()
    return result


def gate(results: dict[str, dict]) -> dict[str, str]:
    """PASS or why not, for each format against fp32 in the same run."""
    base = results.get("fp32")
    verdicts = {}
    for name, r in results.items():
        if base is None or name == "fp32":
            verdicts[name] = "reference" if name == "fp32" else "no fp32 to compare with"
            continue
        worse = [f"{f.split('_', 1)[1].rsplit('.', 1)[0]} {100 * (base['accuracy'][f] - a):.1f} points"
                 for f, a in r["accuracy"].items() if 100 * (base["accuracy"][f] - a) > ACCURACY_POINTS]
        if base["chat_right"] - r["chat_right"] > CHAT_QUESTIONS_SLACK:
            worse.append(f"chat {r['chat_right']}/{r['chat_asked']} vs fp32 {base['chat_right']}")
        verdicts[name] = "PASS" if not worse else "FAIL: " + "; ".join(worse)
    return verdicts


def print_table(results: dict[str, dict]) -> None:
    short = [f.replace("sentiment_", "").replace(".jsonl", "") for f in FILES]
    print("| format | " + " | ".join(short) + " | sentiment p50 | batch-16 texts/s | decode 1 chat tok/s "
          "| decode 8 chats tok/s (x one) | chat questions | load | peak RSS | gate |")
    print("|---" * (len(short) + 9) + "|")
    verdicts = gate(results)
    base = results.get("fp32")
    for name, r in results.items():
        speedup = f" ({r['decode_1_tok_s'] / base['decode_1_tok_s']:.2f}x fp32)" if base else ""
        print(f"| {name} | " + " | ".join(f"{r['accuracy'][f]:.3f}" for f in FILES)
              + f" | {r['sentiment_p50_s']:.3f} s | {r['batch16_texts_per_s']} | {r['decode_1_tok_s']}{speedup} "
              f"| {r['decode_8_tok_s']} ({r['decode_8_tok_s'] / r['decode_1_tok_s']:.2f}x) "
              f"| {r['chat_right']}/{r['chat_asked']} | {r['load_s']} s | {r['peak_rss_mib']} MiB | {verdicts[name]} |")


def json_child(args: list[str]) -> dict | None:
    """Run ``python ARGS`` in bench/ and return the JSON object its last line prints; on failure, say so with
    the end of its stderr and return None (each measurement runs in a process of its own)."""
    out = subprocess.run([sys.executable, *args], cwd=REPO / "bench", capture_output=True, text=True)
    if out.returncode != 0:
        print(f"{' '.join(args)}: failed\n{out.stderr[-3000:]}", flush=True)
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure_in_child(name: str, rows: int, chat_questions: int) -> dict | None:
    """``measure(name, ...)`` in a process of its own, so that its peak RSS is its own."""
    return json_child([__file__, "--one", name, "--rows", str(rows), "--chat-questions", str(chat_questions)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--formats", default="fp32,bf16,int8")
    parser.add_argument("--rows", type=int, default=1000, help="rows per sentiment file (all: 1000)")
    parser.add_argument("--chat-questions", type=int, default=32)
    parser.add_argument("--one", help=argparse.SUPPRESS)  # the child: measure one format, print JSON
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.rows, args.chat_questions)), flush=True)
        return
    from engine.precision import choose

    header("weight formats: accuracy gate, speed and memory")
    print(cpu_flags_line())
    print(f"auto picks here: {choose('auto').precision.value} ({choose('auto').reason})", flush=True)
    results = {}
    for name in args.formats.split(","):
        result = measure_in_child(name, args.rows, args.chat_questions)
        if result is not None:
            results[name] = result
            print(f"{name}: {json.dumps(result)}", flush=True)
    print()
    print_table(results)


if __name__ == "__main__":
    main()
