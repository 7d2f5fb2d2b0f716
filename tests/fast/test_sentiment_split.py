"""The fixed tuning / held-out split of the sentiment files (bench/sentiment_split.py): pure Python,
tested without a model, on made-up rows (the shared files may not be beside a CI clone;
bench/sentiment_accuracy.py prints each part's size when it runs)."""

from __future__ import annotations

import importlib.util
from collections import Counter
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("sentiment_split", REPO / "bench" / "sentiment_split.py")
split_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(split_module)
split, select, balanced_head, load_rows = (split_module.split, split_module.select, split_module.balanced_head,
                                           split_module.load_rows)

MADE_UP = [{"text": f"review number {i}", "label": "positive" if i % 3 else "negative"} for i in range(300)]


def counts(rows: list[dict]) -> Counter:
    return Counter((r["text"], r["label"]) for r in rows)


def test_the_split_is_deterministic_and_ignores_row_order():
    tuning, held_out = split(MADE_UP)
    assert split(MADE_UP) == (tuning, held_out)
    shuffled = MADE_UP[::-1]
    assert counts(split(shuffled)[0]) == counts(tuning)  # the text decides, not its place in the file


def test_the_rule_is_pinned():
    # SHA-256 of the text, never Python's salted hash(): these rows land here on every machine, in every run.
    tuning, _ = split(MADE_UP[:10])
    assert [r["text"] for r in tuning] == ["review number 0", "review number 2", "review number 5",
                                           "review number 6"]


def test_parts_are_disjoint_cover_every_row_and_keep_file_order():
    tuning, held_out = split(MADE_UP)
    assert counts(tuning) + counts(held_out) == counts(MADE_UP)
    assert not {r["text"] for r in tuning} & {r["text"] for r in held_out}
    assert tuning == [r for r in MADE_UP if r in tuning]
    assert select(MADE_UP, "all") == MADE_UP and select(MADE_UP, "held-out") == held_out
    with pytest.raises(ValueError):
        select(MADE_UP, "test")


def test_each_label_is_split_forty_sixty():
    tuning, held_out = split(MADE_UP)
    for label, total in Counter(r["label"] for r in MADE_UP).items():
        assert sum(r["label"] == label for r in tuning) == round(0.4 * total)
        assert sum(r["label"] == label for r in held_out) == total - round(0.4 * total)


def test_copies_of_a_text_stay_on_one_side():
    rows = [{"text": f"t{i}", "label": "positive"} for i in range(9)]
    ranked = sorted(rows, key=lambda r: split_module._digest(r["text"]))
    rows.append(dict(ranked[3]))  # a copy of the last text before the cut (round(0.4 * 10) == 4)
    tuning, held_out = split(rows)
    assert len(tuning) == 5 and not {r["text"] for r in tuning} & {r["text"] for r in held_out}


def test_balanced_head_takes_labels_in_turn():
    head = balanced_head(MADE_UP, 10)
    assert Counter(r["label"] for r in head) == {"positive": 5, "negative": 5}
    assert balanced_head(MADE_UP, 1000) == balanced_head(MADE_UP, len(MADE_UP))
