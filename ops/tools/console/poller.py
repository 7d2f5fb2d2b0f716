"""The console's one poller: every node's ``/ready`` and ``/metrics``, every few seconds, for every viewer.

One background thread polls all nodes at once, each with a short timeout, so a dead node costs a round
its timeout and open tabs cost the nodes nothing (pages read ``Poller.view()``). Each node keeps about
an hour of ``Sample``s, thread-safe; readers get immutable copies.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from enum import Enum
from typing import Callable, Mapping, Sequence

import httpx
from loguru import logger

from ops.tools.console.alerts import AlertRules, AlertStatus, AlertTracker, rule_values
from ops.tools.console.promtext import Increase, MetricsFormatError, MetricsReading, read_metrics

__all__ = ["Poller", "PollerConfig", "NodeHistory", "NodeStats", "Reach", "Sample", "NodeView", "ConsoleView"]


class Reach(str, Enum):
    ANSWERING = "answering"
    DOWN = "down"  # no answer at all: refused, timed out, no route
    BAD_ANSWER = "bad answer"  # something answers, but not a readiness document


@dataclass(frozen=True)
class PollerConfig:
    interval_s: float = 5.0
    timeout_s: float = 2.0
    keep_s: float = 3600.0  # history per node
    stats_window_s: float = 60.0  # the table's requests/s, error ratio and latency are over this

    @property
    def keep_samples(self) -> int:
        return max(2, math.ceil(self.keep_s / self.interval_s))


@dataclass(frozen=True)
class NodeStats:
    """The table's figures over the stats window (None: no requests in it)."""

    requests_per_s: float | None
    error_ratio: float | None
    p50_s: float | None
    p95_s: float | None


@dataclass(frozen=True)
class Sample:
    at: float  # unix time of the poll
    reach: Reach
    problem: str | None = None  # why down, or what was wrong with the answer
    ready: Mapping | None = None  # the /ready document
    reading: MetricsReading | None = None
    increase: Increase | None = None  # since the node's previous reading
    stats: NodeStats | None = None
    alerts: tuple[AlertStatus, ...] = ()

    @property
    def state(self) -> str:
        """The node's own lifecycle state, or why there is none (``down``, ``bad answer``)."""
        if self.reach is Reach.ANSWERING and self.ready is not None:
            return str(self.ready.get("state", "?"))
        return self.reach.value


class NodeHistory:
    """The last ``keep`` samples of one node."""

    def __init__(self, keep: int) -> None:
        self._samples: deque[Sample] = deque(maxlen=keep)
        self._lock = threading.Lock()

    def add(self, sample: Sample) -> None:
        with self._lock:
            self._samples.append(sample)

    def samples(self) -> tuple[Sample, ...]:
        """Oldest first."""
        with self._lock:
            return tuple(self._samples)

    def latest(self) -> Sample | None:
        with self._lock:
            return self._samples[-1] if self._samples else None

    def last_reading(self) -> tuple[float, MetricsReading] | None:
        """When the newest metrics reading was taken, and the reading."""
        with self._lock:
            found = next((s for s in reversed(self._samples) if s.reading is not None), None)
        return None if found is None else (found.at, found.reading)

    def increase_over(self, now: float, seconds: float) -> Increase | None:
        """What happened in the ``seconds`` before ``now`` (the increases of the samples taken then)."""
        with self._lock:
            recent = [s.increase for s in self._samples if s.at > now - seconds and s.increase is not None]
        return Increase.total(recent)


@dataclass(frozen=True)
class NodeView:
    url: str
    samples: tuple[Sample, ...]  # oldest first

    @property
    def latest(self) -> Sample | None:
        return self.samples[-1] if self.samples else None


@dataclass(frozen=True)
class ConsoleView:
    """What a page shows: every node's history, and how many rounds the poller has made."""

    polls: int
    polled_at: float | None
    config: PollerConfig
    nodes: tuple[NodeView, ...]


class Poller:
    """Polls ``urls`` on one background thread (``start``/``stop``); ``poll_once`` is one round."""

    def __init__(self, urls: Sequence[str], rules: AlertRules, config: PollerConfig = PollerConfig(),
                 client: httpx.Client | None = None, clock: Callable[[], float] = time.time) -> None:
        self.urls = tuple(url.rstrip("/") for url in urls)
        self.rules, self.config, self._clock = rules, config, clock
        self._client = client or httpx.Client(timeout=config.timeout_s)
        self._histories = {url: NodeHistory(config.keep_samples) for url in self.urls}
        self._trackers = {url: AlertTracker(rules) for url in self.urls}
        self._pool = ThreadPoolExecutor(max_workers=max(1, len(self.urls)), thread_name_prefix="console-poll")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._polls, self._polled_at = 0, None

    def start(self) -> "Poller":
        self._thread = threading.Thread(target=self._run, name="console-poller", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.config.timeout_s * 2 + 5)
        self._pool.shutdown(wait=False)
        self._client.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            self.poll_once()
            self._stop.wait(max(0.0, self.config.interval_s - (time.monotonic() - started)))

    def poll_once(self) -> None:
        """Ask every node at once; returns when all have answered or timed out."""
        now = self._clock()
        for url, sample in zip(self.urls, self._pool.map(lambda url: self._poll_node(url, now), self.urls)):
            self._histories[url].add(sample)
        with self._lock:
            self._polls += 1
            self._polled_at = now

    def view(self) -> ConsoleView:
        with self._lock:
            polls, polled_at = self._polls, self._polled_at
        return ConsoleView(polls, polled_at, self.config,
                           tuple(NodeView(url, self._histories[url].samples()) for url in self.urls))

    def _poll_node(self, url: str, now: float) -> Sample:
        try:
            sample = self._fetch(url, now)
        except Exception as exc:  # a bug here must not stop the poller for every node
            logger.exception("console: polling {} failed", url)
            sample = Sample(now, Reach.BAD_ANSWER, f"{type(exc).__name__}: {exc}")
        return self._with_figures(url, sample)

    def _fetch(self, url: str, now: float) -> Sample:
        try:
            response = self._client.get(url + "/ready")
        except httpx.TimeoutException:
            return Sample(now, Reach.DOWN, f"no answer within {self.config.timeout_s:g} s")
        except httpx.TransportError as exc:
            return Sample(now, Reach.DOWN, _transport_problem(exc))
        try:
            ready = response.json()
        except ValueError:
            ready = None
        if not isinstance(ready, dict) or "state" not in ready:
            return Sample(now, Reach.BAD_ANSWER, f"/ready answered {response.status_code} without a readiness "
                                                 "document: is this an All-in-One node?")
        try:
            metrics = self._client.get(url + "/metrics")
            metrics.raise_for_status()
            reading = read_metrics(metrics.text)
        except (httpx.HTTPError, MetricsFormatError) as exc:
            return Sample(now, Reach.ANSWERING, f"/metrics: {exc}", ready)
        return Sample(now, Reach.ANSWERING, None, ready, reading)

    def _with_figures(self, url: str, sample: Sample) -> Sample:
        """The sample with its increase since the node's last reading, the table's figures and the alerts."""
        history, tracker = self._histories[url], self._trackers[url]
        if sample.reading is None:
            return replace(sample, alerts=tracker.update(sample.at, {}))
        previous = history.last_reading()
        increase = None if previous is None else Increase.between(previous[1], sample.reading,
                                                                  sample.at - previous[0])
        history_with = _Pending(history, sample.at, increase)
        window = history_with.increase_over(self.config.stats_window_s)
        stats = None if window is None else NodeStats(
            window.requests_per_s(), window.error_ratio(self.rules.is_error),
            window.latency_quantile(0.5), window.latency_quantile(0.95))
        alerts = tracker.update(sample.at, rule_values(self.rules, history_with.increase_over, sample.reading))
        return replace(sample, increase=increase, stats=stats, alerts=alerts)


class _Pending:
    """A node's history as if the sample being made were already in it (for its windows)."""

    def __init__(self, history: NodeHistory, at: float, increase: Increase | None) -> None:
        self._history, self._at, self._increase = history, at, increase

    def increase_over(self, seconds: float) -> Increase | None:
        before = self._history.increase_over(self._at, seconds)
        return Increase.total(i for i in (before, self._increase) if i is not None)


def _transport_problem(exc: httpx.TransportError) -> str:
    if isinstance(exc, httpx.ConnectError):
        return "connection refused or no route (nothing listening?)"
    return f"{type(exc).__name__}: {exc}"
