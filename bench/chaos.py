"""Chaos report: faults against the running app under steady traffic, one row per fault.

    .venv/bin/python bench/chaos.py [--faults all|sigkill,sigstop,...] [--clients 4] [--store DIR]
                                    [--backend auto] [--spare-worker]

Builds a store under ``--store`` (once; the default model twice, versions
``a`` and ``b``: about 5 GB), starts ``python app.py`` on it serving ``b``
with ``--fault-injection`` (default watchdog settings: vitals every 2 s,
hang limit 10 s), keeps ``--clients`` users busy (sentiment with known
answers; one of them chats with a question whose answer is checked), applies
each fault in turn, waits until the app is ready again, and reports per fault:

- how it was detected (the recovery cause that was counted) and after how
  long, and the time until ``/ready`` is 200 again;
- requests that failed: in flight (sent before the fault), sent after the
  fault but before it was detected, and sent after detection; and wrong
  answers (any);
- the web process's RSS and the worker's own resident memory (as the app
  exports them; the worker's without the model files' page-cache pages)
  before the fault and after recovery.

The faults (``--faults all`` runs them in this order; the two that damage the
store come last): ``sigkill`` and ``sigstop`` of the worker, the ``nan-weights``
and ``exit`` drills, ``hang`` and ``hang-x10`` (ten in a row: worker RSS after
the last against the first ready value, and web RSS growth, the leak a hung
thread used to cause), ``history`` (a 400-message chat history: refused at
once? other users' sentiment p50 against the same users without it),
``streams`` (100 chats opened and dropped mid-answer), ``flood`` (far more
requests at once than the queue holds), ``bad-input`` (malformed JSON, wrong
types, invalid UTF-8 and lone surrogates on every route: any 5xx or
traceback?), ``injection`` (prompt injection on sentiment: labels that flip),
``logdir`` (a second instance whose log directory cannot be written),
``trap`` (the sequence that once ended in an outage: a version ``c`` that
fails its self-test is activated and rolled back, so ``current``'s previous
is the rejected ``c``; one weight file of the serving ``b`` is overwritten;
then a hang: it must end with the intact ``a`` serving, never ``failed``),
``overwrite`` (one weight file of the serving version overwritten; with
nothing left to go back to by then) and ``delete`` (the serving version's
directory deleted). The table at the end goes into ``docs/reliability.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from common import KNOWN, REPO, free_port, header, install_broken_copy, running_app, store_cli
from injection import load_cases

TOKEN = "chaos-token"
CHAT = ("What is 2 + 3? Answer with just the number.", "5")
ALL = ("sigkill,sigstop,nan-weights,exit,hang,hang-x10,history,streams,flood,bad-input,injection,logdir,trap,"
       "overwrite,delete")
INJECTION_CASES = 6  # the injection fault sends the first six of bench/data/injection_cases.jsonl, injected


@dataclass(frozen=True)
class Attempt:
    kind: str  # sentiment or chat
    started: float
    ended: float
    ok: bool
    wrong: bool = False
    error: str = ""


class Traffic:
    """Users sending requests back to back, each attempt recorded; a watcher samples /ready."""

    def __init__(self, url: str, clients: int) -> None:
        self.url = url
        self.clients = clients
        self.attempts: list[Attempt] = []
        self.samples: list[tuple[float, str, int | None]] = []  # (time, state, worker pid)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._user, args=(i, i == 0 and clients > 1), daemon=True)
                         for i in range(clients)]
        self._threads.append(threading.Thread(target=self._watch, daemon=True))

    def _user(self, i: int, chats: bool) -> None:
        from gradio_client import Client

        client = Client(self.url, verbose=False)
        kind = "chat" if chats else "sentiment"
        n = i
        while not self._stop.is_set():
            self._attempt(client, kind, n)
            n += 1
            time.sleep(0.05)

    def _attempt(self, client, kind: str, n: int) -> None:
        """One request of ``kind`` (sentiment: the ``n``th known answer, round the list), recorded."""
        started = time.monotonic()
        try:
            if kind == "chat":
                got = client.predict(CHAT[0], api_name="/chat")
                attempt = Attempt(kind, started, time.monotonic(), True, wrong=CHAT[1] not in got)
            else:
                text, expected = KNOWN[n % len(KNOWN)]
                got = client.predict(text, api_name="/sentiment")["label"]
                attempt = Attempt(kind, started, time.monotonic(), True, wrong=got != expected)
        except Exception as exc:  # noqa: BLE001 - every failure is a data point
            attempt = Attempt(kind, started, time.monotonic(), False, error=str(exc)[:120])
        with self._lock:
            self.attempts.append(attempt)

    def _watch(self) -> None:
        while not self._stop.is_set():
            try:
                body = httpx.get(self.url + "/ready", timeout=2).json()
                sample = (time.monotonic(), body["state"], body.get("worker_pid"))
            except (httpx.HTTPError, ValueError):
                sample = (time.monotonic(), "unreachable", None)
            with self._lock:
                self.samples.append(sample)
            time.sleep(0.1)

    def start(self) -> "Traffic":
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(90)

    def since(self, t: float) -> tuple[list[Attempt], list[tuple[float, str, int | None]]]:
        with self._lock:
            return ([a for a in self.attempts if a.ended >= t], [s for s in self.samples if s[0] >= t])


def memory(url: str) -> tuple[int, int]:
    """(web RSS, worker's own resident memory) in bytes, as the app itself measures and exports them
    (the worker's without the model files' page-cache pages, which a swap's two workers share)."""
    return int(metric(url, "process_resident_memory_bytes")), int(metric(url, "allinone_worker_resident_memory_bytes"))


def recoveries(url: str) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(url + "/metrics", timeout=5).text
    return {s.labels["cause"]: s.value for f in text_string_to_metric_families(text) for s in f.samples
            if s.name == "allinone_recoveries_total"}


def wait_spare(url: str, timeout: float = 300.0) -> float:
    """Wait until the app's warm spare is parked (``--spare-worker``); returns the seconds waited."""
    started = time.monotonic()
    while httpx.get(url + "/ready", timeout=5).json().get("spare_pid") is None:
        if time.monotonic() - started > timeout:
            raise SystemExit("the warm spare never came up")
        time.sleep(0.5)
    return time.monotonic() - started


def worker_pid(url: str) -> int | None:
    return httpx.get(url + "/ready", timeout=5).json().get("worker_pid")


def inject(kind: str, url: str) -> None:
    if kind == "sigkill":
        os.kill(worker_pid(url), signal.SIGKILL)
    elif kind == "sigstop":
        os.kill(worker_pid(url), signal.SIGSTOP)
    else:
        httpx.post(f"{url}/admin/fault/{kind}", headers={"Authorization": f"Bearer {TOKEN}"},
                   timeout=10).raise_for_status()


def one_fault(kind: str, url: str, web_pid: int, traffic: Traffic, timeout: float = 180.0) -> dict:
    """Apply one fault and follow it until the app is ready on a new worker."""
    time.sleep(3)  # steady traffic first
    before_pid, before_causes = worker_pid(url), recoveries(url)
    web_before, worker_before = memory(url)
    t0 = time.monotonic()
    inject(kind, url)
    detected = ready = None
    while time.monotonic() - t0 < timeout and ready is None:
        time.sleep(0.2)
        _, samples = traffic.since(t0)
        for at, state, pid in samples:
            if detected is None and (state != "ready" or pid != before_pid):
                detected = at
            if detected is not None and state == "ready" and pid not in (None, before_pid):
                ready = at
                break
    time.sleep(3)  # and after: requests sent once it is back must succeed too
    attempts, _ = traffic.since(t0)
    web_after, worker_after = memory(url)
    after_causes = recoveries(url)
    causes = [c for c in after_causes if after_causes[c] > before_causes.get(c, 0)]
    cut = detected if detected is not None else t0
    return {
        "fault": kind,
        "t0": t0,  # when it hit (monotonic), for a caller that looks around it
        "detected_by": ",".join(causes) or "-",
        "detected_s": None if detected is None else round(detected - t0, 1),
        "ready_s": None if ready is None else round(ready - t0, 1),
        "requests": len(attempts),
        "failed_in_flight": sum(not a.ok and a.started < t0 for a in attempts),
        "failed_before_detection": sum(not a.ok and t0 <= a.started < cut for a in attempts),
        "failed_after_detection": sum(not a.ok and a.started >= cut for a in attempts),
        "errors": sorted({a.error for a in attempts if not a.ok}),
        "wrong_answers": sum(a.wrong for a in attempts),
        "worker_rss_mib": [round(worker_before / 2**20), round(worker_after / 2**20)],
        "web_rss_mib": [round(web_before / 2**20), round(web_after / 2**20)],
    }


def repeated_hangs(url: str, web_pid: int, traffic: Traffic, times: int, first_worker_rss: int) -> dict:
    web_before, _ = memory(url)
    rows = [one_fault("hang", url, web_pid, traffic) for _ in range(times)]
    web_after, worker_after = memory(url)
    return {
        "fault": f"hang x{times}",
        "detected_by": ",".join(sorted({r["detected_by"] for r in rows})),
        "detected_s": max(r["detected_s"] or 0 for r in rows),
        "ready_s": max(r["ready_s"] or float("inf") for r in rows),
        "ready_s_median": statistics.median(r["ready_s"] or float("inf") for r in rows),
        "requests": sum(r["requests"] for r in rows),
        "failed_in_flight": sum(r["failed_in_flight"] for r in rows),
        "failed_before_detection": sum(r["failed_before_detection"] for r in rows),
        "failed_after_detection": sum(r["failed_after_detection"] for r in rows),
        "errors": sorted({e for r in rows for e in r["errors"]}),
        "wrong_answers": sum(r["wrong_answers"] for r in rows),
        "worker_rss_mib": [round(first_worker_rss / 2**20), round(worker_after / 2**20)],
        "worker_rss_change": round(worker_after / first_worker_rss - 1, 3),
        "web_rss_mib": [round(web_before / 2**20), round(web_after / 2**20)],
        "web_rss_growth_mib": round((web_after - web_before) / 2**20, 1),
    }


def _row(fault: str, detected_by: str, traffic: Traffic, t0: float, web_pid: int, before: tuple[int, int],
         **extra) -> dict:
    """A row for a fault that needs no recovery: what the traffic saw from ``t0`` on."""
    attempts, _ = traffic.since(t0)
    web, worker = memory(traffic.url)
    return {"fault": fault, "t0": t0, "detected_by": detected_by, "detected_s": extra.pop("detected_s", "-"),
            "ready_s": extra.pop("ready_s", "-"), "requests": len(attempts),
            "failed_in_flight": 0, "failed_before_detection": 0,
            "failed_after_detection": sum(not a.ok for a in attempts),
            "errors": sorted({a.error for a in attempts if not a.ok}), "wrong_answers": sum(a.wrong for a in attempts),
            "worker_rss_mib": [round(before[1] / 2**20), round(worker / 2**20)],
            "web_rss_mib": [round(before[0] / 2**20), round(web / 2**20)], **extra}


def oversized_history(url: str, web_pid: int, traffic: Traffic, window_s: float = 30.0) -> dict:
    """The call from the issue: one chat with a 400-message history (about 800 KB). Refused at once,
    naming the limit? Other users' sentiment p50 in the ``window_s`` after it, against the
    ``window_s`` just before; no recovery."""
    from gradio_client import Client

    history = [{"role": "user" if i % 2 == 0 else "assistant", "content": "word " * 400} for i in range(400)]
    client = Client(url, verbose=False)
    t_base = time.monotonic()
    time.sleep(window_s)
    causes, before = recoveries(url), memory(url)
    t0 = time.monotonic()
    try:
        client.predict("And now?", history, api_name="/chat")
        refusal = "ACCEPTED"
    except Exception as exc:  # noqa: BLE001 - the refusal is what this measures
        refusal = str(exc)[:160]
    refused_s = time.monotonic() - t0
    time.sleep(window_s)
    p50 = lambda since, until: statistics.median(  # noqa: E731
        a.ended - a.started for a in traffic.since(since)[0]
        if a.kind == "sentiment" and a.ok and since <= a.started < until)
    base, during = p50(t_base, t0), p50(t0, t0 + window_s)
    return _row("one chat with a 400-message history", "limit at the edge", traffic, t0, web_pid, before,
                detected_s=round(refused_s, 2), refusal=refusal,
                sentiment_p50_s=[round(base, 3), round(during, 3)], p50_ratio=round(during / base, 2),
                recoveries=sum(recoveries(url).values()) - sum(causes.values()))


def dropped_streams(url: str, web_pid: int, traffic: Traffic, count: int = 100) -> dict:
    """``count`` chats opened and dropped by their clients mid-answer: each must be cancelled in the
    worker, so the queue depth comes back to what the steady users alone keep (at most one each)."""
    from gradio_client import Client

    before, causes = memory(url), recoveries(url)
    t0 = time.monotonic()
    client = Client(url, verbose=False)
    dropped = 0
    for i in range(count):
        job = client.submit(f"Tell me a long story about the number {i}.", api_name="/chat")
        deadline = time.monotonic() + 60
        while not job.outputs() and time.monotonic() < deadline and not job.done():
            time.sleep(0.02)
        job.cancel()
        dropped += 1
    depths = []
    for _ in range(30):  # the lowest depth over 6 s: the steady users' own requests come and go
        depths.append(metric(url, "allinone_queue_depth"))
        time.sleep(0.2)
    return _row(f"{dropped} streams dropped mid-answer", "the client's close", traffic, t0, web_pid, before,
                queue_depth_after_min=min(depths), steady_clients=traffic.clients,
                recoveries=sum(recoveries(url).values()) - sum(causes.values()))


def queue_flood(url: str, web_pid: int, traffic: Traffic, count: int = 300) -> dict:
    """``count`` sentiment requests joining the queue at once, several times its size (64): the
    excess is told "busy" at once, the rest answered, and the steady users keep being served."""
    from concurrent.futures import ThreadPoolExecutor

    before, causes = memory(url), recoveries(url)
    t0 = time.monotonic()

    def join(i: int) -> str:
        with httpx.Client(base_url=url, timeout=120) as http:
            response = http.post("/gradio_api/call/sentiment", json={"data": [f"Flooding the queue, {i}."]})
            if response.status_code != 200:
                return f"HTTP {response.status_code}"
            event = response.json()["event_id"]
            with http.stream("GET", f"/gradio_api/call/sentiment/{event}") as stream:
                for line in stream.iter_lines():
                    if line.startswith("event: "):
                        kind = line[len("event: "):]
                        if kind in ("complete", "error"):
                            return kind
            return "no answer"

    with ThreadPoolExecutor(count) as pool:  # all at once, as a class clicking together would
        outcomes = list(pool.map(join, range(count)))
    counts = {o: outcomes.count(o) for o in set(outcomes)}
    return _row(f"queue flood ({count} at once)", "the queue's size (--queue-max-size)", traffic, t0, web_pid,
                before, flood=counts, recoveries=sum(recoveries(url).values()) - sum(causes.values()))


BAD_BODIES = [b"{not json", b"\xff\xfe\xfd", b'{"data": 5}', b'{"data": ["\\ud800"]}', b"[]", b"",
              b'{"data": [{"role": 3}], "fn_index": "x"}']
ROUTES = ["/gradio_api/queue/join", "/gradio_api/call/sentiment", "/gradio_api/call/chat", "/admin/reload",
          "/admin/fault/hang", "/ready", "/health", "/metrics", "/", "/gradio_api/info"]


def bad_input(url: str, web_pid: int, traffic: Traffic) -> dict:
    from gradio_client import Client

    before = memory(url)
    t0 = time.monotonic()
    statuses: dict[int, int] = {}
    traces = 0
    with httpx.Client(base_url=url, timeout=30) as raw:
        for route in ROUTES:
            for body in BAD_BODIES:
                for method in ("POST", "GET", "PUT"):
                    response = raw.request(method, route, content=body, headers={"content-type": "application/json"})
                    statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                    traces += "Traceback" in response.text
    client = Client(url, verbose=False)
    api_errors = []
    for args, api in [((5,), "/sentiment"), ((["a list"],), "/sentiment"), (("lone \ud800",), "/sentiment"),
                      (("hi", "not a list"), "/chat"), (("\udfff",), "/chat"), ((None,), "/chat"),
                      (("x" * 5000,), "/sentiment")]:
        try:
            client.predict(*args, api_name=api)
            api_errors.append("ACCEPTED")
        except Exception as exc:  # noqa: BLE001 - a short refusal is the expected answer
            api_errors.append(str(exc)[:100])
            traces += "Traceback" in str(exc)
    return _row("bad input on every route", "refused (4xx or a short message)", traffic, t0, web_pid, before,
                http_statuses=statuses, five_xx=sum(n for code, n in statuses.items() if code >= 500),
                tracebacks=traces, api_answers=sorted(set(api_errors)))


def prompt_injection(url: str, web_pid: int, traffic: Traffic) -> dict:
    from gradio_client import Client

    before = memory(url)
    t0 = time.monotonic()
    client = Client(url, verbose=False)
    cases = load_cases()[:INJECTION_CASES]
    flipped = []
    for _, text, expected in cases:
        got = client.predict(text, api_name="/sentiment")["label"]
        if got != expected:
            flipped.append(text[:50])
    return _row("prompt injection on sentiment", "labels are scored, not generated", traffic, t0, web_pid, before,
                injections=len(cases), flipped=len(flipped), flipped_texts=flipped)


def unwritable_log_dir(web_pid: int, traffic: Traffic, model_dir: str) -> dict:
    """A second instance whose log directory cannot be created: it must serve, and say so on stderr."""
    from gradio_client import Client

    before = memory(traffic.url)
    t0 = time.monotonic()
    blocker = Path("/tmp/allinone-chaos-not-a-dir")
    blocker.write_text("a file where the log directory should be")
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(REPO / "app.py"), "--port", str(port), "--model-dir", model_dir,
                             "--log-dir", str(blocker / "logs")], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        ready_s = time.monotonic() - t0
        answer = Client(f"http://127.0.0.1:{port}", verbose=False).predict(KNOWN[0][0], api_name="/sentiment")
    finally:
        proc.terminate()
        stderr = proc.communicate(timeout=30)[1]
    said = "cannot write logs to" in stderr
    return _row("log directory not writable (second instance)", "stderr: " + ("says so" if said else "SILENT"),
                traffic, t0, web_pid, before, ready_s=round(ready_s, 1),
                second_instance_answer_right=answer["label"] == KNOWN[0][1])


def overwrite_weights(version: Path) -> None:
    """Write 4 KB of noise into the middle of a version's weights, in place (same size and inode)."""
    for path in [version, *version.rglob("*")]:
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    weights = version / "model.safetensors"
    with open(weights, "r+b") as f:
        f.seek(weights.stat().st_size // 2)
        f.write(os.urandom(4096))


def rollback_trap(url: str, traffic: Traffic, store: Path, name: str) -> dict:
    """A rejected ``c`` as current's previous, a damaged serving ``b``, an intact ``a``, then a hang."""
    before, causes = memory(traffic.url), recoveries(url)
    t0 = time.monotonic()
    store_cli(store, "activate", f"{name}@c", "--force")
    def rejected() -> dict:
        try:
            return json.loads((store / ".rejected.json").read_text())
        except (OSError, ValueError):
            return {}

    deadline = time.monotonic() + 180
    while f"{name}@c" not in rejected():  # activate --force cleared it: the app must reject it again
        if time.monotonic() > deadline:
            raise SystemExit("c was never rolled back")
        time.sleep(0.5)
    previous = os.readlink(store / "previous")
    overwrite_weights(store / f"{name}@b")
    while httpx.get(url + "/ready", timeout=5).json().get("model") != f"{name}@a":
        if time.monotonic() > deadline + 180:
            raise SystemExit("a never served")
        time.sleep(0.5)
    replaced_s = time.monotonic() - t0
    inject("hang", url)
    pid = worker_pid(url)
    while worker_pid(url) in (pid, None) or httpx.get(url + "/ready", timeout=5).status_code != 200:
        time.sleep(0.3)
    _, samples = traffic.since(t0)
    after = httpx.get(url + "/ready", timeout=5).json()
    return _row("rejected c, damaged serving b, intact a, then a hang", "rollback, integrity, hang", traffic, t0, 0,
                before, detected_s="-", ready_s=round(time.monotonic() - t0, 1), current_previous_was=previous,
                a_serving_after_s=round(replaced_s, 1), serving_after=after.get("model"),
                ever_failed=any(state == "failed" for _, state, _ in samples),
                recoveries=sum(recoveries(url).values()) - sum(causes.values()))


def damage_store(kind: str, url: str, web_pid: int, traffic: Traffic, store: Path) -> dict:
    """``overwrite``: one weight file of the serving version overwritten (same size); ``delete``:
    the serving version's directory removed. Then: what serves, and is anything wrong."""
    before_pid, before_causes = worker_pid(url), recoveries(url)
    before = memory(url)
    serving = store / httpx.get(url + "/ready", timeout=5).json()["model"]
    t0 = time.monotonic()
    if kind == "overwrite":
        overwrite_weights(serving)
    else:
        for path in [serving, *serving.rglob("*")]:
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
        shutil.rmtree(serving)
    detected = switched = None
    while time.monotonic() - t0 < 180:
        body = httpx.get(url + "/ready", timeout=5).json()
        if detected is None and (body.get("degraded") or body.get("model") != serving.name or
                                 body.get("state") != "ready"):
            detected = time.monotonic()
        if body.get("state") == "ready" and (body.get("model") != serving.name or body.get("degraded")):
            switched = time.monotonic()
            break
        time.sleep(0.2)
    time.sleep(3)
    after = httpx.get(url + "/ready", timeout=5).json()
    return _row("one weight file overwritten" if kind == "overwrite" else "the model directory deleted",
                "integrity check", traffic, t0, web_pid, before,
                detected_s=None if detected is None else round(detected - t0, 1),
                ready_s=None if switched is None else round(switched - t0, 1),
                serving_after=after.get("model"), degraded=after.get("degraded"),
                recoveries=sum(recoveries(url).values()) - sum(before_causes.values()),
                worker_replaced=after.get("worker_pid") != before_pid)


def metric(url: str, name: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(url + "/metrics", timeout=5).text
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == name)


def build_store(source: Path, root: Path, versions: tuple[str, ...] = ("a", "b")) -> str:
    """The default model as ``versions`` (once; a damaged one again), the last current, and the bad
    release ``c``. Returns the model's name."""
    from ops.store.versions import ModelStore

    store = ModelStore(root)
    name = source.resolve().name.partition("@")[0]
    for version in versions:
        key = f"{name}@{version}"
        if key in store.keys() and store.verify(key):  # damaged by an earlier run: build it again
            for path in [root / key, *(root / key).rglob("*")]:
                os.chmod(path, 0o755 if path.is_dir() else 0o644)
            shutil.rmtree(root / key)
        if key not in store.keys():
            print(f"installing {key} ...", flush=True)
            store_cli(root, "install", str(source), "--version", version)
    if f"{name}@c" not in store.keys():
        print(f"building {name}@c (output layer negated: it loads, and fails its self-test) ...", flush=True)
        install_broken_copy(source, root, "c")
    for version in versions[-2:]:  # the last current, the one before it previous
        store_cli(root, "activate", f"{name}@{version}", "--force")
    return name


def table(rows: list[dict]) -> str:
    lines = ["| fault | detected by | detected after | /ready 200 after | requests | failed in flight | failed "
             "before detection | failed after detection | wrong answers | worker RSS before → after | "
             "web RSS before → after |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['fault']} | {r['detected_by']} | {r['detected_s']} s | {r['ready_s']} s | "
                     f"{r['requests']} | {r['failed_in_flight']} | {r['failed_before_detection']} | "
                     f"{r['failed_after_detection']} | {r['wrong_answers']} | "
                     f"{r['worker_rss_mib'][0]} → {r['worker_rss_mib'][1]} MiB | "
                     f"{r['web_rss_mib'][0]} → {r['web_rss_mib'][1]} MiB |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--faults", default="all")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--source", type=Path, default=REPO / "models" / "current", help="the model to copy")
    parser.add_argument("--store", type=Path, default=Path("/tmp/allinone-chaos-store"))
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--spare-worker", action="store_true", help="serve with a warm spare worker")
    args = parser.parse_args()
    faults = (ALL if args.faults == "all" else args.faults).split(",")
    name = build_store(args.source, args.store)
    header("chaos report" + (", warm spare worker" if args.spare_worker else ""))
    app_args = ["--models-root", str(args.store), "--log-dir", "/tmp/allinone-chaos-logs", "--fault-injection",
                "--max-new-tokens", "16", "--backend", args.backend] + (["--spare-worker"] if args.spare_worker else [])
    with running_app(app_args, env={"ALLINONE_ADMIN_TOKEN": TOKEN}) as (proc, url, cold):
        print(f"cold start: {cold:.1f} s", flush=True)
        time.sleep(10)  # the worker copies its weights off the model files in its first seconds: measure after
        _, first_worker_rss = memory(url)
        traffic = Traffic(url, args.clients).start()
        rows = []
        try:
            for kind in faults:
                if args.spare_worker:
                    print(f"spare parked after {wait_spare(url):.1f} s more", flush=True)
                if kind.startswith("hang-x"):
                    row = repeated_hangs(url, proc.pid, traffic, int(kind[len("hang-x"):]), first_worker_rss)
                elif kind == "history":
                    row = oversized_history(url, proc.pid, traffic)
                elif kind == "streams":
                    row = dropped_streams(url, proc.pid, traffic)
                elif kind == "flood":
                    row = queue_flood(url, proc.pid, traffic)
                elif kind == "bad-input":
                    row = bad_input(url, proc.pid, traffic)
                elif kind == "injection":
                    row = prompt_injection(url, proc.pid, traffic)
                elif kind == "logdir":
                    row = unwritable_log_dir(proc.pid, traffic, str(args.source))
                elif kind == "trap":
                    row = rollback_trap(url, traffic, args.store, name)
                elif kind in ("overwrite", "delete"):
                    row = damage_store(kind, url, proc.pid, traffic, args.store)
                else:
                    row = one_fault(kind, url, proc.pid, traffic)
                row.pop("t0", None)
                rows.append(row)
                print(json.dumps(row, ensure_ascii=False), flush=True)
        finally:
            traffic.stop()
    print(table(rows))


if __name__ == "__main__":
    main()
