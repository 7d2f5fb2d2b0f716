"""Which model serves, and in what state: the service the UI and routes talk to.

``ModelService`` loads the model in the background so the process answers
``/health`` from its first second, keeps a readiness snapshot (``loading``,
``ready``, ``recovering``, ``failed``) that readers get without waiting, and
hands requests to the current ``Engine`` only while ``ready``; otherwise the
caller gets a clear ``ModelUnavailable`` naming the reason. A missing or
broken model is retried with backoff, so installing it while the app runs is
enough. The model code itself is injected (``loader`` and ``engine_factory``),
so this module never imports torch.

Following the model store (``source``, an ``ops.store.ModelSource``): every
load resolves the link (``models/current``) once and checks the version's
files against its MANIFEST by size; the SHA-256 check runs in the background
right after (hashing 2.5 GB takes about 9 s here and would double a load it
ran beside, see ``docs/benchmarks.md``). A new version is loaded beside the
serving one when free memory allows (else the serving one is unloaded first,
and the events say so), must pass the self-test, and is then swapped in;
requests in flight finish on the old engine. If it fails to load or fails
its self-test, the old engine keeps serving and the link is pointed back to
it: an automatic rollback, in the logs, the metrics and the events. A serving
version whose files stop matching their MANIFEST is replaced by the last good
version.
"""

from __future__ import annotations

import gc
import os
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import Callable, Iterator, Sequence

from loguru import logger

from engine.errors import AllInOneError, InferenceFailed, ModelDamaged, ModelUnavailable
from engine.tasks import TaskRegistry
from engine.types import ChatUpdate, ClassifyResult, GenerateOptions, Inference, TaskInfo
from ops.history import EventLog
from ops.store import MANIFEST, ModelSource, full_check, quick_check, weights_bytes

__all__ = ["State", "SelfTestResult", "HealthSnapshot", "DiskCheck", "ModelService"]


RECOVERY_ATTEMPTS_BEFORE_FAILED = 3
_CAUSE_NEEDLES = (("hung", "hang"), ("memory", "memory"), ("self-test", "self_test"), ("files", "files"),
                  ("request failed", "failed_request"))
RECOVERY_CAUSES = tuple(cause for _, cause in _CAUSE_NEEDLES) + ("other",)
# Loading beside needs the new weights plus activations, tokenizer and warm-up caches.
LOAD_MEMORY_FACTOR = 1.3


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
    """Running totals for ``/metrics`` (read at scrape time; written under the service lock).

    Every recovery cause is there from the start, at 0: a counter that first appears
    at 1 is invisible to Prometheus' ``increase()``, so the first recovery would never alert.
    """

    self_tests: dict[str, int]
    recoveries: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RECOVERY_CAUSES, 0))
    reloads: int = 0  # operator reloads
    last_recovery_s: float = 0.0
    rollbacks: dict[str, int] = field(default_factory=dict)  # by cause: load_failed, self_test, damaged
    switches: dict[str, int] = field(default_factory=dict)  # version switches by mode: beside, unload_first
    integrity_failures: int = 0


@dataclass(frozen=True)
class DiskCheck:
    """What the watchdog learns from the disk (cheap: a link, names, sizes, mtimes)."""

    files_changed: bool = False  # the serving files changed, and there is no MANIFEST to judge them by
    damaged: str | None = None  # the serving version no longer matches its MANIFEST (hashed)
    switched_to: str | None = None  # the link now names another version than the one serving


def _available_memory() -> int:
    import psutil

    return psutil.virtual_memory().available


def _close(engine, **how) -> None:
    """Close an engine (``drain=True``: after its work finishes) or a stream; fakes may have no ``close``."""
    close = getattr(engine, "close", None)
    if close is not None:
        close(**how)


def files_fingerprint(path) -> tuple | None:
    """A cheap picture of a model directory: (name, size, mtime) of every file."""
    if path is None:
        return None
    try:
        return tuple(sorted((str(p.relative_to(path)), st.st_size, st.st_mtime_ns)
                            for p in Path(path).rglob("*") if p.is_file() for st in [p.stat()]))
    except OSError:
        return ("unreadable",)


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
        source: ModelSource | None = None,
        available_memory: Callable[[], int] = _available_memory,
    ) -> None:
        """With a ``source``, ``load_engine`` is called with the version directory to load."""
        self.tasks = tasks
        self._load_engine = load_engine
        self._source = source
        self._available_memory = available_memory
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
        self.stats = ServiceStats(self_tests={"passed": 0, "failed": 0})
        self._fingerprint: tuple | None = None  # the serving model's files when it was loaded (or last hashed)
        self._hashed: tuple | None = None  # (path, fingerprint) the background SHA-256 check last judged
        self._hashing = False
        self._damage: tuple[Path, str] | None = None  # a serving version found damaged, not yet acted on
        self._good: list[Path] = []  # versions that passed their self-test here, oldest first
        self._refused: tuple | None = None  # (version, link stamp) rolled back: not tried again until re-activated
        self.events = EventLog()  # self-tests, loads, reloads, switches, rollbacks and recoveries, for the Status tab

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
                self._load_once(self._target())
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

    def reload(self, reason: str, operator: bool = True) -> bool:
        """Load the active model version beside the one serving; swap once it passes its self-test.

        With a store source this is also how a new version comes in: the link
        is resolved again, so after ``activate`` it loads the new version.
        Requests keep being served by the old engine meanwhile; in-flight ones
        finish on it (it drains before closing). If the new load fails, the old
        engine keeps serving, ``/ready`` says why, and a new version is rolled
        back. Returns False when a load is already under way (a failed-state
        retry is then started at once).
        """
        with self._lock:
            if self._loading:
                self._wake.set()
                return False
            target = self._load_until_ready if self._engine is None else self._reload_beside
            self._start_loader(target, "model-reloader")
        if operator:
            self.stats.reloads += 1
        self.events.add("reload", True, reason)
        logger.info("model reload requested ({})", reason)
        return True

    def _target(self) -> Path | None:
        return self._source.active() if self._source is not None else None

    def _reload_beside(self, may_roll_back: bool = True) -> None:
        target = self._target()
        good = getattr(self._engine, "model_path", None)
        unloaded = target is not None and self._unload_if_no_room(target)
        try:
            self._load_once(target)
        except Exception as exc:
            message = exc.user_message if isinstance(exc, AllInOneError) else str(exc)
            if may_roll_back and target is not None and good is not None and target != good:
                self._roll_back(target, good, message)
            else:
                self._set(reason=f"reload failed, still serving the previous model: {message}")
                self.events.add("load-failed", False, f"reload failed, still serving the previous model: {message}")
                logger.opt(exception=exc).error("model reload failed; still serving the previous model")
            if unloaded:  # nothing serves now: load what the link names (the good version, after a rollback)
                self._load_until_ready(failed_after=RECOVERY_ATTEMPTS_BEFORE_FAILED)
            return
        if target is not None and good is not None and target != good:
            mode = "unload_first" if unloaded else "beside"
            with self._lock:
                self.stats.switches[mode] = self.stats.switches.get(mode, 0) + 1
            self.events.add("switch", True, f"{good.name} -> {target.name} ({mode.replace('_', ' ')})")

    def _unload_if_no_room(self, target: Path) -> bool:
        """Unload the serving engine when the new version would not fit beside it; True if it did."""
        need = int(weights_bytes(target) * LOAD_MEMORY_FACTOR)
        available = self._available_memory()
        if need <= available:
            return False
        message = (f"not enough free memory to load {target.name} beside the serving model (needs about "
                   f"{need / 2**30:.1f} GiB, {available / 2**30:.1f} GiB available): unloading it first; "
                   "requests get 'retry shortly' until the new version is ready")
        logger.warning(message)
        self.events.add("unload-first", False, message)
        with self._lock:
            old, self._engine = self._engine, None
            self._snapshot = replace(self._snapshot, state=State.LOADING, reason=message)
        if old is not None:
            _close(old, drain=True)
        del old
        gc.collect()
        return True

    def _roll_back(self, bad: Path, good: Path, why: str) -> None:
        """``bad`` failed: keep (or bring back) ``good`` and point the link back at it."""
        cause = "damaged" if "MANIFEST" in why else "self_test" if "self-test" in why else "load_failed"
        try:
            pointed = self._source.point_back(bad, good, why) if self._source is not None else False
        except OSError as exc:
            logger.error("could not point the model link back: {}", exc)
            pointed = False
        self._refused = (bad, self._source.stamp() if self._source is not None else None)
        with self._lock:
            self.stats.rollbacks[cause] = self.stats.rollbacks.get(cause, 0) + 1
        where = f"{self._source.link} points back to {good.name}" if pointed else "the link was not moved back"
        detail = f"{bad.name} rejected ({why}); {where}"
        self.events.add("rollback", False, detail)
        self._set(reason=f"rolled back: {detail}")
        logger.error("automatic rollback: {}", detail)

    def _load_once(self, target: Path | None = None) -> None:
        started = time.monotonic()
        if target is not None and (target / MANIFEST).is_file():
            problems = quick_check(target)
            if problems:
                raise ModelDamaged(f"{target.name} does not match its MANIFEST: {'; '.join(problems[:3])}")
        engine = self._load_engine(target) if self._source is not None else self._load_engine()
        label = getattr(engine, "model_label", None)
        test_started = time.monotonic()
        try:
            detail = self._self_test(engine)
        except Exception as exc:
            _close(engine)
            if isinstance(exc, AllInOneError) and "self-test" in str(exc):
                raise
            raise ModelUnavailable(f"self-test failed: {exc}") from exc
        result = SelfTestResult(True, time.time(), round(time.monotonic() - test_started, 3), detail)
        path = getattr(engine, "model_path", None)
        fingerprint = files_fingerprint(path)
        if self._closing.is_set():  # the service was closed while this load ran
            _close(engine)
            return
        with self._lock:
            self._loading = False
            old, self._engine = self._engine, engine
            self._fingerprint = fingerprint
            self._damage = None
            self._snapshot = replace(
                self._snapshot, state=State.READY, model=label, reason=None,
                last_self_test=result, consecutive_failures=0,
            )
            if path is not None:
                self._good = [p for p in self._good if p != path][-9:] + [Path(path)]
        self.events.add("self-test", True, detail)
        self.events.add("loaded", True, f"{label} in {time.monotonic() - started:.1f} s")
        # Hash in the background unless these very files (same size and mtime) were already
        # hashed here: a recovery reloads the same version, and hashing 2.5 GB beside its
        # warm-up slowed the recovery by seconds.
        if path is not None and (Path(path) / MANIFEST).is_file() and self._hashed != (Path(path), fingerprint):
            self._check_hashes(Path(path), fingerprint)
        if old is not None:
            _close(old, drain=True)
        logger.info("model {} ready in {:.1f} s ({})", label, time.monotonic() - started, detail)

    def close(self) -> None:
        self._closing.set()
        self._wake.set()
        with self._lock:
            engine, self._engine = self._engine, None
        if engine is not None:
            _close(engine)

    # ----- what the watchdog reads and does ------------------------------------

    def stuck_for(self) -> float:
        engine = self._engine
        return getattr(engine, "stuck_for", lambda: 0.0)() if engine is not None else 0.0

    def model_on_disk(self) -> DiskCheck:
        """Cheap (names, sizes, mtimes, the link); a change in a store version's files starts a
        background SHA-256 check, whose verdict a later call reports."""
        engine = self._engine
        path = getattr(engine, "model_path", None) if engine is not None else None
        if path is None or self._fingerprint is None:
            return DiskCheck()
        path = Path(path)
        switched_to = None
        if self._source is not None:
            target = self._source.active()
            if target is not None and target != path and self._refused != (target, self._source.stamp()):
                switched_to = target.name
        fingerprint = files_fingerprint(path)
        if not (path / MANIFEST).is_file():
            return DiskCheck(files_changed=fingerprint != self._fingerprint, switched_to=switched_to)
        damage = self._damage
        if damage is not None and damage[0] == path:
            return DiskCheck(damaged=damage[1], switched_to=switched_to)
        if fingerprint != self._fingerprint and self._hashed != (path, fingerprint):
            self._check_hashes(path, fingerprint)
        return DiskCheck(switched_to=switched_to)

    def _check_hashes(self, path: Path, fingerprint: tuple | None) -> None:
        """Hash ``path`` against its MANIFEST in the background; one check at a time."""
        with self._lock:
            if self._hashing:
                return
            self._hashing = True

        def run() -> None:
            try:
                # Lowest CPU priority for this thread only (Linux): requests keep the cores.
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
            except (AttributeError, OSError):
                pass
            try:
                problems = full_check(path)
            except Exception as exc:  # an unreadable file is a finding, and the flag must be cleared
                problems = [f"unreadable: {exc}"]
            with self._lock:
                self._hashing = False
                if getattr(self._engine, "model_path", None) != path:
                    return  # another version serves by now
                self._hashed = (path, fingerprint)
                if problems:
                    self._damage = (path, "; ".join(problems[:3]))
                else:
                    self._fingerprint = fingerprint  # touched but intact: the new picture is the good one
            if problems:
                logger.error("INTEGRITY: the serving version {} does not match its MANIFEST: {}",
                             path.name, "; ".join(problems))
            else:
                logger.info("{} matches its MANIFEST (SHA-256)", path.name)

        threading.Thread(target=run, name="integrity-check", daemon=True).start()

    def replace_damaged(self, reason: str) -> bool:
        """The serving version's files are damaged: switch to the last good version (verified
        first) and reload it beside the in-memory copy, which was loaded before the damage and
        keeps serving meanwhile. False when a load is already under way."""
        damage = self._damage
        with self._lock:
            if damage is None or self._loading:
                return False
            self._damage = None  # acted on once; the next change of the files is judged again
            self.stats.integrity_failures += 1
            self._start_loader(self._restore, "model-restore", damage[0], reason)
        self.events.add("integrity", False, reason)
        logger.error("INTEGRITY: {}", reason)
        return True

    def _restore(self, damaged: Path, reason: str) -> None:
        good = None
        if self._source is not None:
            good = self._source.verified_fallback(damaged, list(reversed(self._good)))
        if good is None:
            message = (f"{reason}; no verified version to go back to, so the copy loaded into memory before "
                       f"the damage keeps serving. Reinstall {damaged.name} or activate a good version.")
            self._set(reason=message)
            logger.error("INTEGRITY: {}", message)
            return
        self._roll_back(damaged, good, reason)
        self._reload_beside(may_roll_back=False)  # never back to the damaged version

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
            self.stats.recoveries[cause] += 1
            self._start_loader(self._recover, "model-recovery", engine)
        self.events.add("recovering", False, reason)
        logger.error("recovering: {}", reason)
        return True

    def _recover(self, suspect) -> None:
        started = time.monotonic()
        if suspect is not None:
            suspect.close(timeout=2.0)  # a hung worker cannot be joined; it is abandoned (daemon thread)
        del suspect
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

    def _on_current(self, call: Callable[[Inference], object]):
        """``call(engine)``; once more on the new engine if a hot swap closed the old one between
        picking it and handing it the request (the request never ran, so retrying is safe)."""
        engine = self._current()
        try:
            return call(engine)
        except ModelUnavailable:
            if self._engine is engine or self._engine is None or not self._snapshot.ready:
                raise
            return call(self._current())

    def classify(self, task: str, texts: Sequence[str]) -> list[ClassifyResult]:
        try:
            results = self._on_current(lambda engine: engine.classify(task, texts))
        except InferenceFailed as exc:
            self.recover(f"a request failed: {exc}")  # real traffic is evidence of sickness too
            raise
        self._last_success = time.monotonic()
        return results

    def generate(
        self, task: str, message: str, history: Sequence[dict] | None = None, options: GenerateOptions | None = None
    ) -> Iterator[ChatUpdate]:
        return self._mark_success(self._on_current(lambda engine: engine.generate(task, message, history, options)))

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
            _close(stream)
