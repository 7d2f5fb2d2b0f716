"""Chat performance and cold start, through the real app.

    .venv/bin/python bench/chat_perf.py

Starts ``python app.py`` on a free port (default model from the store),
measures process start -> ``/ready`` 200 (cold start from the converted
store; the RSS watch starts once the process exists), then runs chat turns through gradio_client: time to first token,
tokens/s (tokens counted with the model's tokenizer) and the server's peak RSS.
"""

from __future__ import annotations

import time

from common import REPO, PeakRss, header, median, running_app

PROMPTS = [
    "Explain in three sentences why the sky is blue.",
    "用三句话介绍一下熊猫。",
    "Give me three tips for learning a new language.",
]


def main() -> None:
    from gradio_client import Client
    from transformers import AutoTokenizer

    header("chat performance and cold start")
    rss = PeakRss()
    with running_app(["--max-new-tokens", "96", "--log-dir", "/tmp/allinone-bench-logs"],
                     on_start=rss.watch) as (_, url, cold):
        print(f"cold start (process start -> /ready 200): {cold:.1f} s")
        tokenizer = AutoTokenizer.from_pretrained(REPO / "models" / "current")
        client = Client(url, verbose=False)
        ttfts, rates = [], []
        for prompt in PROMPTS:
            t0 = time.perf_counter()
            first = None
            text = ""
            for text in client.submit(prompt, api_name="/chat"):
                if first is None and text:
                    first = time.perf_counter() - t0
            total = time.perf_counter() - t0
            tokens = len(tokenizer(text, add_special_tokens=False)["input_ids"])
            ttfts.append(first or total)
            rates.append(tokens / (total - (first or 0)) if total > (first or 0) else 0.0)
            print(f"  {tokens} tokens, time to first token {first:.2f} s, total {total:.1f} s")
        print(f"chat: time to first token p50 {median(ttfts):.2f} s; decode {median(rates):.2f} tokens/s (p50)")
        print(f"server peak RSS: {rss.peak / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
