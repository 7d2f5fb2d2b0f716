"""Which model serves, and in what state: the service the UI and routes talk to.

``ModelService`` loads the model in the background so the process answers
``/health`` from its first second, keeps a readiness snapshot (``loading``,
``ready``, ``recovering``, ``failed``) that readers get without waiting, and
hands requests to the current ``Engine`` only while ``ready``; otherwise the
caller gets a clear ``ModelUnavailable`` naming the reason. A missing or
broken model is retried with backoff, so installing it while the app runs is
enough. The model code itself is injected (``loader`` and ``engine_factory``),
so this module never imports torch.
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, replace
from enum import Enum
from pathlib import Path
from typing import Callable, Iterator, Sequence

from loguru import logger

from engine.errors import AllInOneError, InferenceFailed, ModelUnavailable
from engine.tasks import TaskRegistry
from engine.types import ChatUpdate, ClassifyResult, GenerateOptions, Inference, TaskInfo
from ops.history import EventLog

__all__ = ["State", "SelfTestResult", "HealthSnapshot", "ModelService"]


RECOVERY_ATTEMPTS_BEFORE_FAILED = 3


class State(str, Enum):
    LOADING = "loading"
    READY = "ready"
    RECOVERING = "recovering"
    FAILED = "failed"


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
        }


def basic_self_test(engine: Inference) -> str:
    """A real tensor operation on every task: each must answer validly. Returns a summary;
    raises on failure. (Known-answer probes are the watchdog's job.)"""
    parts = []
    for info in engine.task_infos():
        if info.kind == "classify":
            result = engine.classify(info.name, ["self-test 自检"])[0]
            if result.label not in info.labels or not 0.0 <= result.confidence <= 1.0:
                raise ModelUnavailable(f"self-test: {info.name} gave an invalid answer")
            parts.append(f"{info.name}={result.label}")
        else:
            update = None
            for update in engine.generate(info.name, "Say OK.", options=GenerateOptions(max_new_tokens=2, priority=True)):
                pass
            if update is None or not update.done:
                raise ModelUnavailable(f"self-test: {info.name} did not finish")
            parts.append(f"{info.name}:{update.tokens} tokens")
    return ", ".join(parts)


@dataclass
class ServiceStats:
    """Running totals for ``/metrics`` (read at scrape time; written under the service lock)."""

    self_tests: dict[str, int]
    recoveries: dict[str, int]  # by cause: hang, memory, wrong_answer, failed_request, other
    reloads: int = 0  # operator reloads
    last_recovery_s: float = 0.0


def files_fingerprint(path) -> tuple | None:
    """A cheap picture of a model directory: (name, size, mtime) of every file."""
    if path is None:
        return None
    try:
        return tuple(sorted((str(p.relative_to(path)), st.st_size, st.st_mtime_ns)
                            for p in Path(path).rglob("*") if p.is_file() for st in [p.stat()]))
    except OSError:
        return ("unreadable",)


_CAUSE_NEEDLES = (("hung", "hang"), ("memory", "memory"), ("self-test", "self_test"), ("files", "files"),
                  ("request failed", "failed_request"))
# Every cause is exported from the start (at 0): a counter that first appears at 1 is
# invisible to Prometheus' increase(), so the first recovery would never alert.
RECOVERY_CAUSES = tuple(cause for _, cause in _CAUSE_NEEDLES) + ("other",)


def recovery_cause(reason: str) -> str:
    """A small fixed set of label values for metrics, from a free-text reason."""
    for needle, cause in _CAUSE_NEEDLES:
        if needle in reason:
            return cause
    return "other"


class ModelService:
    """Implements ``Inference`` over whichever engine is current; see the module doc."""

    def __init__(
        self,
        tasks: TaskRegistry,
        load_engine: Callable[[], Inference],
        self_test: Callable[[Inference], str] = basic_self_test,
        max_backoff_s: float = 60.0,
    ) -> None:
        self.tasks = tasks
        self._load_engine = load_engine
        self._self_test = self_test
        self._max_backoff_s = max_backoff_s
        self._engine: Inference | None = None
        self._lock = threading.Lock()  # guards _engine and _snapshot replacement
        self._closing = threading.Event()
        self._wake = threading.Event()  # cuts a retry's backoff short (an operator asked for a reload)
        self._snapshot = HealthSnapshot(State.LOADING, None, "starting", None, 0, time.time())
        self._thread: threading.Thread | None = None
        # True from the moment a load/reload/recovery starts until its model is swapped in
        # (or it gives up). Cleared under the lock at the swap, so a reload asked for the
        # instant the service turns ready is not mistaken for "a load is already under way".
        self._loading = False
        self._last_success: float | None = None  # monotonic time of the last successful request
        self.stats = ServiceStats(self_tests={"passed": 0, "failed": 0},
                                  recoveries=dict.fromkeys(RECOVERY_CAUSES, 0))
        self._fingerprint: tuple | None = None  # the serving model's files when it was loaded
        self.events = EventLog()  # self-tests, loads, reloads and recoveries, for the Status tab

    # ----- state ----------------------------------------------------------

    def snapshot(self) -> HealthSnapshot:
        return self._snapshot

    def _set(self, **changes) -> None:
        with self._lock:
            self._snapshot = replace(self._snapshot, **changes)

    # ----- loading ----------------------------------------------------------

    def start(self) -> "ModelService":
        with self._lock:
            self._start_loader(self._load_until_ready, "model-loader")
        return self

    def _start_loader(self, target: Callable, name: str, *args) -> None:
        """Run one load/reload/recovery in the background. Call with the lock held."""

        def run() -> None:
            try:
                target(*args)
            finally:
                with self._lock:
                    self._loading = False

        self._loading = True
        self._thread = threading.Thread(target=run, name=name, daemon=True)
        self._thread.start()

    def wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._snapshot.ready:
                return True
            time.sleep(0.05)
        return self._snapshot.ready

    def _load_until_ready(self, failed_after: int = 1) -> None:
        """Load until a model passes its self-test, backing off between tries. The state
        turns ``failed`` after ``failed_after`` consecutive failures (and the tries go on)."""
        delay = min(1.0, self._max_backoff_s)
        attempts = 0
        while not self._closing.is_set():
            try:
                self._load_once()
                return
            except AllInOneError as exc:
                reason = exc.user_message
            except Exception as exc:  # never let the loader thread die silently
                logger.opt(exception=exc).error("model load failed unexpectedly")
                reason = f"loading failed: {exc}"
            attempts += 1
            self.events.add("load-failed", False, reason)
            self._set(
                state=State.FAILED if attempts >= failed_after else self._snapshot.state,
                reason=reason,
                consecutive_failures=self._snapshot.consecutive_failures + 1,
            )
            logger.error("model not available: {} (retrying in {:.0f} s)", reason, delay)
            self._wake.wait(delay)
            self._wake.clear()
            delay = min(delay * 2, self._max_backoff_s)

    def reload(self, reason: str) -> bool:
        """Load the active model again beside the one serving; swap once it passes its self-test.

        Requests keep being served by the old engine meanwhile; in-flight ones
        finish on it (it drains before closing). If the new load fails, the old
        engine keeps serving and ``/ready`` says why. Returns False when a load
        is already under way (a failed-state retry is then started at once).
        """
        with self._lock:
            if self._loading:
                self._wake.set()
                return False
            target = self._load_until_ready if self._engine is None else self._reload_beside
            self._start_loader(target, "model-reloader")
        self.stats.reloads += 1
        self.events.add("reload", True, reason)
        logger.info("model reload requested ({})", reason)
        return True

    def _reload_beside(self) -> None:
        try:
            self._load_once()
        except Exception as exc:
            message = exc.user_message if isinstance(exc, AllInOneError) else str(exc)
            self._set(reason=f"reload failed, still serving the previous model: {message}")
            self.events.add("load-failed", False, f"reload failed, still serving the previous model: {message}")
            logger.opt(exception=exc).error("model reload failed; still serving the previous model")

    def _load_once(self) -> None:
        started = time.monotonic()
        engine = self._load_engine()
        label = getattr(engine, "model_label", None)
        test_started = time.monotonic()
        try:
            detail = self._self_test(engine)
        except Exception:
            getattr(engine, "close", lambda: None)()
            raise
        result = SelfTestResult(True, time.time(), round(time.monotonic() - test_started, 3), detail)
        fingerprint = files_fingerprint(getattr(engine, "model_path", None))
        if self._closing.is_set():  # the service was closed while this load ran
            getattr(engine, "close", lambda: None)()
            return
        with self._lock:
            self._loading = False
            old, self._engine = self._engine, engine
            self._fingerprint = fingerprint
            self._snapshot = replace(
                self._snapshot, state=State.READY, model=label, reason=None,
                last_self_test=result, consecutive_failures=0,
            )
        self.events.add("self-test", True, detail)
        self.events.add("loaded", True, f"{label} in {time.monotonic() - started:.1f} s")
        if old is not None:
            getattr(old, "close", lambda **_: None)(drain=True)
        logger.info("model {} ready in {:.1f} s ({})", label, time.monotonic() - started, detail)

    def close(self) -> None:
        self._closing.set()
        self._wake.set()
        with self._lock:
            engine, self._engine = self._engine, None
        if engine is not None:
            getattr(engine, "close", lambda: None)()

    # ----- what the watchdog reads and does ------------------------------------

    def stuck_for(self) -> float:
        engine = self._engine
        return getattr(engine, "stuck_for", lambda: 0.0)() if engine is not None else 0.0

    def model_files_changed(self) -> bool:
        """True when the serving model's files differ (size or mtime) from when it was loaded."""
        engine = self._engine
        if engine is None or self._fingerprint is None:
            return False
        return files_fingerprint(getattr(engine, "model_path", None)) != self._fingerprint

    def seconds_since_success(self) -> float | None:
        last = self._last_success
        return None if last is None else time.monotonic() - last

    def record_self_test(self, passed: bool, duration_s: float, detail: str) -> None:
        result = SelfTestResult(passed, time.time(), round(duration_s, 3), detail)
        failures = 0 if passed else self._snapshot.consecutive_failures + 1
        self._set(last_self_test=result, consecutive_failures=failures)
        self.events.add("self-test", passed, detail)
        with self._lock:
            self.stats.self_tests["passed" if passed else "failed"] += 1

    def recover(self, reason: str) -> bool:
        """Detect -> isolate -> recover -> verify -> re-admit. Returns False if already recovering.

        The engine is dropped at once (new requests get "recovering, retry
        shortly"; in-flight ones fail fast or time out, never get an answer
        from a suspect model), then the model is loaded again from the store
        and must pass its self-test before traffic comes back.
        """
        with self._lock:
            if self._snapshot.state is not State.READY or self._loading:
                return False
            engine, self._engine = self._engine, None
            self._snapshot = replace(self._snapshot, state=State.RECOVERING, reason=reason)
            cause = recovery_cause(reason)
            self.stats.recoveries[cause] = self.stats.recoveries.get(cause, 0) + 1
            self._start_loader(self._recover, "model-recovery", engine)
        self.events.add("recovering", False, reason)
        logger.error("recovering: {}", reason)
        return True

    def _recover(self, suspect) -> None:
        started = time.monotonic()
        if suspect is not None:
            suspect.close(timeout=2.0)  # a hung worker cannot be joined; it is abandoned (daemon thread)
        del suspect
        import gc

        gc.collect()  # free the suspect model's memory before loading a fresh copy
        self._load_until_ready(failed_after=RECOVERY_ATTEMPTS_BEFORE_FAILED)
        if self._snapshot.ready:
            self.stats.last_recovery_s = time.monotonic() - started
            self.events.add("recovered", True, f"in {self.stats.last_recovery_s:.1f} s")
            logger.info("recovered in {:.1f} s", self.stats.last_recovery_s)

    def inject_fault(self, kind: str) -> None:
        """A fault drill on the serving engine (the admin route checks ``--fault-injection``)."""
        self._current().inject_fault(kind)

    def queue_depth(self) -> int:
        engine = self._engine
        return getattr(engine, "load", lambda: 0)() if engine is not None else 0

    # ----- Inference --------------------------------------------------------

    def _current(self) -> Inference:
        snap, engine = self._snapshot, self._engine
        if snap.state is not State.READY or engine is None:
            if snap.state is State.FAILED:
                raise ModelUnavailable(f"The model is not available: {snap.reason}")
            raise ModelUnavailable()
        return engine

    def task_infos(self) -> list[TaskInfo]:
        return self.tasks.infos()

    def classify(self, task: str, texts: Sequence[str]) -> list[ClassifyResult]:
        try:
            results = self._current().classify(task, texts)
        except InferenceFailed as exc:
            self.recover(f"a request failed: {exc}")  # real traffic is evidence of sickness too
            raise
        self._last_success = time.monotonic()
        return results

    def generate(
        self, task: str, message: str, history: Sequence[dict] | None = None, options: GenerateOptions | None = None
    ) -> Iterator[ChatUpdate]:
        return self._mark_success(self._current().generate(task, message, history, options))

    def _mark_success(self, stream: Iterator[ChatUpdate]) -> Iterator[ChatUpdate]:
        try:
            for update in stream:
                if update.done:
                    self._last_success = time.monotonic()
                yield update
        except InferenceFailed as exc:
            self.recover(f"a request failed: {exc}")
            raise
        finally:
            getattr(stream, "close", lambda: None)()
