"""``/classify_file`` through ``gradio_client``: a file and a task in, a CSV out (label ids), worked
through in requests that keep within the per-request limits; every refusal names the limit or the line."""

from __future__ import annotations

import csv
import re

import httpx
import pytest
from gradio_client import Client, handle_file


@pytest.fixture(scope="module")
def client(live_app):
    return Client(live_app.url, verbose=False)


def _rows(path: str) -> list[dict]:
    with open(path, encoding="utf-8-sig", newline="") as f:
        return list(csv.DictReader(f))


def _requests(url: str) -> float:
    text = httpx.get(url + "/metrics").text
    found = re.search(r'allinone_requests_total\{outcome="ok",task="sentiment"\} ([0-9.]+)', text)
    return float(found.group(1)) if found else 0.0


def test_the_endpoint_takes_a_file_and_a_task(client):
    params = client.view_api(print_info=False, return_format="dict")["named_endpoints"]["/classify_file"]["parameters"]
    assert [p["parameter_name"] for p in params] == ["file", "task"]


def test_a_csv_file_in_a_csv_file_out_with_label_ids(client, tmp_path):
    source = tmp_path / "reviews.csv"
    source.write_text('id,Text,stars\n1,"Great food, friendly staff",5\n2,很好吃，下次还来。,5\n3,Cold soup,1\n',
                      encoding="utf-8")
    out = client.predict(handle_file(source), "sentiment", api_name="/classify_file")
    assert out.endswith("reviews-labels.csv")
    rows = _rows(out)
    assert [r["text"] for r in rows] == ["Great food, friendly staff", "很好吃，下次还来。", "Cold soup"]
    assert list(rows[0]) == ["text", "label", "confidence", "mode"]
    assert all(r["label"] in ("positive", "negative") and 0.5 <= float(r["confidence"]) <= 1 for r in rows)
    assert {r["mode"] for r in rows} == {"prompt"}  # no head for the tiny model: auto answers by prompt


def test_a_long_file_goes_in_requests_within_the_line_limit(client, live_app, tmp_path):
    """150 lines with the default 64 lines a request: three requests, in order, each one counted."""
    source = tmp_path / "long.txt"
    source.write_text("\n".join(f"review number {i}" for i in range(150)), encoding="utf-8")
    before = _requests(live_app.url)
    rows = _rows(client.predict(handle_file(source), "sentiment", api_name="/classify_file"))
    assert [r["text"] for r in rows] == [f"review number {i}" for i in range(150)]
    assert _requests(live_app.url) - before == 3


@pytest.mark.parametrize("name, content, message", [
    ("notes.md", b"hello", "Only .txt and .csv files can be classified, not notes.md."),
    ("empty.txt", b"\n\n", "The file has no text to classify."),
    ("latin1.txt", "ok\nCaf\xe9".encode("latin-1"), "The file is not UTF-8 text (line 2)."),
    ("long.txt", b"fine\n" + b"x" * 4001, "Line 2 is 4001 characters long; the limit is 4000 per line."),
    ("many.txt", b"a\n" * 5001, "The file has 5001 texts; the limit is 5000 per file."),
    ("big.csv", b"text\n" + (b"y" * 999 + b"\n") * 2700, "The file is 2.6 MB; the limit is 2.0 MB per file."),
])
def test_refusals_name_the_limit_and_never_crash(client, tmp_path, name, content, message):
    source = tmp_path / name
    source.write_bytes(content)
    with pytest.raises(Exception) as refused:
        client.predict(handle_file(source), "sentiment", api_name="/classify_file")
    assert message in str(refused.value) and "Traceback" not in str(refused.value)


def test_a_task_that_does_not_classify_is_refused_by_name(client, tmp_path):
    source = tmp_path / "ok.txt"
    source.write_text("hello\n", encoding="utf-8")
    with pytest.raises(Exception, match="Unknown task 'nope'"):
        client.predict(handle_file(source), "nope", api_name="/classify_file")
    assert client.predict("still fine", api_name="/sentiment")["label"] in ("positive", "negative")


class _Service:
    """Classifies by length; the worker is lost once, on the second request, when asked to."""

    def __init__(self, lose_once: bool = False) -> None:
        self.requests: list[int] = []
        self.lose_once = lose_once

    def classify(self, task, texts, mode="auto"):
        from engine.errors import WorkerLost
        from engine.kinds.classify import ClassifyResult
        from engine.types import ClassifyMode

        self.requests.append(len(texts))
        if self.lose_once and len(self.requests) == 2:
            self.lose_once = False
            raise WorkerLost()
        return [ClassifyResult(task, "long" if len(t) > 5 else "short", 0.75, {}, False, ClassifyMode.PROMPT)
                for t in texts]


@pytest.mark.parametrize("lose_once", [False, True])
def test_a_file_goes_in_requests_of_max_lines_and_survives_a_recovery(tmp_path, lose_once):
    """A request stopped by a recovery (WorkerLost) is sent again, once: a long file keeps its work."""
    from engine.kinds.base import RequestLimits
    from ui.file_panel import FileDoor
    from ui.viewer import Viewer

    source = tmp_path / "lines.txt"
    source.write_text("\n".join("x" * (i % 9) or "y" for i in range(25)), encoding="utf-8")
    service, progress = _Service(lose_once), []
    rows = FileDoor(service, RequestLimits(max_lines=10)).classify(
        "sentiment", str(source), "auto", lambda done, **_: progress.append(done), Viewer())
    assert [r[0] for r in rows] == [("x" * (i % 9) or "y") for i in range(25)]
    assert service.requests == ([10, 10, 10, 5] if lose_once else [10, 10, 5])
    assert progress == [(0, 25), (10, 25), (20, 25), (25, 25)]
    assert {r[1] for r in rows} == {"long", "short"}
