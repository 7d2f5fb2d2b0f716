"""Sentiment accuracy of the default model on the development sets.

    .venv/bin/python bench/sentiment_accuracy.py [--limit N]

Reads ../shared/data/sentiment_{en_yelp,zh_reviews}.jsonl and prints accuracy,
per-class recall and throughput per file. Uses the engine exactly as the app
does (label scoring with the cached few-shot prefix).
"""

from __future__ import annotations

import argparse
import json
import time

from common import DATA, header, load_engine

FILES = ["sentiment_en_yelp.jsonl", "sentiment_zh_reviews.jsonl"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--limit", type=int, default=0, help="rows per file (0 = all)")
    args = parser.parse_args()
    header("sentiment accuracy")
    engine = load_engine()
    for name in FILES:
        rows = [json.loads(line) for line in open(DATA / name, encoding="utf-8")]
        if args.limit:
            rows = rows[: args.limit]
        started = time.perf_counter()
        predictions = []
        for i in range(0, len(rows), 16):
            predictions += engine.classify("sentiment", [r["text"] for r in rows[i : i + 16]])
        elapsed = time.perf_counter() - started
        correct = sum(p.label == r["label"] for p, r in zip(predictions, rows))
        recall = {
            label: sum(p.label == label for p, r in zip(predictions, rows) if r["label"] == label)
            / max(1, sum(r["label"] == label for r in rows))
            for label in ("positive", "negative")
        }
        print(
            f"{name}: accuracy {correct / len(rows):.3f} ({correct}/{len(rows)}), "
            f"recall pos {recall['positive']:.3f} neg {recall['negative']:.3f}, "
            f"{len(rows) / elapsed:.1f} texts/s",
            flush=True,
        )
    engine.close()


if __name__ == "__main__":
    main()
