"""Recent history for the Status tab: lifecycle events, and latency and memory over time.

A classroom has no Prometheus, so the process keeps a short memory: ``EventLog`` (self-tests, loads,
recoveries, each with its reason) and ``Timeline`` (latency per task and both processes' memory in
fixed buckets). Both are bounded and thread-safe; readers get copies, so the UI never holds a lock.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import asdict, dataclass

__all__ = ["Event", "EventLog", "Timeline"]


@dataclass(frozen=True)
class Event:
    at: float  # unix time
    kind: str  # self-test, loaded, load-failed, reload, recovering, recovered, spare, switch, unload-first,
    # rollback, integrity
    ok: bool
    detail: str


class EventLog:
    def __init__(self, keep: int = 200, clock=time.time) -> None:
        self._events: deque[Event] = deque(maxlen=keep)
        self._lock = threading.Lock()
        self._clock = clock

    def add(self, kind: str, ok: bool, detail: str) -> None:
        with self._lock:
            self._events.append(Event(self._clock(), kind, ok, detail))

    def recent(self, limit: int = 20, kinds: tuple[str, ...] | None = None) -> list[dict]:
        """Newest first."""
        with self._lock:
            events = list(self._events)
        chosen = [e for e in reversed(events) if kinds is None or e.kind in kinds]
        return [asdict(e) for e in chosen[:limit]]


class Timeline:
    """Latency (mean and max per task) and memory (max per process) per ``bucket_s`` seconds."""

    def __init__(self, bucket_s: float = 5.0, keep_buckets: int = 360, clock=time.time) -> None:
        self.bucket_s = bucket_s
        self._buckets: deque[tuple[float, dict]] = deque(maxlen=keep_buckets)
        self._lock = threading.Lock()
        self._clock = clock

    def _bucket(self) -> dict:
        start = self._clock() // self.bucket_s * self.bucket_s
        if not self._buckets or self._buckets[-1][0] != start:
            self._buckets.append((start, {"latency": {}, "rss_bytes": {}}))
        return self._buckets[-1][1]

    def observe_latency(self, task: str, seconds: float) -> None:
        with self._lock:
            count, total, peak = self._bucket()["latency"].get(task, (0, 0.0, 0.0))
            self._bucket()["latency"][task] = (count + 1, total + seconds, max(peak, seconds))

    def observe_memory(self, **rss_bytes: int) -> None:
        """Resident memory by process, e.g. ``observe_memory(web=..., worker=...)``; 0 is no sample."""
        with self._lock:
            peaks = self._bucket()["rss_bytes"]
            for process, value in rss_bytes.items():
                if value:
                    peaks[process] = max(peaks.get(process, 0), value)

    def latency_rows(self) -> list[dict]:
        """``{time, task, mean_s, max_s, requests}`` per bucket and task, oldest first."""
        with self._lock:
            buckets = [(start, dict(b["latency"])) for start, b in self._buckets]
        return [{"time": start, "task": task, "mean_s": total / count, "max_s": peak, "requests": count}
                for start, latency in buckets for task, (count, total, peak) in sorted(latency.items())]

    def memory_rows(self) -> list[dict]:
        """``{time, process, rss_mib}`` per bucket and process sampled, oldest first."""
        with self._lock:
            samples = [(start, dict(b["rss_bytes"])) for start, b in self._buckets]
        return [{"time": start, "process": process, "rss_mib": rss / 2**20}
                for start, peaks in samples for process, rss in sorted(peaks.items())]
