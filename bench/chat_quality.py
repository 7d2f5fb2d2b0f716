"""Chat quality of the default model: checkable questions, scored per category.

    .venv/bin/python bench/chat_quality.py [--precision auto|fp32|bf16|int8] [--model-dir DIR]
                                           [--limit N] [--category C,...] [--system-prompt TEXT]
    .venv/bin/python bench/chat_quality.py --url http://127.0.0.1:7860

Asks every row of bench/data/chat_questions.jsonl (facts, small arithmetic,
one-word answers, replying in the user's language, following the previous
turn, keeping the system prompt to itself; English and Chinese) and scores
each reply with bench/chat_checks.py, the same checks bench/precision.py gates
on. Prints the pass rate per category and overall, then each failed question
with its reply (truncated). In-process by default: greedy, 64 new tokens,
8 questions at a time. ``--system-prompt`` asks with a candidate system prompt
in place of the chat task's (and the no-leak checks guard that one). With
``--url``: through a running app's ``/chat`` endpoint (gradio_client), under
the app's own limits and system prompt.
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

from chat_checks import CATEGORIES, load_questions, passes
from common import header, load_engine

MAX_NEW_TOKENS = 64
THREADS = 8
SHOWN_CHARS = 120  # of a failed question's reply
Asker = tuple[Callable[[dict], str], Callable[[], None], str]  # (ask a row, close, what is asked)


def engine_asker(model_dir: Path | None, precision: str, threads: int, system_prompt: str | None = None) -> Asker:
    """The in-process engine, greedy, ``MAX_NEW_TOKENS`` a reply; ``system_prompt`` in place of the task's."""
    from engine.types import GenerateOptions

    engine = load_engine(model_dir, precision=precision, max_new_tokens=MAX_NEW_TOKENS, max_active_chats=threads,
                         request_timeout_s=600)
    options = GenerateOptions(max_new_tokens=MAX_NEW_TOKENS, temperature=0.0, system_prompt=system_prompt)
    info = engine.backend.info

    def ask(row: dict) -> str:
        return engine.chat("chat", row["q"], row.get("history"), options=options).text

    return ask, engine.close, f"in-process {info.label}, {info.precision} ({info.precision_reason})"


def url_asker(url: str) -> Asker:
    """A running app, through its Gradio API."""
    from gradio_client import Client

    client = Client(url, verbose=False)

    def ask(row: dict) -> str:
        return client.predict(row["q"], row.get("history") or [], api_name="/chat")

    return ask, client.close, f"the app at {url} (its own max_new_tokens)"


def rate(passed: int, asked: int) -> str:
    return f"{passed}/{asked} ({100 * passed / asked:.0f}%)" if asked else "0/0"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--precision", default="auto", help="weight format for the in-process engine")
    parser.add_argument("--model-dir", type=Path, help="a model directory (default: models/current)")
    parser.add_argument("--url", help="ask a running app instead (e.g. http://127.0.0.1:7860)")
    parser.add_argument("--limit", type=int, default=0, help="the first N questions (0 = all)")
    parser.add_argument("--category", help=f"comma-separated, of: {', '.join(CATEGORIES)}")
    parser.add_argument("--threads", type=int, default=THREADS, help="questions asked at a time")
    parser.add_argument("--system-prompt", help="a candidate system prompt in place of the chat task's (in-process)")
    args = parser.parse_args()
    if args.url and args.system_prompt:
        parser.error("--system-prompt is for the in-process engine; a live app uses its own")
    rows = load_questions()
    if args.category:
        wanted = args.category.split(",")
        unknown = set(wanted) - set(CATEGORIES)
        if unknown:
            parser.error(f"unknown category: {', '.join(sorted(unknown))}")
        rows = [row for row in rows if row["category"] in wanted]
    if args.limit:
        rows = rows[: args.limit]

    header("chat quality")
    if args.url:
        ask, close, where = url_asker(args.url)
    else:
        ask, close, where = engine_asker(args.model_dir, args.precision, args.threads, args.system_prompt)
        if args.system_prompt:
            where += f", system prompt {args.system_prompt!r}"
    print(f"{len(rows)} questions to {where}", flush=True)

    def answer(row: dict) -> str:
        try:
            return ask(row)
        except Exception as exc:  # a failed request is a failed question, shown with its reply
            return f"<error: {type(exc).__name__}: {exc}>"

    started = time.perf_counter()
    try:
        with ThreadPoolExecutor(args.threads) as pool:
            replies = list(pool.map(answer, rows))
    finally:
        close()
    elapsed = time.perf_counter() - started
    results = [passes(row, reply, args.system_prompt) for row, reply in zip(rows, replies)]

    shares = []
    for category in CATEGORIES:
        scored = [ok for row, ok in zip(rows, results) if row["category"] == category]
        if scored:
            shares.append(sum(scored) / len(scored))
            print(f"{category:<14} {rate(sum(scored), len(scored))}")
    # The categories differ in size (facts are the most): their mean weighs each the same.
    print(f"{'overall':<14} {rate(sum(results), len(results))}; mean of categories "
          f"{100 * sum(shares) / max(1, len(shares)):.0f}%; {elapsed:.0f} s", flush=True)
    failed = [(row, reply) for row, reply, ok in zip(rows, replies, results) if not ok]
    if failed:
        print("\nfailed:")
    for row, reply in failed:
        shown = " ".join(reply.split())
        shown = shown if len(shown) <= SHOWN_CHARS else shown[: SHOWN_CHARS - 3] + "..."
        turns = f" (after {len(row['history'])} turns)" if row.get("history") else ""
        print(f"  [{row['category']}] {row['q']}{turns}\n      -> {shown!r}")


if __name__ == "__main__":
    main()
