"""Prometheus metrics at ``GET /metrics``, and the access and performance logs.

``InstrumentedInference`` wraps the service the UI talks to, so every request is counted, timed and
logged once, whatever its door. State, queue depth and both processes' memory are read at scrape time.
Each app builds its own registry. The series: README.md, "HTTP routes".
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from pathlib import Path
from typing import Callable, Generator, Iterator

from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from engine.errors import (
    AllInOneError,
    Busy,
    InferenceFailed,
    InferenceTimeout,
    InvalidInput,
    ModelUnavailable,
    Superseded,
)
from engine.kinds.classify import ClassifyRequest
from engine.kinds.generate import ChatRequest
from engine.kinds.registry import InferenceCalls, Reply, Request
from engine.types import Inference, ReplyStream, TaskInfo
from ops.common.proc import process_rss_bytes
from ops.serving.history import Timeline
from ops.serving.logs import access_logger, perf_logger

__all__ = ["Metrics", "InstrumentedInference", "add_metrics_route", "outcome_of", "memory_limit_bytes"]

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
_OUTCOMES = [(InvalidInput, "invalid_input"), (Busy, "busy"), (Superseded, "superseded"),
             (ModelUnavailable, "unavailable"),
             (InferenceTimeout, "timeout"), (InferenceFailed, "failed")]
STATES = ("loading", "ready", "recovering", "failed")


def outcome_of(exc: BaseException | None) -> str:
    if exc is None:
        return "ok"
    for kind, name in _OUTCOMES:
        if isinstance(exc, kind):
            return name
    return "error" if isinstance(exc, AllInOneError) else "internal_error"


def memory_limit_bytes(cgroup_root: Path = Path("/sys/fs/cgroup"), proc_cgroup: Path = Path("/proc/self/cgroup")
                       ) -> float:
    """The lowest memory limit of this process's cgroup and its ancestors (v2 or v1), capped at the machine's RAM."""
    import psutil

    limits = [float(psutil.virtual_memory().total)]
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # v2: 0::/system.slice/x.service
            base, name = cgroup_root, "memory.max"
        elif "memory" in controllers.split(","):  # v1: 4:memory:/docker/abc
            base, name = cgroup_root / "memory", "memory.limit_in_bytes"
        else:
            continue
        parts = [p for p in path.split("/") if p]
        for depth in range(len(parts), -1, -1):  # the cgroup itself, its parents, and the namespace root
            try:
                raw = (base.joinpath(*parts[:depth]) / name).read_text().strip()
            except OSError:
                continue
            if raw.isdigit():  # "max" (v2) means no limit at this level
                limits.append(float(raw))
    return min(limits)


class _ServiceCollector:
    """Exports the service's running totals (self-tests, recoveries, reloads) at scrape time."""

    def __init__(self, stats) -> None:
        self._stats = stats

    def collect(self):
        stats = self._stats()
        if stats is None:
            return
        tests = CounterMetricFamily("allinone_self_tests", "Watchdog self-tests by result.", labels=["result"])
        for result, count in stats.self_tests.items():
            tests.add_metric([result], count)
        yield tests
        recoveries = CounterMetricFamily("allinone_recoveries", "Automatic recoveries (reloads) by cause.",
                                         labels=["cause"])
        for cause, count in stats.recoveries.items():
            recoveries.add_metric([cause], count)
        yield recoveries
        yield CounterMetricFamily("allinone_operator_reloads", "Reloads asked for on /admin/reload.",
                                  value=stats.reloads)
        rollbacks = CounterMetricFamily("allinone_rollbacks", "Automatic rollbacks of a model version, by cause "
                                        "(load_failed, self_test, damaged).", labels=["cause"])
        for cause, count in stats.rollbacks.items():
            rollbacks.add_metric([cause], count)
        yield rollbacks
        switches = CounterMetricFamily("allinone_model_switches", "Model versions switched in, by mode "
                                       "(beside: loaded next to the serving one; unload_first).", labels=["mode"])
        for mode, count in stats.switches.items():
            switches.add_metric([mode], count)
        yield switches
        yield CounterMetricFamily("allinone_integrity_failures", "Serving model versions found not matching "
                                  "their MANIFEST.", value=stats.integrity_failures)
        yield GaugeMetricFamily("allinone_last_recovery_duration_seconds",
                                "How long the last recovery took, detection to ready.", value=stats.last_recovery_s)


class Metrics:
    def __init__(self, state: Callable[[], str], queue_depth: Callable[[], float],
                 stats: Callable[[], object] = lambda: None, timeline: Timeline | None = None,
                 worker_rss: Callable[[], float] = lambda: 0.0, degraded: Callable[[], bool] = lambda: False) -> None:
        self.timeline = timeline  # the Status tab's latency plot, fed with the same observations
        self.registry = CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)  # process_resident_memory_bytes, process_cpu_seconds_total, ...
        self.requests = Counter("allinone_requests_total", "Requests by task and outcome.",
                                ["task", "outcome"], registry=r)
        self.latency = Histogram("allinone_request_duration_seconds", "Request latency (a chat: until its last token).",
                                 ["task"], buckets=_LATENCY_BUCKETS, registry=r)
        self.first_token = Histogram("allinone_time_to_first_token_seconds", "Chat time to first token.",
                                     ["task"], buckets=_LATENCY_BUCKETS, registry=r)
        self.generated_tokens = Counter("allinone_generated_tokens_total", "Tokens generated by chat tasks.",
                                        ["task"], registry=r)
        Gauge("allinone_queue_depth", "Requests waiting or running in the engine.",
              registry=r).set_function(queue_depth)
        model_state = Gauge("allinone_model_state", "1 for the lifecycle state the model is in, else 0.",
                            ["state"], registry=r)
        for name in STATES:
            model_state.labels(name).set_function(lambda name=name: float(state() == name))
        Gauge("allinone_degraded", "1 while the service answers but needs an operator: the serving version's "
              "files are damaged or gone and no good version is left to go back to.",
              registry=r).set_function(lambda: float(bool(degraded())))
        Gauge("allinone_worker_resident_memory_bytes", "Resident memory of the model's worker process, its own "
              "(anonymous) pages: the model files' pages in the page cache are not counted (0 while none serves).",
              registry=r).set_function(worker_rss)
        Gauge("allinone_memory_limit_bytes", "Most memory the web and worker processes may use together: their "
              "cgroup limit, else the RAM.", registry=r).set_function(memory_limit_bytes)
        r.register(_ServiceCollector(stats))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class InstrumentedInference(InferenceCalls):
    """An ``Inference`` that counts, times and logs every request of the one it wraps."""

    def __init__(self, inner: Inference, metrics: Metrics, log_text: bool = False,
                 worker_rss: Callable[[], int] = lambda: 0) -> None:
        self._inner = inner
        self._metrics = metrics
        self._log_text = log_text
        self._worker_rss = worker_rss

    def task_infos(self) -> list[TaskInfo]:
        return self._inner.task_infos()

    def _record(self, rid: str, task: str, started: float, exc: BaseException | None, text: str = "",
                tokens: int | None = None) -> None:
        self._log(rid, task, started, outcome_of(exc), text, tokens)
        self._metrics.requests.labels(task, outcome_of(exc)).inc()
        if exc is None:
            latency = time.perf_counter() - started
            self._metrics.latency.labels(task).observe(latency)
            if self._metrics.timeline is not None:
                self._metrics.timeline.observe_latency(task, latency)

    def _log(self, rid: str, task: str, started: float, outcome: str, text: str, tokens: int | None) -> None:
        latency = time.perf_counter() - started
        fields = {"request_id": rid, "task": task, "latency_s": round(latency, 4), "outcome": outcome}
        if self._log_text:
            fields["text"] = text
        access_logger().bind(**fields).info("{task} {outcome} {latency_s}s", **fields)
        perf = {"task": task, "latency_s": round(latency, 4), "rss_bytes": process_rss_bytes(),
                "worker_rss_bytes": self._worker_rss()}
        if tokens is not None:
            perf.update(tokens=tokens, tokens_per_s=round(tokens / latency, 2) if latency > 0 else None)
        perf_logger().bind(**perf).info("{task} {latency_s}s", **perf)

    def submit(self, task: str, request: Request) -> Generator[Reply, None, None]:
        started = time.perf_counter()
        rid = request.request_id or uuid.uuid4().hex[:12]
        request = dataclasses.replace(request, request_id=rid)  # one id in every log line, in both processes
        text = _request_text(request)
        try:
            stream = self._inner.submit(task, request)
        except Exception as exc:
            self._record(rid, task, started, exc, text)
            raise
        return self._follow(rid, task, started, stream, text, isinstance(request, ChatRequest))

    def _follow(self, rid: str, task: str, started: float, stream: ReplyStream, text: str,
                chat: bool) -> Iterator[Reply]:
        last = None
        try:
            for reply in stream:
                if last is None and chat:
                    self._metrics.first_token.labels(task).observe(time.perf_counter() - started)
                last = reply
                yield reply
        except GeneratorExit:  # the user pressed Stop or went away
            self._metrics.requests.labels(task, "cancelled").inc()
            self._log(rid, task, started, "cancelled", text, last.tokens if chat and last else None)
            raise
        except Exception as exc:
            self._record(rid, task, started, exc, text)
            raise
        else:
            self._record(rid, task, started, None, text, (last.tokens if last else 0) if chat else None)
        finally:
            stream.close()  # cancels the job at once, not when garbage is collected
            if chat and last is not None:
                self._metrics.generated_tokens.labels(task).inc(last.tokens)


def _request_text(request: Request) -> str:
    """The user's text, for ``--log-text``."""
    if isinstance(request, ClassifyRequest):
        texts = request.texts
        return "\n".join(map(str, texts)) if isinstance(texts, (list, tuple)) else str(texts)
    return request.message if isinstance(request.message, str) else str(request.message)


def add_metrics_route(app: FastAPI, metrics: Metrics) -> None:
    @app.get("/metrics", include_in_schema=False)
    def metrics_route() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)
