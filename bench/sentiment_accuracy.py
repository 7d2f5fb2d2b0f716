"""Sentiment accuracy on the four shared files, with 95 % intervals, and what one answer costs.

    .venv/bin/python bench/sentiment_accuracy.py [--part held-out|tuning|all] [--limit N]
        [--backend torch|llamacpp|auto] [--precision auto|fp32|bf16|int8] [--model-dir DIR] [--task NAME]
        [--tasks-file PATH]
    .venv/bin/python bench/sentiment_accuracy.py --url http://127.0.0.1:7860 [--part ...] [--limit N]
    common options: [--files F1,F2] [--dump scores.jsonl]  (--dump: every row's scores, for
    bench/calibrate_bias.py)

Every file in ../shared/data is split once by bench/sentiment_split.py (per
label, 40 % tuning, 60 % held-out, by SHA-256 of the text). Prompt work may
look at the tuning part; the held-out part (the default here) is never used
to choose anything, only to report, so its figure stands for the unseen data
the product is judged on. In-process (default), the engine runs label
scoring in batches of 16; ``--tasks-file`` measures a candidate classify task
from another TOML the same way. ``--url`` asks a live app's ``/<task>`` API
through gradio_client, one text per request from 4 threads, as users do.
Prints the header, a line per file, then Markdown tables for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections import Counter
import json
import math
import shlex
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from common import cpu_flags_line, header, load_engine, median
from sentiment_split import FILES, LABELS, PARTS, TUNING_SHARE, balanced_head, load_rows, select, split

SHORT = "The staff were friendly and the room was spotless."  # the sentence bench/precision.py times too
SHORT_RUNS = 10
BATCH = 16  # the engine's max_batch: one forward pass per batch in-process
BATCH_RUNS = 3
URL_THREADS = 4  # a few users at once, each waiting for their own answer
URL_TRIES = 3  # a request that fails this often counts as a wrong answer (and is reported as an error)
Z95 = 1.959964


def wilson(correct: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval for ``correct`` of ``n``: unlike p +- z*se it stays inside [0, 1]
    and keeps its coverage near 0 and 1, where good classifiers sit."""
    if n == 0:
        return 0.0, 1.0
    p = correct / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class Answer:
    label: str | None  # None: the request failed
    truncated: bool = False
    scores: dict[str, float] | None = None  # label -> probability (for --dump)
    mode: str | None = None  # the mode that answered (prompt or head)


class InProcess:
    """The engine in this process: what the model and the prompt themselves give and cost."""

    def __init__(self, model_dir: Path | None, precision: str, task: str, tasks_file: Path,
                 backend: str = "torch") -> None:
        from engine.errors import ConfigError
        from engine.tasks import ClassifyTask, load_tasks

        # Read the registry before the model (seconds, not a minute) so a bad candidate file fails at once.
        try:
            tasks = load_tasks(tasks_file)
        except ConfigError as exc:
            raise SystemExit(str(exc)) from None
        spec = tasks.tasks.get(task)
        if spec is None:
            raise SystemExit(f"{tasks_file} defines no task {task!r} (it has: {', '.join(tasks.tasks)})")
        if not isinstance(spec, ClassifyTask) or not set(LABELS) <= set(spec.labels):
            raise SystemExit(f"{tasks_file}: {task!r} must be a classify task with the labels {list(LABELS)}")
        # 600 s: a batch of 16 long Chinese reviews on a busy 2-core machine takes far longer than an
        # interactive request may.
        self.engine = load_engine(model_dir, precision, tasks=tasks, backend=backend, request_timeout_s=600)
        self.task = task
        info = self.engine.backend.info
        self.description = (f"in-process engine: {info.label} on {info.backend}, {info.precision} "
                            f"({info.precision_reason}), "
                            f"task {task!r} from {tasks_file}, batches of {BATCH}")
        self.precision = info.precision

    def run(self, texts: list[str], mode: str = "auto") -> list[Answer]:
        answers = []
        for i in range(0, len(texts), BATCH):
            results = self.engine.classify(self.task, texts[i: i + BATCH], mode)
            answers += [Answer(r.label, r.truncated, r.scores, r.mode.value) for r in results]
        return answers

    def close(self) -> None:
        self.engine.close()


class OverHttp:
    """A live app through its Gradio API: the number users get, queue and all."""

    def __init__(self, url: str, task: str) -> None:
        import httpx
        from gradio_client import Client

        try:
            ready = httpx.get(url.rstrip("/") + "/ready", timeout=10)
            body = ready.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise SystemExit(f"{url}/ready does not answer as this app does: {exc}") from exc
        if ready.status_code != 200:
            raise SystemExit(f"{url} is not ready: {body.get('state')} {body.get('reason') or ''}")
        self.precision = (body.get("precision") or {}).get("format", "?")
        self.description = (f"live app {url}: {body.get('model')}, {self.precision}, API /{task}, "
                            f"one text per request from {URL_THREADS} threads")
        self.client = Client(url, verbose=False)
        self.api_name = f"/{task}"
        self.errors: list[str] = []
        self._lock = threading.Lock()

    def one(self, text: str, mode: str = "auto") -> Answer:
        for attempt in range(URL_TRIES):
            try:
                result = self.client.predict(text, mode, api_name=self.api_name)
                return Answer(result["label"], bool(result.get("truncated")), result.get("scores"), result.get("mode"))
            except Exception as exc:  # noqa: BLE001  (any failure a user would see: AppError, HTTP, timeout)
                error = f"{type(exc).__name__}: {exc}"
                time.sleep(1 + attempt)  # a recovering app asks to "retry shortly", and users do
        with self._lock:
            self.errors.append(error)
        return Answer(None)

    def run(self, texts: list[str], mode: str = "auto") -> list[Answer]:
        with ThreadPoolExecutor(URL_THREADS) as pool:
            return list(pool.map(lambda text: self.one(text, mode), texts))

    def close(self) -> None:
        self.client.close()


@dataclass(frozen=True)
class FileResult:
    name: str
    n: int
    correct: int
    recall: dict[str, tuple[int, int]]  # label -> (right, rows with that label)
    seconds: float
    errors: int
    truncated: int
    answered_by: dict[str, int] = dataclasses.field(default_factory=dict)  # mode -> answers it gave

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else 0.0


def evaluate(classifier, name: str, rows: list[dict], dump=None, mode: str = "auto") -> FileResult:
    started = time.perf_counter()
    answers = classifier.run([r["text"] for r in rows], mode)
    seconds = time.perf_counter() - started
    if dump is not None:  # one line per row, for fitting a calibration offline (bench/calibrate_bias.py)
        tuning = {r["text"] for r in split(load_rows(name))[0]}
        for row, answer in zip(rows, answers):
            dump.write(json.dumps({"file": name, "part": "tuning" if row["text"] in tuning else "held-out",
                                   "label": row["label"], "predicted": answer.label, "scores": answer.scores,
                                   "mode": answer.mode}, ensure_ascii=False) + "\n")
    recall = {label: (sum(a.label == label for a, r in zip(answers, rows) if r["label"] == label),
                      sum(r["label"] == label for r in rows)) for label in LABELS}
    return FileResult(name, len(rows), sum(a.label == r["label"] for a, r in zip(answers, rows)), recall,
                      seconds, sum(a.label is None for a in answers), sum(a.truncated for a in answers),
                      dict(Counter(a.mode for a in answers if a.mode)))


def pooled(results: list[FileResult]) -> FileResult:
    recall = {label: (sum(r.recall[label][0] for r in results), sum(r.recall[label][1] for r in results))
              for label in LABELS}
    return FileResult(f"all {len(results)} (pooled)", sum(r.n for r in results), sum(r.correct for r in results),
                      recall, sum(r.seconds for r in results), sum(r.errors for r in results),
                      sum(r.truncated for r in results))


def cost(classifier, mode: str = "auto") -> tuple[float, float]:
    """(p50 seconds of one short sentence sent alone, texts/s of a batch of 16), warm."""
    classifier.run([SHORT], mode)
    times = []
    for _ in range(SHORT_RUNS):
        started = time.perf_counter()
        classifier.run([SHORT], mode)
        times.append(time.perf_counter() - started)
    # Sixteen different texts: a real batch, not one cached answer repeated.
    batch = [f"{SHORT} ({i})" for i in range(BATCH)]
    classifier.run(batch, mode)
    started = time.perf_counter()
    for _ in range(BATCH_RUNS):
        classifier.run(batch, mode)
    return median(times), BATCH * BATCH_RUNS / (time.perf_counter() - started)


def describe_line(r: FileResult) -> str:
    low, high = wilson(r.correct, r.n)
    recall = ", ".join(f"{label} {right}/{total}" for label, (right, total) in r.recall.items())
    answered = ", ".join(f"{n} by {mode}" for mode, n in sorted(r.answered_by.items())) or "mode not reported"
    return (f"{r.name}: accuracy {r.accuracy:.3f} ({r.correct}/{r.n}, 95 % CI {low:.3f}-{high:.3f}), "
            f"recall {recall}, {r.n / r.seconds:.1f} texts/s, {r.errors} errors, {r.truncated} truncated, "
            f"answered {answered}")


def print_tables(results: list[FileResult], part: str, precision: str, url: bool, p50: float, rate: float,
                 mode: str) -> None:
    print(f"mode asked: {mode}\n")
    print("| file | part | n | accuracy (95 % CI) | " + " | ".join(f"recall {label}" for label in LABELS)
          + " | texts/s |")
    print("|---" * (5 + len(LABELS)) + "|")
    for r in results + ([pooled(results)] if len(results) > 1 else []):
        low, high = wilson(r.correct, r.n)
        recall = " | ".join(f"{right / max(1, total):.3f}" for right, total in r.recall.values())
        print(f"| {r.name} | {part} | {r.n} | {r.accuracy:.3f} ({low:.3f}-{high:.3f}) | {recall} "
              f"| {r.n / r.seconds:.1f} |")
    notes = [f"{r.name} {r.errors} failed requests (counted wrong)" for r in results if r.errors]
    notes += [f"{r.name} {r.truncated} of {r.n} texts truncated to the input cap" for r in results if r.truncated]
    if notes:
        print("\nNotes: " + "; ".join(notes) + ".")
    batch = f"{BATCH} texts from {URL_THREADS} threads" if url else f"batch of {BATCH}"
    print(f"\n| engine | format | 1 short sentence alone, p50 | {batch}, texts/s |")
    print("|---|---|---|---|")
    print(f"| {'live app (gradio_client)' if url else 'in-process'} | {precision} | {p50:.3f} s | {rate:.1f} |\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=PARTS, default="held-out")
    parser.add_argument("--files", default=",".join(FILES), help="comma-separated (default: all four)")
    parser.add_argument("--dump", type=Path, help="write every row's label, answer, scores and part here (JSONL)")
    parser.add_argument("--limit", type=int, default=0, help="rows per file, labels in turn (0 = the whole part)")
    parser.add_argument("--task", default="sentiment", help="the classify task to measure")
    parser.add_argument("--tasks-file", type=Path, help="a task registry (default engine/tasks.toml); in-process only")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16", "int8"), help="in-process only (default auto)")
    parser.add_argument("--model-dir", type=Path, help="in-process only (default models/current)")
    parser.add_argument("--backend", choices=("torch", "llamacpp", "auto"), help="in-process only (default torch)")
    parser.add_argument("--url", help="measure a live app through its Gradio API instead")
    parser.add_argument("--modes", default="auto",
                        help="comma-separated classify modes to measure in turn, in one run: auto, prompt, head "
                             "(engine/heads.py); each gets its table, and its latency")
    args = parser.parse_args()
    if args.limit < 0:
        parser.error("--limit must be 0 (all) or more")
    if set(args.modes.split(",")) - {"auto", "prompt", "head"}:
        parser.error("--modes: auto, prompt or head (comma-separated)")
    unknown = set(args.files.split(",")) - set(FILES)
    if unknown:
        parser.error(f"unknown file(s) {', '.join(sorted(unknown))}; known: {', '.join(FILES)}")
    if args.url and (args.tasks_file or args.precision or args.model_dir or args.backend):
        parser.error("--tasks-file, --backend, --precision and --model-dir describe an in-process engine; "
                     "not with --url")

    header(f"sentiment accuracy, part: {args.part}")
    print(cpu_flags_line())
    print("command: .venv/bin/python bench/sentiment_accuracy.py " + shlex.join(sys.argv[1:]))
    print(f"split: per label, by SHA-256 of the text, {TUNING_SHARE:.0%} tuning / {1 - TUNING_SHARE:.0%} held-out "
          "(bench/sentiment_split.py)", flush=True)
    if args.url:
        classifier = OverHttp(args.url, args.task)
    else:
        from engine.tasks import DEFAULT_TASKS_FILE

        classifier = InProcess(args.model_dir, args.precision or "auto", args.task,
                               args.tasks_file or DEFAULT_TASKS_FILE, args.backend or "torch")
    print(classifier.description, flush=True)
    dump = open(args.dump, "w", encoding="utf-8") if args.dump else None
    tables = []
    try:
        for mode in args.modes.split(","):
            results = []
            for name in args.files.split(","):
                rows = select(load_rows(name), args.part)
                if args.limit:
                    rows = balanced_head(rows, args.limit)
                results.append(evaluate(classifier, name, rows, dump, mode))
                results[-1] = dataclasses.replace(results[-1], name=name.removeprefix("sentiment_"))
                print(f"[{mode}] " + describe_line(results[-1]), flush=True)
            tables.append((mode, results, *cost(classifier, mode)))
    finally:
        classifier.close()
        if dump is not None:
            dump.close()
    if args.url and classifier.errors:
        print(f"first failed request: {classifier.errors[0]}")
    print()
    for mode, results, p50, rate in tables:
        print_tables(results, args.part, classifier.precision, bool(args.url), p50, rate, mode)


if __name__ == "__main__":
    main()
