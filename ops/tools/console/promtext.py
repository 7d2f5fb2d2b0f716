"""A node's ``/metrics`` text, read into the few series the console needs, and the maths on two reads.

``read_metrics`` parses a ``MetricsReading`` (prometheus_client's parser); ``Increase.between`` is what
happened between two readings, a counter reset counting from zero as ``increase()`` does. From an
``Increase``: request rate, error ratio, latency quantiles and mean latency per task. Pure: no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Sequence

from prometheus_client.parser import text_string_to_metric_families

__all__ = ["MetricsReading", "Increase", "MetricsFormatError", "read_metrics", "histogram_quantile"]

REQUESTS = "allinone_requests_total"
DURATION = "allinone_request_duration_seconds"
FIRST_TOKEN = "allinone_time_to_first_token_seconds"
WEB_RSS = "process_resident_memory_bytes"
WORKER_RSS = "allinone_worker_resident_memory_bytes"
MEMORY_LIMIT = "allinone_memory_limit_bytes"
RECOVERIES = "allinone_recoveries_total"
ROLLBACKS = "allinone_rollbacks_total"


class MetricsFormatError(ValueError):
    """The text is not Prometheus' exposition format."""


@dataclass(frozen=True)
class MetricsReading:
    """One scrape: counters are cumulative since the node started."""

    requests: Mapping[tuple[str, str], float] = field(default_factory=dict)  # (task, outcome) -> count
    duration_buckets: Mapping[tuple[str, float], float] = field(default_factory=dict)  # (task, le) -> cumulative
    duration_sum: Mapping[str, float] = field(default_factory=dict)  # task -> seconds
    duration_count: Mapping[str, float] = field(default_factory=dict)
    first_token_sum: Mapping[str, float] = field(default_factory=dict)  # chat tasks only
    first_token_count: Mapping[str, float] = field(default_factory=dict)
    web_rss_bytes: float | None = None
    worker_rss_bytes: float | None = None
    memory_limit_bytes: float | None = None
    recoveries: float = 0.0  # all causes
    rollbacks: float = 0.0  # all causes

    @property
    def memory_ratio(self) -> float | None:
        """(web + worker resident memory) / limit, as ``AllInOneMemoryHigh`` computes it."""
        if self.web_rss_bytes is None or self.worker_rss_bytes is None or not self.memory_limit_bytes:
            return None
        return (self.web_rss_bytes + self.worker_rss_bytes) / self.memory_limit_bytes


def read_metrics(text: str) -> MetricsReading:
    """The console's series from one ``/metrics`` answer; other series are ignored."""
    requests: dict = {}
    buckets: dict = {}
    sums: dict[str, dict] = {DURATION: {}, FIRST_TOKEN: {}}
    counts: dict[str, dict] = {DURATION: {}, FIRST_TOKEN: {}}
    gauges: dict[str, float] = {}
    totals = {RECOVERIES: 0.0, ROLLBACKS: 0.0}
    try:
        samples = [s for family in text_string_to_metric_families(text) for s in family.samples]
    except (ValueError, TypeError, IndexError) as exc:  # the parser's ways of refusing a line
        raise MetricsFormatError(f"not Prometheus text: {exc}") from exc
    for name, labels, value in ((s.name, s.labels, s.value) for s in samples):
        task = labels.get("task", "")
        if name == REQUESTS:
            requests[(task, labels.get("outcome", ""))] = value
        elif name == DURATION + "_bucket":
            buckets[(task, float(labels["le"]))] = value
        elif name in (DURATION + "_sum", FIRST_TOKEN + "_sum"):
            sums[name[: -len("_sum")]][task] = value
        elif name in (DURATION + "_count", FIRST_TOKEN + "_count"):
            counts[name[: -len("_count")]][task] = value
        elif name in (WEB_RSS, WORKER_RSS, MEMORY_LIMIT):
            gauges[name] = value
        elif name in totals:
            totals[name] += value
    return MetricsReading(requests, buckets, sums[DURATION], counts[DURATION], sums[FIRST_TOKEN],
                          counts[FIRST_TOKEN], gauges.get(WEB_RSS), gauges.get(WORKER_RSS),
                          gauges.get(MEMORY_LIMIT), totals[RECOVERIES], totals[ROLLBACKS])


def _increase(before: Mapping, after: Mapping) -> dict:
    """Per series: after - before; a series that is new or went down (a restart) counts from zero."""
    out = {}
    for key, value in after.items():
        old = before.get(key)
        out[key] = value - old if old is not None and value >= old else value
    return out


def _add(a: Mapping, b: Mapping) -> dict:
    out = dict(a)
    for key, value in b.items():
        out[key] = out.get(key, 0.0) + value
    return out


@dataclass(frozen=True)
class Increase:
    """What happened over ``seconds``: counts per series, the latency buckets summed over tasks."""

    seconds: float
    requests: Mapping[tuple[str, str], float] = field(default_factory=dict)
    buckets: Mapping[float, float] = field(default_factory=dict)  # le -> cumulative count (all tasks)
    duration_sum: Mapping[str, float] = field(default_factory=dict)
    duration_count: Mapping[str, float] = field(default_factory=dict)
    first_token_sum: Mapping[str, float] = field(default_factory=dict)
    first_token_count: Mapping[str, float] = field(default_factory=dict)
    streaming_tasks: frozenset[str] = frozenset()  # tasks with a time-to-first-token series

    @classmethod
    def between(cls, before: MetricsReading, after: MetricsReading, seconds: float) -> "Increase":
        buckets: dict[float, float] = {}
        for (_, le), count in _increase(before.duration_buckets, after.duration_buckets).items():
            buckets[le] = buckets.get(le, 0.0) + count
        return cls(seconds, _increase(before.requests, after.requests), buckets,
                   _increase(before.duration_sum, after.duration_sum),
                   _increase(before.duration_count, after.duration_count),
                   _increase(before.first_token_sum, after.first_token_sum),
                   _increase(before.first_token_count, after.first_token_count),
                   frozenset(after.first_token_count))

    def __add__(self, other: "Increase") -> "Increase":
        return Increase(self.seconds + other.seconds, _add(self.requests, other.requests),
                        _add(self.buckets, other.buckets), _add(self.duration_sum, other.duration_sum),
                        _add(self.duration_count, other.duration_count),
                        _add(self.first_token_sum, other.first_token_sum),
                        _add(self.first_token_count, other.first_token_count),
                        self.streaming_tasks | other.streaming_tasks)

    @classmethod
    def total(cls, increases: Iterable["Increase"]) -> "Increase | None":
        """The sum of ``increases`` (None for none)."""
        result = None
        for increase in increases:
            result = increase if result is None else result + increase
        return result

    @property
    def request_count(self) -> float:
        return sum(self.requests.values())

    def requests_per_s(self) -> float | None:
        return self.request_count / self.seconds if self.seconds > 0 else None

    def error_ratio(self, is_error: Callable[[str], bool]) -> float | None:
        """Failed requests / all requests (None without requests); ``is_error(outcome)`` decides."""
        total = self.request_count
        if total <= 0:
            return None
        return sum(n for (_, outcome), n in self.requests.items() if is_error(outcome)) / total

    def latency_quantile(self, q: float) -> float | None:
        """The ``q`` quantile of request latency (all tasks) from the buckets; None without requests."""
        return histogram_quantile(q, sorted(self.buckets.items()))

    def mean_latency_by_task(self) -> dict[str, float]:
        """Mean latency per task that had requests: time to first token for tasks that stream one
        (chat), the whole request for the others, as ``AllInOneSlowResponses`` measures it."""
        means = {}
        for task in set(self.duration_count) | set(self.first_token_count):
            sums, counts = ((self.first_token_sum, self.first_token_count) if task in self.streaming_tasks
                            else (self.duration_sum, self.duration_count))
            if counts.get(task, 0) > 0:
                means[task] = sums.get(task, 0.0) / counts[task]
        return means


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """Prometheus' ``histogram_quantile`` over cumulative ``(le, count)`` buckets sorted by ``le``.

    Linear interpolation inside the bucket that holds the rank (the first
    bucket starts at 0); a rank in the ``+Inf`` bucket gives the highest
    finite bound. None when there is no ``+Inf`` bucket or no observation.
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile {q} is not within [0, 1]")
    if len(buckets) < 2 or buckets[-1][0] != math.inf:
        return None
    counts, highest = [], 0.0
    for _, count in buckets:  # cumulative counts never go down (Prometheus' ensureMonotonic)
        highest = max(highest, count)
        counts.append(highest)
    total = counts[-1]
    if total <= 0:
        return None
    rank = q * total
    index = next((i for i, count in enumerate(counts[:-1]) if count >= rank), len(buckets) - 1)
    if index == len(buckets) - 1:
        return buckets[-2][0]
    upper = buckets[index][0]
    if index == 0 and upper <= 0:
        return upper
    lower, below = (buckets[index - 1][0], counts[index - 1]) if index > 0 else (0.0, 0.0)
    inside = counts[index] - below
    return lower if inside <= 0 else lower + (upper - lower) * (rank - below) / inside
