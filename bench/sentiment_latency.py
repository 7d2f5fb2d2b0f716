"""Sentiment latency: label scoring vs the naive "generate a word and parse it" path.

    .venv/bin/python bench/sentiment_latency.py [--runs 30]

Both paths run in this one process on the same loaded model, so the ratio is
comparable on any machine. Prints p50/p95 for one short sentence, the
throughput of a batch of 16, and the same single-sentence figure through the
HTTP API (gradio_client against a running app, if --url is given). Where the
task has a fitted head (engine/heads.py), it also times ``prompt`` against
``head`` mode, the two calls interleaved so that drift hits both alike.
"""

from __future__ import annotations

import argparse
import time

from common import header, load_engine, median, percentile

SHORT = "The food was great but the service was a bit slow."
BATCH = [
    "Loved every minute of it.", "The soup was cold and bland.", "服务很好，下次还来。", "质量太差，很失望。",
    "Friendly staff and a clean room.", "I will never order from them again.", "性价比很高。", "物流太慢了。",
    "Best coffee in town!", "The screen cracked on day one.", "环境优美，推荐。", "客服态度恶劣。",
    "A pleasant surprise.", "Totally overpriced.", "非常满意的一次购物。", "再也不买了。",
]


def naive_generate_and_parse(engine, text: str) -> str:
    """The baseline this project avoids: render the whole prompt, generate, parse the word."""
    import torch

    from engine.prompts import classify_messages

    handle = engine.backend.handle
    task = engine.tasks.get("sentiment")
    prompt = handle.tokenizer.apply_chat_template(classify_messages(task, text), tokenize=False,
                                                  add_generation_prompt=True)
    ids = handle.tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    with torch.inference_mode():
        out = handle.model.generate(**ids, max_new_tokens=3, do_sample=False,
                                    pad_token_id=handle.tokenizer.pad_token_id)
    word = handle.tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip().lower()
    return "positive" if word.startswith("pos") else "negative" if word.startswith("neg") else "unparsed"


def timed(fn, runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--url", help="also time the /sentiment API of a running app")
    args = parser.parse_args()
    header("sentiment latency")
    engine = load_engine()
    for _ in range(3):
        engine.classify("sentiment", [SHORT])
    scored = timed(lambda: engine.classify("sentiment", [SHORT]), args.runs)
    naive = timed(lambda: naive_generate_and_parse(engine, SHORT), max(5, args.runs // 3))
    batch = timed(lambda: engine.classify("sentiment", BATCH), 5)
    print(f"label scoring, 1 short sentence: p50 {median(scored):.3f} s, p95 {percentile(scored, 95):.3f} s")
    print(f"naive generate+parse, same sentence: p50 {median(naive):.3f} s")
    print(f"ratio naive/scoring (p50): {median(naive) / median(scored):.1f}x")
    print(f"batch of 16: {16 / median(batch):.1f} sentences/s (p50 {median(batch):.3f} s per batch)")
    if engine.backend.classifier.head_states()["sentiment"].ready:
        by_mode = {"prompt": [], "head": []}
        for _ in range(args.runs):
            for mode, times in by_mode.items():
                times += timed(lambda: engine.classify("sentiment", [SHORT], mode), 1)
        prompt, head = median(by_mode["prompt"]), median(by_mode["head"])
        print(f"mode prompt p50 {prompt:.3f} s, mode head p50 {head:.3f} s (interleaved, {args.runs} each): "
              f"head/prompt {head / prompt:.2f}")
    if args.url:
        from gradio_client import Client

        client = Client(args.url, verbose=False)
        client.predict(SHORT, api_name="/sentiment")
        api = timed(lambda: client.predict(SHORT, api_name="/sentiment"), args.runs)
        print(f"through the HTTP API (gradio_client): p50 {median(api):.3f} s, p95 {percentile(api, 95):.3f} s")
    engine.close()


if __name__ == "__main__":
    main()
