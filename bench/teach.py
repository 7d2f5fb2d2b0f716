"""Teaching a task by example through the real app: a fit's time, its cost to another user, head against prompt.

    .venv/bin/python bench/teach.py [--think-s 0.5] [--backend auto] [--per-label 40] [--test-per-label 100]

The task: ``film`` (SST-2 sentences) against ``product`` (Yelp reviews), English both, every row from the
tuning part of its file (``bench/sentiment_split.py``): the held-out parts stay unseen. 1: another user's
sentiment p50 alone, then during a 100-example fit (ratio; and the fit's time). 2: a fit on ``--per-label``
examples a label; head and prompt on unseen tuning rows. docs/benchmarks.md, "Teaching a task by example".
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time

import httpx

from common import KNOWN, header, median, percentile, running_app
from sentiment_split import load_rows, select

TOKEN = "bench-teach"
TASK = "review_topic"
TABLE = {"kind": "classify", "title": "Film or product review", "labels": ["film", "product"],
         "instruction": "Is this text a review of a film (a movie), or of a product, a restaurant, a shop or a "
                        "service? Answer with one word: film or product."}
SOURCES = {"film": "sentiment_en_sst2_train", "product": "sentiment_en_yelp"}


def rows_of(label: str) -> list[str]:
    """The tuning part of the label's file, de-duplicated, in the split's order."""
    seen, texts = set(), []
    for row in select(load_rows(SOURCES[label]), "tuning"):
        if row["text"].strip().casefold() not in seen:
            seen.add(row["text"].strip().casefold())
            texts.append(row["text"].strip())
    return texts


def admin(url: str, method: str, path: str, **kwargs) -> httpx.Response:
    reply = httpx.request(method, f"{url}/admin/tasks/{path}", headers={"Authorization": f"Bearer {TOKEN}"},
                          timeout=120, **kwargs)
    if reply.status_code >= 400:
        raise SystemExit(f"{method} {path}: {reply.status_code} {reply.text}")
    return reply


def teach(url: str, examples: dict[str, list[str]]) -> tuple[float, dict]:
    """PUT the examples, POST the fit and wait for it; (seconds from POST to done, the report)."""
    lines = "".join(f"{text.replace(chr(9), ' ')}\t{label}\n" for label, texts in examples.items() for text in texts)
    admin(url, "PUT", f"{TASK}/examples", content=lines.encode("utf-8"))
    started = time.perf_counter()
    admin(url, "POST", f"{TASK}/fit")
    while True:
        fit = admin(url, "GET", TASK).json()["fit"]
        if fit["stage"] in ("done", "failed"):
            break
        time.sleep(0.25)
    if fit["stage"] == "failed":
        raise SystemExit(f"the fit failed: {fit['error']}")
    return time.perf_counter() - started, fit["result"]


class OtherUser:
    """One user: a sentiment request, the answer, ``think_s`` of thought, the next; latencies recorded."""

    def __init__(self, url: str, think_s: float) -> None:
        self.url, self.think_s = url, think_s
        self.latencies: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=120) as client:
            n = 0
            while not self._stop.is_set():
                text = KNOWN[n % len(KNOWN)][0]
                started = time.perf_counter()
                reply = client.post(self.url + "/v1/classify", json={"task": "sentiment", "input": [text]})
                reply.raise_for_status()
                self.latencies.append(time.perf_counter() - started)
                n += 1
                self._stop.wait(self.think_s)

    def start(self) -> "OtherUser":
        self._thread.start()
        return self

    def stop(self) -> list[float]:
        self._stop.set()
        self._thread.join(120)
        return self.latencies


def accuracy(url: str, tests: dict[str, list[str]], mode: str) -> float:
    correct = total = 0
    for label, texts in tests.items():
        for start in range(0, len(texts), 16):
            reply = httpx.post(url + "/v1/classify", timeout=300,
                               json={"task": TASK, "input": texts[start : start + 16], "mode": mode})
            reply.raise_for_status()
            answers = reply.json()["data"]
            assert {row["mode"] for row in answers} == {mode}, answers[0]
            correct += sum(row["label"] == label for row in answers)
            total += len(answers)
    return correct / total


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--think-s", type=float, default=0.5, help="the other user's pause between requests")
    parser.add_argument("--baseline-requests", type=int, default=40)
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--per-label", type=int, default=40, help="examples per label for the accuracy fit")
    parser.add_argument("--test-per-label", type=int, default=100)
    parser.add_argument("--parts", default="1,2", help="which measurements: 1 (the fit beside a user), 2 (accuracy)")
    args = parser.parse_args()
    header("teach a task by example")
    rows = {label: rows_of(label) for label in SOURCES}
    data_dir = tempfile.mkdtemp(prefix="allinone-teach-bench-")
    with running_app(["--backend", args.backend, "--log-dir", os.path.join(data_dir, "logs")],
                     env={"ALLINONE_ADMIN_TOKEN": TOKEN, "ALLINONE_DATA_DIR": data_dir}) as (_, url, ready_s):
        ready = httpx.get(url + "/ready").json()
        print(f"the app serves {ready['model']} on {ready['backend']['name']}, {ready['precision']['format']} "
              f"(ready in {ready_s:.1f} s)", flush=True)
        admin(url, "PUT", TASK, json=TABLE)

        parts = set(args.parts.split(","))
        if "1" in parts:
            fit_beside_a_user(url, rows, args.think_s, args.baseline_requests)
        if "2" in parts:
            head_against_prompt(url, rows, args.per_label, args.test_per_label)


def fit_beside_a_user(url: str, rows: dict[str, list[str]], think_s: float, baseline_requests: int) -> None:
    """Part 1: a 100-example fit while another user sends sentiment requests."""
    load = os.getloadavg()[0]  # a shared machine: say how busy it was
    user = OtherUser(url, think_s).start()
    while len(user.latencies) < baseline_requests:
        time.sleep(0.1)
    before = list(user.latencies)
    fit_s, report = teach(url, {label: texts[:50] for label, texts in rows.items()})
    during = user.stop()[len(before):]
    ratio = median(during) / median(before)
    print(f"\n1. a 100-example fit: {fit_s:.1f} s from POST to done (target < 60 s; reading the features "
          f"{report['read_seconds']:.1f} s, the rest the fit); layer {report['layer']}, cross-validated accuracy "
          f"{report['cv_accuracy']:.3f}")
    print(f"   another user (think {think_s} s): p50 {median(before):.3f} s before ({len(before)} requests), "
          f"{median(during):.3f} s during ({len(during)}): {ratio:.2f}x (target <= 1.5x); p95 "
          f"{percentile(before, 95):.3f} -> {percentile(during, 95):.3f} s; load average {load:.1f} before, "
          f"{os.getloadavg()[0]:.1f} after", flush=True)


def head_against_prompt(url: str, rows: dict[str, list[str]], per_label: int, test_per_label: int) -> None:
    """Part 2: a fit on ``per_label`` examples a label; head and prompt on unseen rows."""
    teaching = {label: texts[:per_label] for label, texts in rows.items()}
    first = max(per_label, 50)  # past the rows part 1 taught
    tests = {label: texts[first : first + test_per_label] for label, texts in rows.items()}
    fit_s, report = teach(url, teaching)
    head, prompt = accuracy(url, tests, "head"), accuracy(url, tests, "prompt")
    held = report["held_out"]
    print(f"\n2. {per_label} examples a label ({fit_s:.1f} s): layer {report['layer']}, cross-validated "
          f"accuracy {report['cv_accuracy']:.3f}, confusion {report['confusion']} ({report['labels']}); its "
          f"held-out fifth: prompt {held['prompt_accuracy']:.3f}, head {held['head_accuracy']:.3f}")
    print(f"   on {sum(map(len, tests.values()))} unseen rows: head {head:.3f}, prompt {prompt:.3f} "
          f"(target: head >= 0.85 and above the prompt)", flush=True)


if __name__ == "__main__":
    main()
