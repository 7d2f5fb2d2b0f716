"""Files of texts to classify (ui/files.py): what is read, and every refusal, named in both languages."""

from __future__ import annotations

import csv
import io

import pytest

from ui.files import FileLimits, FileRefused, batches, check_upload, label_counts, read_texts, results_csv
from ui.i18n import text

LIMITS = FileLimits(max_bytes=2000, max_texts=5, max_chars=20)


def test_a_txt_file_is_one_text_a_line_without_blank_lines():
    data = "first\r\n\n  second  \n\t\nthird\n".encode()
    assert read_texts("reviews.txt", data, LIMITS) == ("first", "second", "third")


def test_utf8_with_a_byte_order_mark_and_chinese_text():
    data = "\ufeff很好吃\n太失望了\n".encode("utf-8")
    assert read_texts("评论.TXT", data, LIMITS) == ("很好吃", "太失望了")


def test_a_csv_file_uses_its_text_column_in_any_case():
    data = 'id,Text,stars\n1,"Great food, friendly staff",5\n2,Cold soup,1\n3,,2\n'.encode()
    assert read_texts("r.csv", data, FileLimits()) == ("Great food, friendly staff", "Cold soup")


def test_a_csv_file_without_a_text_column_uses_its_first_column_from_the_first_row():
    data = b"great,5\nterrible,1\n\nshort\n"
    assert read_texts("r.csv", data, LIMITS) == ("great", "terrible", "short")


def test_a_quoted_csv_cell_may_hold_a_line_break():
    data = b'text\n"two\nlines"\nnext\n'
    assert read_texts("r.csv", data, FileLimits()) == ("two\nlines", "next")


@pytest.mark.parametrize("name, data, key, params", [
    ("reviews.xlsx", b"abc", "file.type", {"name": "reviews.xlsx"}),
    ("reviews", b"abc", "file.type", {"name": "reviews"}),
    ("big.txt", b"x\n" * 1001, "file.too_big", {"size": "2 KB", "limit": "2 KB"}),
    ("empty.txt", b"", "file.empty", {}),
    ("blank.txt", b"\n  \n\t\n", "file.empty", {}),
    ("header.csv", b"text\n", "file.empty", {}),
    ("latin1.txt", "ok\nCafé crème\n".encode("latin-1"), "file.encoding", {"line": 2}),
    ("gbk.csv", "text\n好\n很好\n".encode("gbk"), "file.encoding", {"line": 2}),
    ("utf16.txt", "hello\n".encode("utf-16"), "file.encoding", {"line": 1}),
    ("binary.txt", b"ok\nfine\n\x00\x01\x02", "file.binary", {"line": 3}),
    ("six.txt", b"a\nb\nc\nd\ne\nf\n", "file.too_many", {"count": 6, "limit": 5}),
    ("long.txt", b"short\n\n" + b"y" * 21 + b"\n", "file.line_too_long", {"line": 3, "chars": 21, "limit": 20}),
    ("long.csv", b'text\nok\n"two\nlines"\n' + b"z" * 25 + b"\n", "file.line_too_long",
     {"line": 5, "chars": 25, "limit": 20}),
    ("broken.csv", b'text\n"never closed\n', "file.csv", {"line": 2}),
])
def test_every_refusal_names_the_limit_or_the_line(name, data, key, params):
    with pytest.raises(FileRefused) as refused:
        read_texts(name, data, LIMITS)
    assert refused.value.key == key and refused.value.params == params
    assert refused.value.user_message == text(key, "en", **params)  # what an API client reads
    assert text(key, "zh", **params) != refused.value.user_message  # and a Chinese viewer has their own


def test_refusals_name_the_numbers_a_person_can_act_on():
    with pytest.raises(FileRefused, match=r"Line 3 is 21 characters long; the limit is 20 per line"):
        read_texts("long.txt", b"short\n\n" + b"y" * 21, LIMITS)
    with pytest.raises(FileRefused, match=r"The file is 2\.5 MB; the limit is 2\.0 MB per file"):
        check_upload("big.csv", int(2.5 * 2**20), FileLimits())
    with pytest.raises(FileRefused, match="6 texts; the limit is 5 per file"):
        read_texts("six.txt", b"a\nb\nc\nd\ne\nf", LIMITS)
    with pytest.raises(FileRefused, match="not UTF-8 text"):
        read_texts("latin1.txt", "Café".encode("latin-1"), LIMITS)


def test_the_default_limits_take_a_classroom_file():
    data = ("\n".join(f"review {i}" for i in range(5000))).encode()
    assert len(read_texts("class.txt", data, FileLimits())) == 5000
    with pytest.raises(FileRefused, match="5001 texts; the limit is 5000"):
        read_texts("class.txt", data + b"\none more", FileLimits())


def test_batches_keep_order_and_size():
    texts = tuple(str(i) for i in range(10))
    assert [list(b) for b in batches(texts, 4)] == [["0", "1", "2", "3"], ["4", "5", "6", "7"], ["8", "9"]]
    assert [t for b in batches(texts, 64) for t in b] == list(texts)


def test_results_csv_round_trips_with_its_header():
    rows = [("Great, really", "positive", 0.98765, "head"), ('He said "no"\nthen left', "negative", 0.5, "prompt")]
    out = list(csv.DictReader(io.StringIO(results_csv(rows))))
    assert out == [{"text": "Great, really", "label": "positive", "confidence": "0.9877", "mode": "head"},
                   {"text": 'He said "no"\nthen left', "label": "negative", "confidence": "0.5000", "mode": "prompt"}]


def test_label_counts_follow_the_task_order_and_show_zero():
    assert label_counts(["b", "b", "a"], ["a", "b", "c"]) == [("a", 1), ("b", 2), ("c", 0)]
