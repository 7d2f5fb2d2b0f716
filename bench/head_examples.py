"""Write a classify task's examples file (``examples_file`` in engine/tasks.toml) from the TUNING parts
of the shared sentiment files: the rows a linear head (engine.heads) is fitted on.

    python bench/head_examples.py [--files sst2,chnsenticorp,...] [--out engine/sentiment_examples.jsonl]

Only the tuning part of each file (``bench/sentiment_split.py``) goes in, so the held-out parts stay
unseen by the head, as by the prompt work. Rows are interleaved file by file so that no file's rows
cluster, and the output is the same on every run. Then fit the head: ``python -m ops.heads fit``.
"""

from __future__ import annotations

import argparse
import json
from itertools import zip_longest
from pathlib import Path

from sentiment_split import FILES, load_rows, split

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", default=",".join(FILES), help="files (names from bench/sentiment_split.FILES)")
    parser.add_argument("--out", type=Path, default=REPO / "engine" / "sentiment_examples.jsonl")
    args = parser.parse_args()
    parts = []
    for name in args.files.split(","):
        matches = [f for f in FILES if name in f]
        if len(matches) != 1:
            raise SystemExit(f"--files: {name!r} names {len(matches)} of {', '.join(FILES)}")
        tuning, _ = split(load_rows(matches[0]))
        parts.append(tuning)
        print(f"{matches[0]}: {len(tuning)} tuning rows")
    rows = [row for group in zip_longest(*parts) for row in group if row is not None]
    with open(args.out, "w", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps({"text": row["text"], "label": row["label"]}, ensure_ascii=False) + "\n")
    print(f"wrote {len(rows)} examples to {args.out}")


if __name__ == "__main__":
    main()
