"""Classifying a file: rows/s through ``/classify_file`` against the same texts as multi-line inputs.

    python bench/classify_file.py [--lines 500] [--rounds 2] [app.py flags...]

Starts ``app.py`` (``models/current``) and sends the same short English and Chinese reviews two ways,
interleaved: as multi-line inputs of the most lines one request may carry (``--max-lines``, 64), one
after another (``POST /v1/classify``), and as one .txt file (``/classify_file``), which the server cuts
into requests of that size itself. Target: the file's rows/s within 10 % of the multi-line inputs'.
Each pass is also split into the model's time (the requests' latencies, from the app's perf log) and
the rest (the path's own cost), which a busy machine slows far less than the model.
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import tempfile
import time
from pathlib import Path

from common import DATA, header, machine, running_app

FILES = ("sentiment_en_sst2_train.jsonl", "sentiment_zh_reviews.jsonl")
MAX_CHARS = 200  # short reviews, as a class would paste them


def texts(lines: int) -> list[str]:
    """``lines`` texts, English and Chinese alternating, each at most ``MAX_CHARS`` long."""
    sources = [[t for t in (json.loads(row)["text"].strip() for row in open(DATA / name, encoding="utf-8"))
                if t and "\n" not in t and len(t) <= MAX_CHARS] for name in FILES]
    return [sources[i % 2][i // 2] for i in range(lines)]


def multi_line(url: str, lines: list[str], per_request: int) -> float:
    """Seconds for ``lines`` sent as multi-line inputs of ``per_request`` lines, one after another."""
    import httpx

    started = time.perf_counter()
    for start in range(0, len(lines), per_request):
        reply = httpx.post(url + "/v1/classify", json={"task": "sentiment", "input": lines[start:start + per_request]},
                           timeout=300)
        if reply.status_code != 200:
            raise SystemExit(f"/v1/classify answered {reply.status_code}: {reply.text[:300]}")
        assert len(reply.json()["data"]) == len(lines[start:start + per_request])
    return time.perf_counter() - started


def model_seconds(perf_log: Path, skip: int) -> tuple[float, int]:
    """The summed latency of the requests the app logged after its first ``skip`` lines, and the lines."""
    lines = perf_log.read_text(encoding="utf-8").splitlines()
    return sum(json.loads(line)["record"]["extra"]["latency_s"] for line in lines[skip:]), len(lines)


def through_file(client, path: Path, count: int) -> float:
    from gradio_client import handle_file

    started = time.perf_counter()
    out = client.predict(handle_file(path), "sentiment", api_name="/classify_file")
    seconds = time.perf_counter() - started
    assert len(Path(out).read_text(encoding="utf-8-sig").splitlines()) == count + 1
    return seconds


def _stopped(*_) -> None:
    raise SystemExit(143)  # so that the app it started is stopped too (the finally in main)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--per-request", type=int, default=64, help="the app's --max-lines")
    args, app_args = parser.parse_known_args()
    signal.signal(signal.SIGTERM, _stopped)
    import httpx
    from gradio_client import Client

    header("Classifying a file against multi-line inputs")
    lines = texts(args.lines)
    folder = Path(tempfile.mkdtemp(prefix="bench-file-"))
    path = folder / "reviews.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with running_app(["--log-dir", str(folder / "logs"), "--max-lines", str(args.per_request),
                      *app_args]) as (_, url, cold):
        ready = httpx.get(url + "/ready").json()
        print(f"model {ready['model']}, {ready['backend']['name']} ({ready['backend']['reason']}), "
              f"weights {ready['precision']['format']}; ready in {cold:.1f} s; {machine()}", flush=True)
        heads = ready.get("heads", {}).get("sentiment", {})
        print(f"sentiment head: {heads.get('status', 'none')} (mode auto answers by "
              f"{'head' if heads.get('status') == 'ready' else 'prompt'})", flush=True)
        client = Client(url, verbose=False)
        multi_line(url, lines[:args.per_request], args.per_request)  # warm-up: first-call costs
        perf_log = folder / "logs" / "perf.log"
        time.sleep(1.0)  # the warm-up's log line, which is no pass's
        _, seen = model_seconds(perf_log, 0)
        rates: dict[str, list[float]] = {"multi-line inputs": [], "/classify_file": []}
        model: list[float] = []
        own: dict[str, list[float]] = {"multi-line inputs": [], "/classify_file": []}
        for round_ in range(1, args.rounds + 1):
            for name, run in (("multi-line inputs", lambda: multi_line(url, lines, args.per_request)),
                              ("/classify_file", lambda: through_file(client, path, len(lines)))):
                seconds = run()
                time.sleep(0.5)  # the last request's log line
                in_model, seen = model_seconds(perf_log, seen)
                rates[name].append(len(lines) / seconds)
                model.append(in_model)
                own[name].append(seconds - in_model)
                print(f"round {round_}: {name:18s} {len(lines)} lines in {seconds:6.1f} s = "
                      f"{len(lines) / seconds:5.1f} rows/s (model {in_model:6.1f} s, "
                      f"the rest {seconds - in_model:5.2f} s)", flush=True)
        base, files = statistics.median(rates["multi-line inputs"]), statistics.median(rates["/classify_file"])
        print(f"median rows/s: multi-line inputs {base:.1f}, /classify_file {files:.1f}; "
              f"file / multi-line = {files / base:.3f} (target >= 0.90: {'met' if files / base >= 0.9 else 'NOT met'})")
        m = statistics.median(model)
        cost = {name: statistics.median(values) for name, values in own.items()}
        equal = (m + cost["multi-line inputs"]) / (m + cost["/classify_file"])
        print(f"at the median model time ({m:.1f} s a pass): the rest is {cost['multi-line inputs']:.2f} s for the "
              f"multi-line inputs and {cost['/classify_file']:.2f} s for the file; file / multi-line = {equal:.3f}")


if __name__ == "__main__":
    main()
