"""Chat quality: checkable questions scored per category, and how often the replies loop.

    .venv/bin/python bench/chat_quality.py [--backend auto] [--guards off,stop,break] [--threads 1]
        [--max-new-tokens 256] [--category C,...] [--system-prompt TEXT] [--url URL]  (--help: all)

Asks bench/data/chat_questions.jsonl, scored by bench/chat_checks.py (as bench/precision.py gates);
in-process, greedy, 8 at a time, one pass per repetition guard on one engine (``--threads 1``: each
decoded alone, so passes differ only by their guard). docs/benchmarks.md, "Chat quality", tells more.
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from chat_checks import CATEGORIES, language_of, load_questions, longest_run, loops, passes
from common import header, load_engine

MAX_NEW_TOKENS = 64
THREADS = 8
SHOWN_CHARS = 120  # of a failed question's reply
Ask = Callable[[dict, object], tuple[str, int]]  # (a row, a repetition guard) -> (the reply, its tokens; 0: unknown)


@dataclass(frozen=True)
class Asker:
    ask: Ask
    close: Callable[[], None]
    where: str


@dataclass(frozen=True)
class Pass:
    """One run over the questions with one guard: the replies, their scores and what it took."""

    guard: str
    replies: list[str]
    passed: list[bool]
    tokens: int
    seconds: float


def guards(names: str) -> dict[str, object]:
    """``off``, ``stop``, ``break``, ``ngramN`` (no repeated N-gram, no loop watch) or ``default``."""
    from engine.sampling import DEFAULT_GUARD, NO_GUARD, GuardAction, RepetitionGuard

    known = {"off": NO_GUARD, "stop": RepetitionGuard(), "break": RepetitionGuard(action=GuardAction.BREAK),
             "default": DEFAULT_GUARD}
    chosen = {}
    for name in names.split(","):
        if name.startswith("ngram") and name[5:].isdigit():
            chosen[name] = RepetitionGuard(loop_tokens=0, no_repeat_ngram=int(name[5:]))
        elif name in known:
            chosen[name] = known[name]
        else:
            raise ValueError(f"unknown guard {name!r}: use off, stop, break, ngramN or default")
    return chosen


def engine_asker(model_dir: Path | None, backend: str, precision: str, threads: int,
                 system_prompt: str | None = None, max_new_tokens: int = MAX_NEW_TOKENS) -> Asker:
    """The in-process engine, greedy, ``max_new_tokens`` a reply; ``system_prompt`` in place of the task's."""
    from engine.types import GenerateOptions

    engine = load_engine(model_dir, precision=precision, backend=backend, max_new_tokens=max_new_tokens,
                         max_active_chats=threads, request_timeout_s=1200)
    info = engine.backend.info

    def ask(row: dict, guard: object) -> tuple[str, int]:
        options = GenerateOptions(max_new_tokens=max_new_tokens, temperature=0.0, system_prompt=system_prompt,
                                  repetition=guard)
        last = engine.chat("chat", row["q"], row.get("history"), options=options)
        return last.text, last.tokens

    return Asker(ask, engine.close, f"in-process {info.label} on {info.backend} ({info.backend_reason}), "
                                    f"{info.precision} ({info.precision_reason})")


def url_asker(url: str) -> Asker:
    """A running app, through its Gradio API (its own repetition guard)."""
    from gradio_client import Client

    client = Client(url, verbose=False)

    def ask(row: dict, guard: object) -> tuple[str, int]:
        return client.predict(row["q"], row.get("history") or [], api_name="/chat"), 0

    return Asker(ask, client.close, f"the app at {url} (its own max_new_tokens)")


def rate(passed: int, asked: int) -> str:
    return f"{passed}/{asked} ({100 * passed / asked:.0f}%)" if asked else "0/0"


def run_pass(asker: Asker, rows: list[dict], name: str, guard: object, threads: int,
             system_prompt: str | None) -> Pass:
    def answer(row: dict) -> tuple[str, int]:
        try:
            return asker.ask(row, guard)
        except Exception as exc:  # a failed request is a failed question, shown with its reply
            return f"<error: {type(exc).__name__}: {exc}>", 0

    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        answers = list(pool.map(answer, rows))
    elapsed = time.perf_counter() - started
    replies = [reply for reply, _ in answers]
    passed = [passes(row, reply, system_prompt) for row, reply in zip(rows, replies)]
    return Pass(name, replies, passed, sum(tokens for _, tokens in answers), elapsed)


def score_lines(rows: list[dict], result: Pass) -> dict[str, str]:
    """Each category's pass rate, then the summaries: overall, checkable, Chinese, loops."""
    lines, shares = {}, []
    for category in CATEGORIES:
        scored = [ok for row, ok in zip(rows, result.passed) if row["category"] == category]
        if scored:
            shares.append(sum(scored) / len(scored))
            lines[category] = rate(sum(scored), len(scored))
    # The categories differ in size (facts are the most): their mean weighs each the same.
    lines["overall"] = rate(sum(result.passed), len(rows))
    lines["mean of categories"] = f"{100 * sum(shares) / max(1, len(shares)):.0f}%"
    checkable = [ok for row, ok in zip(rows, result.passed) if row.get("a")]
    lines["checkable (an answer to find)"] = rate(sum(checkable), len(checkable))
    chinese = [ok for row, ok in zip(rows, result.passed) if language_of(row["q"]) == "zh"]
    lines["asked in Chinese"] = rate(sum(chinese), len(chinese))
    runs = [longest_run(reply) for reply in result.replies]
    lines["replies that loop"] = f"{sum(loops(reply) for reply in result.replies)}/{len(rows)}"
    longest = max(runs, key=lambda run: run.chars)
    lines["longest repeated run"] = f"{longest.chars} chars ({longest.unit!r} x{longest.times})"
    lines["tokens generated"] = str(result.tokens)
    lines["seconds"] = f"{result.seconds:.0f}"
    return lines


def shorten(reply: str) -> str:
    shown = " ".join(reply.split())
    return shown if len(shown) <= SHOWN_CHARS else shown[: SHOWN_CHARS - 3] + "..."


def report(rows: list[dict], results: list[Pass]) -> None:
    table = [score_lines(rows, result) for result in results]
    names = [result.guard for result in results]
    print(f"\n{'guard':<30} " + " ".join(f"{name:>22}" for name in names))
    for key in table[0]:
        print(f"{key:<30} " + " ".join(f"{lines[key]:>22}" for lines in table))
    for result in results:
        for row, reply in zip(rows, result.replies):
            if loops(reply):
                print(f"  loops ({result.guard}): [{row['category']}] {row['q']}\n      -> {shorten(reply)!r}")
    base = results[0]
    if not all(base.passed):
        print(f"\nfailed ({base.guard}):")
    for row, reply, ok in zip(rows, base.replies, base.passed):
        if not ok:
            turns = f" (after {len(row['history'])} turns)" if row.get("history") else ""
            print(f"  [{row['category']}] {row['q']}{turns}\n      -> {shorten(reply)!r}")
    for other in results[1:]:
        changed = [i for i, (a, b) in enumerate(zip(base.replies, other.replies)) if a != b]
        print(f"\n{len(changed)} replies differ, {base.guard} -> {other.guard}:")
        for i in changed:
            print(f"  [{rows[i]['category']}] {rows[i]['q']}  ({'pass' if base.passed[i] else 'fail'} -> "
                  f"{'pass' if other.passed[i] else 'fail'})\n      {base.guard}: {shorten(base.replies[i])!r}\n"
                  f"      {other.guard}: {shorten(other.replies[i])!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", default="auto", help="runtime for the in-process engine: auto, torch, llamacpp")
    parser.add_argument("--precision", default="auto", help="weight format for the in-process engine (torch)")
    parser.add_argument("--model-dir", type=Path, help="a model directory (default: models/current)")
    parser.add_argument("--url", help="ask a running app instead (e.g. http://127.0.0.1:7860)")
    parser.add_argument("--limit", type=int, default=0, help="the first N questions (0 = all)")
    parser.add_argument("--category", help=f"comma-separated, of: {', '.join(CATEGORIES)}")
    parser.add_argument("--threads", type=int, default=THREADS, help="questions asked at a time")
    parser.add_argument("--max-new-tokens", type=int, default=MAX_NEW_TOKENS, help="a reply's limit (in-process)")
    parser.add_argument("--system-prompt", help="a candidate system prompt in place of the chat task's (in-process)")
    parser.add_argument("--guards", default="default",
                        help="repetition guards to compare, one pass each (in-process): off, stop, break, ngramN, "
                             "default")
    args = parser.parse_args()
    if args.url and (args.system_prompt or args.guards != "default"):
        parser.error("--system-prompt and --guards are for the in-process engine; a live app uses its own")
    try:
        chosen = {"the app's": None} if args.url else guards(args.guards)
    except ValueError as exc:
        parser.error(str(exc))
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
        asker = url_asker(args.url)
    else:
        asker = engine_asker(args.model_dir, args.backend, args.precision, args.threads, args.system_prompt,
                             args.max_new_tokens)
    where = asker.where + (f", system prompt {args.system_prompt!r}" if args.system_prompt else "")
    print(f"{len(rows)} questions to {where}; guards {', '.join(f'{k}={v}' for k, v in chosen.items())}",
          flush=True)
    results = []
    try:
        for name, guard in chosen.items():
            results.append(run_pass(asker, rows, name, guard, args.threads, args.system_prompt))
            print(f"{name}: {rate(sum(results[-1].passed), len(rows))} in {results[-1].seconds:.0f} s", flush=True)
    finally:
        asker.close()
    report(rows, results)


if __name__ == "__main__":
    main()
