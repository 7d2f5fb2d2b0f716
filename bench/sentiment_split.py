"""The fixed tuning / held-out split of the shared sentiment files, for every script that uses them.

Rule (version 1): within each label, rows are ranked by the SHA-256 of their
UTF-8 text (file order breaks ties); the first 40 % go to tuning, the other
60 % are held out. Copies of one text stay on the same side. The rule reads
nothing but the text, so the split never changes between runs or machines.
Prompt work may look at the tuning part only; the held-out part is never used
to choose anything. Pure Python; imports nothing of the project.
"""

from __future__ import annotations

import hashlib
import json
from itertools import zip_longest
from pathlib import Path

__all__ = ["DATA", "FILES", "LABELS", "PARTS", "TUNING_SHARE", "balanced_head", "load_rows", "select", "split"]

# The same folder as bench/common.DATA, named again so that this module stays free of imports.
DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
FILES = ("sentiment_en_sst2_train", "sentiment_en_yelp", "sentiment_zh_chnsenticorp_train", "sentiment_zh_reviews")
LABELS = ("positive", "negative")  # the files' labels (../shared/data/README.md)
PARTS = ("tuning", "held-out", "all")
TUNING_SHARE = 0.4  # changing it (or the hash) is a new split: say so wherever figures are compared


def load_rows(file: str | Path) -> list[dict]:
    """The rows of one file, in file order: a name from ``FILES`` (``.jsonl`` optional) or a path."""
    path = Path(file)
    if not path.is_absolute() and path.parent == Path("."):
        path = DATA / (path.name if path.suffix == ".jsonl" else f"{path.name}.jsonl")
    rows = []
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            row = json.loads(line)
            if not isinstance(row.get("text"), str) or not row["text"].strip() or row.get("label") not in LABELS:
                raise ValueError(f"{path}:{number}: each row needs a non-empty 'text' and a 'label' in {LABELS}")
            rows.append({"text": row["text"], "label": row["label"]})
    return rows


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def split(rows: list[dict]) -> tuple[list[dict], list[dict]]:
    """(tuning, held_out), each in the rows' own order. Per label, round(40 % of its rows) go to
    tuning (one more when a text's copies straddle the cut); the rest are held out."""
    tuning_ids: set[int] = set()
    for label in sorted({r["label"] for r in rows}):
        ranked = sorted((i for i, r in enumerate(rows) if r["label"] == label), key=lambda i: _digest(rows[i]["text"]))
        cut = round(TUNING_SHARE * len(ranked))
        # A copy of a tuning text in the held-out part would leak it: move the cut past the copies.
        while 0 < cut < len(ranked) and rows[ranked[cut]]["text"] == rows[ranked[cut - 1]]["text"]:
            cut += 1
        tuning_ids.update(ranked[:cut])
    return ([r for i, r in enumerate(rows) if i in tuning_ids],
            [r for i, r in enumerate(rows) if i not in tuning_ids])


def select(rows: list[dict], part: str) -> list[dict]:
    """One part of ``rows`` by name: ``tuning``, ``held-out`` or ``all``."""
    if part not in PARTS:
        raise ValueError(f"part must be one of {PARTS}, not {part!r}")
    if part == "all":
        return list(rows)
    tuning, held_out = split(rows)
    return tuning if part == "tuning" else held_out


def balanced_head(rows: list[dict], n: int) -> list[dict]:
    """The first ``n`` rows taken in turn from each label, so a quick check still sees every label."""
    by_label: dict[str, list[dict]] = {}
    for row in rows:
        by_label.setdefault(row["label"], []).append(row)
    taken = [row for turn in zip_longest(*by_label.values()) for row in turn if row is not None]
    return taken[:n]
