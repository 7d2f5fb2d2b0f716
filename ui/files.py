"""Files of texts to classify: an upload read into texts within the file's limits, and results as CSV.

Pure: bytes in, texts or CSV text out; no model and no web framework. A ``.txt`` file is one text a
line; a ``.csv`` file has a ``text`` column (any case), or else its first column is the text, from the
first row on. Files are UTF-8 (a byte-order mark is fine); blank lines and cells are skipped. Every
refusal is a ``FileRefused`` that names the limit, or the line at fault by its number in the file.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from dataclasses import dataclass
from pathlib import PurePath
from typing import Iterator, Sequence

from engine.errors import InvalidInput
from ui.i18n import text

__all__ = ["FileLimits", "FileRefused", "FILE_TYPES", "check_upload", "read_texts", "batches", "results_csv",
           "label_counts", "CSV_COLUMNS"]

FILE_TYPES = (".txt", ".csv")
CSV_COLUMNS = ("text", "label", "confidence", "mode")


@dataclass(frozen=True)
class FileLimits:
    max_bytes: int = 2 * 1024 * 1024
    max_texts: int = 5000
    max_chars: int = 4000  # per text: the per-request limit (``engine.kinds.base.RequestLimits``), so no batch fails on one line


class FileRefused(InvalidInput):
    """A file refused: ``key`` is its ``file.*`` string in ``ui.i18n`` and ``params`` fill it in; the
    message (what an API client gets) is the English one."""

    def __init__(self, key: str, **params: object) -> None:
        self.key, self.params = key, params
        super().__init__(text(key, "en", **params))


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MB" if n >= 2**20 else f"{n / 2**10:.0f} KB" if n >= 2**10 else f"{n} bytes"


def check_upload(name: str, size: int, limits: FileLimits) -> None:
    """Its type and size, before it is read."""
    if PurePath(name).suffix.lower() not in FILE_TYPES:
        raise FileRefused("file.type", name=PurePath(name).name)
    if size > limits.max_bytes:
        raise FileRefused("file.too_big", size=_size(size), limit=_size(limits.max_bytes))


def _decode(data: bytes) -> str:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):  # UTF-16 ("Unicode text" in Windows programs)
        raise FileRefused("file.encoding", line=1)
    if b"\x00" in data:
        raise FileRefused("file.binary", line=data[:data.index(b"\x00")].count(b"\n") + 1)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise FileRefused("file.encoding", line=data[:exc.start].count(b"\n") + 1) from None


def _txt_texts(body: str) -> Iterator[tuple[int, str]]:
    # split("\n"), not splitlines(): a line number must be the one an editor shows
    for number, line in enumerate(body.split("\n"), 1):
        yield number, line.rstrip("\r")


def _csv_texts(body: str) -> Iterator[tuple[int, str]]:
    reader = csv.reader(io.StringIO(body, newline=""), strict=True)  # a quote left open is an error
    column, first = 0, True
    try:
        start = 1
        for row in reader:
            number, start = start, reader.line_num + 1  # a quoted cell may span lines: its row starts here
            if first:
                first = False
                names = [cell.strip().lower() for cell in row]
                if "text" in names:
                    column = names.index("text")
                    continue
            yield number, row[column] if column < len(row) else ""
    except csv.Error:
        raise FileRefused("file.csv", line=reader.line_num) from None


def read_texts(name: str, data: bytes, limits: FileLimits) -> tuple[str, ...]:
    """The texts of an upload named ``name``; ``FileRefused`` says why not."""
    check_upload(name, len(data), limits)
    body = _decode(data)
    rows = _csv_texts(body) if PurePath(name).suffix.lower() == ".csv" else _txt_texts(body)
    found = [(number, line.strip()) for number, line in rows if line.strip()]
    if not found:
        raise FileRefused("file.empty")
    if len(found) > limits.max_texts:
        raise FileRefused("file.too_many", count=len(found), limit=limits.max_texts)
    for number, line in found:
        if len(line) > limits.max_chars:
            raise FileRefused("file.line_too_long", line=number, chars=len(line), limit=limits.max_chars)
    return tuple(line for _, line in found)


def batches(texts: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    """``texts`` in order, ``size`` at a time (one request each)."""
    for start in range(0, len(texts), max(1, size)):
        yield texts[start:start + size]


def results_csv(rows: Sequence[tuple[str, str, float, str]]) -> str:
    """``rows`` of (text, label, confidence, mode) as CSV with a header, for a file written as UTF-8
    with a byte-order mark (``utf-8-sig``), so that spreadsheet programs read Chinese right."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    writer.writerows((text_, label, f"{confidence:.4f}", mode) for text_, label, confidence, mode in rows)
    return out.getvalue()


def label_counts(labels: Sequence[str], order: Sequence[str]) -> list[tuple[str, int]]:
    """How many of each label, in the task's label order (labels never given count 0)."""
    counts = Counter(labels)
    return [(label, counts.get(label, 0)) for label in order]
