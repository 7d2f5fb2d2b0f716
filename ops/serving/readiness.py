"""What state the service is in, and what happened to it: the readiness snapshot, events and totals.

``Readiness`` keeps the snapshot ``/ready`` and the UI read, replaced whole under a lock so readers never
wait; the ``EventLog``; and the totals ``/metrics`` exports (``ServiceStats``). It decides nothing: the
lifecycle writes, everyone else reads. Causes are enums: no decision reads a message's text.
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field, replace
from enum import Enum

from ops.serving.history import EventLog
from ops.store.follower import RollbackCause

__all__ = ["State", "RecoveryCause", "SwitchMode", "SelfTestResult", "HealthSnapshot",
           "ServiceStats", "Readiness"]


class State(str, Enum):
    LOADING = "loading"
    READY = "ready"
    RECOVERING = "recovering"
    FAILED = "failed"


class RecoveryCause(str, Enum):
    """Why the worker was replaced (the ``cause`` label of ``allinone_recoveries_total``)."""

    HANG = "hang"  # the worker's loop stopped turning (a step ran past the hang limit, or SIGSTOP)
    MEMORY = "memory"  # the worker's memory went over the limit
    SELF_TEST = "self_test"  # a known-answer probe failed
    FILES = "files"  # the serving model's files changed on disk (a directory without a MANIFEST)
    INVALID_OUTPUT = "invalid_output"  # the model produced NaN/inf: its memory is not to be trusted
    FAILED_REQUEST = "failed_request"  # several requests in a row failed inside the model (one is a request error)
    WORKER_EXIT = "worker_exit"  # the worker process ended on its own (crash, OOM kill, the exit drill)


class SwitchMode(str, Enum):
    BESIDE = "beside"  # the new version's worker started next to the serving one
    UNLOAD_FIRST = "unload_first"  # no room: the serving worker was stopped first


@dataclass(frozen=True)
class SelfTestResult:
    passed: bool
    at: float  # unix time
    duration_s: float
    detail: str


@dataclass(frozen=True)
class HealthSnapshot:
    """What ``/ready`` reports; replaced whole, never mutated, so reading never blocks."""

    state: State
    model: str | None
    reason: str | None
    last_self_test: SelfTestResult | None
    consecutive_failures: int
    started_at: float
    worker_pid: int | None = None
    spare_pid: int | None = None  # the warm spare worker's, parked and self-tested (``ops.serving.spare``)
    precision: tuple[str, str] | None = None  # the serving weights' format, and why that one
    backend: tuple[str, str] | None = None  # the runtime serving them (torch, llamacpp), and why that one
    heads: dict[str, dict] = field(default_factory=dict)  # task -> its linear head's state (engine.heads)
    # A standing problem that needs an operator while the service still answers rightly: the
    # serving version's files are damaged or gone and no good version is left to go back to.
    degraded: str | None = None

    @property
    def ready(self) -> bool:
        return self.state is State.READY

    def to_json(self, now: float | None = None) -> dict:
        now = time.time() if now is None else now
        return {
            "state": self.state.value,
            "model": self.model,
            "reason": self.reason,
            "last_self_test": None if self.last_self_test is None else asdict(self.last_self_test),
            "consecutive_failures": self.consecutive_failures,
            "uptime_s": round(now - self.started_at, 1),
            "worker_pid": self.worker_pid,
            "spare_pid": self.spare_pid,
            "precision": None if self.precision is None else dict(zip(("format", "reason"), self.precision)),
            "backend": None if self.backend is None else dict(zip(("name", "reason"), self.backend)),
            "heads": self.heads,
            "degraded": self.degraded,
        }


@dataclass
class ServiceStats:
    """Running totals for ``/metrics`` (read at scrape time; written through ``Readiness``).

    Every recovery cause is there from the start, at 0: a counter that first appears
    at 1 is invisible to Prometheus' ``increase()``, so the first recovery would never alert.
    """

    self_tests: dict[str, int] = field(default_factory=lambda: {"passed": 0, "failed": 0})
    recoveries: dict[str, int] = field(default_factory=lambda: {c.value: 0 for c in RecoveryCause})
    reloads: int = 0  # operator reloads
    last_recovery_s: float = 0.0
    rollbacks: dict[str, int] = field(default_factory=dict)  # by RollbackCause
    switches: dict[str, int] = field(default_factory=dict)  # by SwitchMode
    integrity_failures: int = 0


class Readiness:
    """The snapshot, the event history and the totals; see the module doc."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # notified whenever the snapshot is replaced
        self._snapshot = HealthSnapshot(State.LOADING, None, "starting", None, 0, time.time())
        self.events = EventLog()  # self-tests, loads, reloads, switches, rollbacks and recoveries
        self.stats = ServiceStats()

    def snapshot(self) -> HealthSnapshot:
        return self._snapshot

    def update(self, **changes) -> HealthSnapshot:
        with self._lock:
            self._snapshot = replace(self._snapshot, **changes)
            self._changed.notify_all()
            return self._snapshot

    def wait_ready(self, timeout: float) -> bool:
        """Wait (at most ``timeout``) until the state is ``ready``; whether it is (polled every 50 ms)."""
        deadline = time.monotonic() + timeout
        while not self._snapshot.ready and time.monotonic() < deadline:
            time.sleep(0.05)
        return self._snapshot.ready

    def wait_until_settled(self, timeout: float) -> HealthSnapshot:
        """Wait (at most ``timeout``) while a load or recovery is under way; the snapshot then."""
        with self._lock:
            self._changed.wait_for(lambda: self._snapshot.state in (State.READY, State.FAILED), timeout)
            return self._snapshot

    def set_ready(self, model: str | None, self_test: SelfTestResult, worker_pid: int | None,
                  precision: tuple[str, str] | None = None, heads: dict[str, dict] | None = None,
                  backend: tuple[str, str] | None = None) -> None:
        self.update(state=State.READY, model=model, reason=None, last_self_test=self_test,
                    consecutive_failures=0, worker_pid=worker_pid, precision=precision, heads=heads or {},
                    backend=backend, degraded=None)

    def set_heads(self, worker_pid: int | None, heads: dict[str, dict]) -> None:
        """The heads' states after a task change on the worker ``worker_pid``, unless another serves by now."""
        with self._lock:
            if self._snapshot.worker_pid == worker_pid:
                self._snapshot = replace(self._snapshot, heads=dict(heads))
                self._changed.notify_all()

    def record_self_test(self, passed: bool, duration_s: float, detail: str) -> None:
        result = SelfTestResult(passed, time.time(), round(duration_s, 3), detail)
        with self._lock:
            failures = 0 if passed else self._snapshot.consecutive_failures + 1
            self._snapshot = replace(self._snapshot, last_self_test=result, consecutive_failures=failures)
            self._changed.notify_all()
            self.stats.self_tests["passed" if passed else "failed"] += 1
        self.events.add("self-test", passed, detail)

    def count_recovery(self, cause: RecoveryCause) -> None:
        with self._lock:
            self.stats.recoveries[cause.value] += 1

    def recovered_in(self, seconds: float) -> None:
        with self._lock:
            self.stats.last_recovery_s = seconds

    def count_rollback(self, cause: RollbackCause) -> None:
        with self._lock:
            self.stats.rollbacks[cause.value] = self.stats.rollbacks.get(cause.value, 0) + 1

    def count_switch(self, mode: SwitchMode) -> None:
        with self._lock:
            self.stats.switches[mode.value] = self.stats.switches.get(mode.value, 0) + 1

    def count_reload(self) -> None:
        with self._lock:
            self.stats.reloads += 1

    def count_integrity_failure(self) -> None:
        with self._lock:
            self.stats.integrity_failures += 1
