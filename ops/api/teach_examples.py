"""Labelled examples for teaching a classify task: parsed from JSON lines, CSV or tab-separated text, and checked.

``parse_examples`` reads a body or file (UTF-8, at most ``MAX_EXAMPLES_BYTES``); ``check_examples``
holds them against the task (its labels, no duplicates, ``MIN_PER_LABEL`` to ``MAX_EXAMPLES``). Each
refusal is an ``ExamplesRefused`` naming the problem and its lines. Pure: no torch.
"""

from __future__ import annotations

import csv
import io
import json
from enum import Enum

from engine.errors import InvalidInput
from engine.tasks import MAX_HEAD_EXAMPLES, ClassifyExample, ClassifyTask

__all__ = ["DuplicateExamples", "ExampleFormat", "ExampleRow", "ExamplesEmpty", "ExamplesEncoding", "ExamplesRefused",
           "ExamplesTooLarge", "BadExampleRow", "MAX_EXAMPLES", "MAX_EXAMPLES_BYTES", "MAX_TEXT_CHARS",
           "MIN_PER_LABEL", "TooFewExamples", "UnknownLabels", "check_examples", "examples_jsonl", "parse_examples"]

MAX_EXAMPLES_BYTES = 2 * 2**20  # a body or a file; the admin route's own cap (ops.api.admin.body_limits)
MAX_EXAMPLES = MAX_HEAD_EXAMPLES  # 5,000: every example is read through the model
MIN_PER_LABEL = 8  # fewer cannot be cross-validated in five folds and held out in a meaningful way
MAX_TEXT_CHARS = 4000  # as one line to classify (engine.kinds.base.RequestLimits)
SHOWN = 10  # lines named in one refusal

ExampleRow = tuple[int, str, str]  # (line number, text, label)


class ExampleFormat(str, Enum):
    JSONL = "jsonl"
    CSV = "csv"
    TSV = "tsv"


class ExamplesRefused(InvalidInput):
    """The examples cannot be used as they are; nothing was saved."""


class ExamplesTooLarge(ExamplesRefused):
    """More bytes or more examples than the limits."""


class ExamplesEncoding(ExamplesRefused):
    """Not UTF-8 text."""


class ExamplesEmpty(ExamplesRefused):
    """No example at all."""


class BadExampleRow(ExamplesRefused):
    """A line that is not a text and a label in the format."""


class UnknownLabels(ExamplesRefused):
    """Labels the task does not have."""


class DuplicateExamples(ExamplesRefused):
    """The same text more than once (``pairs``: the line and the line it repeats)."""

    def __init__(self, message: str, pairs: list[tuple[int, int]]) -> None:
        super().__init__(message)
        self.pairs = pairs


class TooFewExamples(ExamplesRefused):
    """Fewer than ``MIN_PER_LABEL`` of some label (``counts``: per label)."""

    def __init__(self, message: str, counts: dict[str, int]) -> None:
        super().__init__(message)
        self.counts = counts


_CONTENT_TYPES = {"application/json": ExampleFormat.JSONL, "application/x-ndjson": ExampleFormat.JSONL,
                  "application/jsonl": ExampleFormat.JSONL, "application/x-jsonlines": ExampleFormat.JSONL,
                  "text/csv": ExampleFormat.CSV, "text/tab-separated-values": ExampleFormat.TSV}


def _lines(numbers: list[int]) -> str:
    shown = ", ".join(str(n) for n in numbers[:SHOWN])
    return shown + (f" and {len(numbers) - SHOWN} more" if len(numbers) > SHOWN else "")


def _format(text: str, content_type: str | None) -> ExampleFormat:
    declared = _CONTENT_TYPES.get((content_type or "").split(";")[0].strip().lower())
    if declared is not None:
        return declared
    first = next(line for line in text.splitlines() if line.strip()).lstrip()
    return ExampleFormat.JSONL if first.startswith("{") else ExampleFormat.TSV if "\t" in first else ExampleFormat.CSV


def _jsonl(text: str) -> list[ExampleRow]:
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BadExampleRow(f"Line {number} is not a JSON object ({exc.msg}).") from None
        if not isinstance(row, dict) or not isinstance(row.get("text"), str) or not isinstance(row.get("label"), str):
            raise BadExampleRow(f'Line {number} needs a "text" and a "label", both strings.')
        rows.append((number, row["text"], row["label"]))
    return rows


def _csv(text: str) -> list[ExampleRow]:
    reader = csv.reader(io.StringIO(text))
    try:
        header = [name.strip().lower() for name in next(reader)]
    except csv.Error as exc:
        raise BadExampleRow(f"Line 1 is not CSV ({exc}).") from None
    if "text" not in header or "label" not in header:
        raise BadExampleRow("A CSV needs a header line with the columns 'text' and 'label'; line 1 has "
                            f"{', '.join(repr(h) for h in header) or 'none'}.")
    at_text, at_label = header.index("text"), header.index("label")
    rows = []
    try:
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            if len(row) <= max(at_text, at_label):
                raise BadExampleRow(f"Line {reader.line_num} has {len(row)} columns; the header names {len(header)}.")
            rows.append((reader.line_num, row[at_text], row[at_label]))
    except csv.Error as exc:
        raise BadExampleRow(f"Line {reader.line_num} is not CSV ({exc}).") from None
    return rows


def _tsv(text: str) -> list[ExampleRow]:
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        text_part, tab, label = line.rpartition("\t")
        if not tab:
            raise BadExampleRow(f"Line {number} has no tab: each line is text<TAB>label.")
        if number == 1 and (text_part.strip().lower(), label.strip().lower()) == ("text", "label"):
            continue  # a header
        rows.append((number, text_part, label))
    return rows


def parse_examples(data: bytes, content_type: str | None = None) -> tuple[list[ExampleRow], ExampleFormat]:
    """The rows of a body or file, and its format (by ``content_type`` where it names one, else by its first line)."""
    if len(data) > MAX_EXAMPLES_BYTES:
        raise ExamplesTooLarge(f"The examples are {len(data)} bytes; the limit is {MAX_EXAMPLES_BYTES} bytes.")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ExamplesEncoding(f"The examples are not UTF-8 text (line {line}, byte {exc.start}); "
                               "save them as UTF-8.") from None
    if not text.strip():
        raise ExamplesEmpty("No examples: the body is empty.")
    kind = _format(text, content_type)
    rows = {ExampleFormat.JSONL: _jsonl, ExampleFormat.CSV: _csv, ExampleFormat.TSV: _tsv}[kind](text)
    rows = [(number, text.strip(), label.strip()) for number, text, label in rows]
    if not rows:
        raise ExamplesEmpty("No examples: there is a header but no rows.")
    return rows, kind


def _duplicates(rows: list[ExampleRow]) -> list[tuple[int, int]]:
    first: dict[str, int] = {}
    pairs = []
    for number, text, _ in rows:
        key = " ".join(text.split()).casefold()
        if key in first:
            pairs.append((number, first[key]))
        else:
            first[key] = number
    return pairs


def check_examples(rows: list[ExampleRow], task: ClassifyTask) -> tuple[ClassifyExample, ...]:
    """The examples, held against ``task`` (module doc); the first problem found is raised."""
    if len(rows) > MAX_EXAMPLES:
        raise ExamplesTooLarge(f"{len(rows)} examples; the limit is {MAX_EXAMPLES}.")
    empty = [number for number, text, _ in rows if not text]
    if empty:
        raise BadExampleRow(f"Empty text on line {_lines(empty)}.")
    long = [number for number, text, _ in rows if len(text) > MAX_TEXT_CHARS]
    if long:
        raise ExamplesTooLarge(f"Text over {MAX_TEXT_CHARS} characters on line {_lines(long)}.")
    unknown = [(number, label) for number, _, label in rows if label not in task.labels]
    if unknown:
        labels = sorted({label for _, label in unknown})
        raise UnknownLabels(f"Label{'s' if len(labels) > 1 else ''} {', '.join(repr(x) for x in labels[:SHOWN])} "
                            f"on line {_lines([n for n, _ in unknown])}: task {task.name!r} has the labels "
                            f"{', '.join(task.labels)}.")
    pairs = _duplicates(rows)
    if pairs:
        shown = "; ".join(f"line {line} repeats line {earlier}" for line, earlier in pairs[:SHOWN])
        more = f" and {len(pairs) - SHOWN} more" if len(pairs) > SHOWN else ""
        raise DuplicateExamples(f"{len(pairs)} duplicate text{'s' if len(pairs) > 1 else ''}: {shown}{more}. "
                                "Keep each text once.", pairs)
    counts = {label: sum(row[2] == label for row in rows) for label in task.labels}
    short = {label: n for label, n in counts.items() if n < MIN_PER_LABEL}
    if short:
        raise TooFewExamples(f"Too few examples: {', '.join(f'{label} has {n}' for label, n in short.items())}; "
                             f"each label needs at least {MIN_PER_LABEL}.", counts)
    return tuple(ClassifyExample(text, label) for _, text, label in rows)


def examples_jsonl(examples: tuple[ClassifyExample, ...]) -> bytes:
    """The stored form: one JSON object a line, as ``engine.tasks.read_head_examples`` reads it back."""
    return "".join(json.dumps({"text": e.text, "label": e.label}, ensure_ascii=False) + "\n"
                   for e in examples).encode("utf-8")
