"""Write the sentiment task's examples file (``examples_file`` in engine/tasks.toml) from the shared files.

    python bench/head_examples.py [--part tuning|all] [--files sst2,chnsenticorp,...] [--out FILE]

``--part tuning`` writes the tuning parts (``bench/sentiment_split.py``): a head fitted on them can be
scored on the held-out parts. The shipped head is fitted on ``all`` rows, once its layer was chosen
on the tuning parts alone (``bench/head_layers.py``; docs/benchmarks.md). Rows are interleaved file by
file, the same on every run. Then fit the head: ``python -m ops.heads fit [--layer K]``.
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
    parser.add_argument("--part", choices=("tuning", "all"), default="all")
    args = parser.parse_args()
    parts = []
    for name in args.files.split(","):
        matches = [f for f in FILES if name in f]
        if len(matches) != 1:
            raise SystemExit(f"--files: {name!r} names {len(matches)} of {', '.join(FILES)}")
        rows = load_rows(matches[0])
        chosen = split(rows)[0] if args.part == "tuning" else rows
        parts.append(chosen)
        print(f"{matches[0]}: {len(chosen)} rows ({args.part})")
    rows = [row for group in zip_longest(*parts) for row in group if row is not None]
    with open(args.out, "w", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps({"text": row["text"], "label": row["label"]}, ensure_ascii=False) + "\n")
    print(f"wrote {len(rows)} examples to {args.out}")


if __name__ == "__main__":
    main()
