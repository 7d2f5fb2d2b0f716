"""The model's lifecycle: load, reload, recover, roll back, restore. No torch.

``Lifecycle`` runs the flows, one at a time in a background thread, over four parts with one job each:
``WorkerSupervisor``, ``Readiness``, ``StoreFollower`` and ``IntegrityMonitor``. The flows are in
docs/architecture.md, "The model's lifecycle".
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Callable

from loguru import logger

from engine.errors import AllInOneError, ModelDamaged, SelfTestFailed
from engine.types import GenerateOptions, Inference, TaskKind
from ops.common.proc import free_memory_bytes
from ops.serving.readiness import Readiness, RecoveryCause, SelfTestResult, State, SwitchMode
from ops.serving.spare import WarmSpare
from ops.serving.supervisor import WorkerHandle, WorkerSupervisor
from ops.store.follower import VERSION_FAULTS, StoreFollower, rollback_cause
from ops.store.integrity import IntegrityMonitor
from ops.store.manifest import MANIFEST, quick_check, weights_bytes

__all__ = ["Lifecycle", "basic_self_test"]

RECOVERY_ATTEMPTS_BEFORE_FAILED = 3
# Loading beside needs the new weights plus activations, tokenizer and warm-up caches.
LOAD_MEMORY_FACTOR = 1.3


def basic_self_test(engine: Inference) -> str:
    """A real tensor operation on every task: each must answer validly. Returns a summary;
    raises ``SelfTestFailed``. (Known-answer probes are the watchdog's: ``ops.serving.watchdog.Probes``.)"""
    parts = []
    for info in engine.task_infos():
        if info.kind is TaskKind.CLASSIFY:
            result = engine.classify(info.name, ["self-test 自检"])[0]
            if result.label not in info.labels or not 0.0 <= result.confidence <= 1.0:
                raise SelfTestFailed(f"self-test: {info.name} gave an invalid answer")
            parts.append(f"{info.name}={result.label}")
        else:
            update = None
            for update in engine.generate(info.name, "Say OK.", options=GenerateOptions(max_new_tokens=2, priority=True)):
                pass
            if update is None or not update.done:
                raise SelfTestFailed(f"self-test: {info.name} did not finish")
            parts.append(f"{info.name}:{update.tokens} tokens")
    return ", ".join(parts)


class Lifecycle:
    """The flows: docs/architecture.md, "The model's lifecycle"."""

    def __init__(self, supervisor: WorkerSupervisor, readiness: Readiness, follower: StoreFollower,
                 integrity: IntegrityMonitor, self_test: Callable[[Inference], str] = basic_self_test,
                 max_backoff_s: float = 60.0, available_memory: Callable[[], int] = free_memory_bytes,
                 spare: WarmSpare | None = None) -> None:
        """``spare``: the warm spare worker (``--spare-worker``) that a recovery switches to, if any."""
        self.supervisor = supervisor
        self.spare = spare
        self.readiness = readiness
        self.events = readiness.events
        self.follower = follower
        self.integrity = integrity
        self._self_test = self_test
        self._max_backoff_s = max_backoff_s
        self._available_memory = available_memory
        self._lock = threading.Lock()  # guards _loading: one load, reload or recovery at a time
        self._closing = threading.Event()
        self._wake = threading.Event()  # cuts a retry's backoff short (an operator asked for a reload)
        # True from the moment a load/reload/recovery starts until its worker is swapped in (or it
        # gives up). Cleared under the lock at the swap, so a reload asked for the instant the
        # service turns ready is not mistaken for "a load is already under way".
        self._loading = False
        self._flow: threading.Thread | None = None  # the flow that owns _loading

    def snapshot(self):
        return self.readiness.snapshot()

    # ----- the flows ------------------------------------------------------------------

    def start(self) -> "Lifecycle":
        with self._lock:
            self._start_flow(self._load_until_ready, "model-loader")
        return self

    def _start_flow(self, target: Callable, name: str, *args) -> None:
        """Run one load/reload/recovery in the background. Call with the lock held.

        A flow gives up the "loading" flag at its swap (``_load_once``), so another may
        start while it finishes up; its end must not clear the flag of the one after it."""

        def run() -> None:
            try:
                target(*args)
            finally:
                with self._lock:
                    if self._flow is flow:
                        self._loading = False
                        if self.supervisor.serving is None and not self._closing.is_set():
                            # The serving worker was taken out while this flow ran (``recover``) and
                            # the flow put none in: load, rather than serve nothing.
                            self._start_flow(self._load_until_ready, "model-loader", RECOVERY_ATTEMPTS_BEFORE_FAILED)

        flow = threading.Thread(target=run, name=name, daemon=True)
        self._flow = flow
        self._loading = True
        flow.start()

    def wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self.snapshot().ready and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.snapshot().ready

    def _load_until_ready(self, failed_after: int = 1, version: Path | None = None) -> None:
        """Load until a worker passes its self-test, backing off between tries. The state
        turns ``failed`` after ``failed_after`` consecutive failures (and the tries go on).

        ``version``: load this one (a recovery reloads what was serving, not whatever the link
        names by now) until it fails by its own fault (files gone or damaged, wrong answers); it
        is then rolled back and the tries go on with where the link points."""
        delay = min(1.0, self._max_backoff_s)
        attempts = 0
        while not self._closing.is_set():
            try:
                self._load_once(version if version is not None else self.follower.target())
                return
            except AllInOneError as exc:
                reason = exc.user_message
                if version is not None and isinstance(exc, VERSION_FAULTS):
                    self._roll_back(version, exc)
                    version = None
            except Exception as exc:  # never let the loader thread die silently
                logger.opt(exception=exc).error("model load failed unexpectedly")
                reason = f"loading failed: {exc}"
            attempts += 1
            self.events.add("load-failed", False, reason)
            snapshot = self.snapshot()
            self.readiness.update(state=State.FAILED if attempts >= failed_after else snapshot.state, reason=reason,
                                  consecutive_failures=snapshot.consecutive_failures + 1)
            logger.error("model not available: {} (retrying in {:.0f} s)", reason, delay)
            self._wake.wait(delay)
            self._wake.clear()
            delay = min(delay * 2, self._max_backoff_s)

    def _load_once(self, target: Path | None) -> None:
        """Start a worker for ``target``, self-test it, and put it in service."""
        started = time.monotonic()
        if target is not None and (target / MANIFEST).is_file():
            problems = quick_check(target)
            if problems:
                raise ModelDamaged(f"{target.name} does not match its MANIFEST: {'; '.join(problems[:3])}")
        self._admit(self.supervisor.start_worker(target), started)

    def _admit(self, worker: WorkerHandle, started: float) -> None:
        """Self-test a started worker and put it in service (a fresh load, or the warm spare)."""
        test_started = time.monotonic()
        try:
            detail = self._self_test(worker)
        except Exception as exc:
            self.supervisor.kill(worker)
            if isinstance(exc, SelfTestFailed):
                raise
            raise SelfTestFailed(f"self-test failed: {exc}") from exc
        result = SelfTestResult(True, time.time(), round(time.monotonic() - test_started, 3), detail)
        if self._closing.is_set():  # the service was closed while this load ran
            self.supervisor.kill(worker)
            return
        with self._lock:
            self._loading = False
            old = self.supervisor.swap_in(worker)
            self.readiness.set_ready(worker.model_label, result, worker.pid, worker.precision, worker.heads,
                                     worker.backend)
        self.integrity.watch(worker.model_path)
        self.events.add("self-test", True, detail)
        self.events.add("loaded", True, f"{worker.model_label} in {time.monotonic() - started:.1f} s")
        logger.info("model {} ready in {:.1f} s ({})", worker.model_label, time.monotonic() - started, detail)
        if old is not None:  # it finishes its open requests (up to the request timeout) in the background
            threading.Thread(target=self.supervisor.retire, args=(old,), name="worker-retire", daemon=True).start()
        if self.spare is not None:
            self.spare.refill(worker.model_path)

    def reload(self, reason: str, operator: bool = True) -> bool:
        """Start the active version's worker beside the one serving; swap once it passes its self-test.

        With a store this is also how a new version comes in: the link is
        resolved again, so after ``activate`` the new version loads. The old
        worker serves meanwhile and finishes its open requests. If the new one
        fails, the old one keeps serving, ``/ready`` says why, and a new
        version is rolled back. Returns False when a load is already under way
        (a failed-state retry is then started at once).
        """
        with self._lock:
            if self._loading:
                self._wake.set()
                return False
            if operator:
                self.readiness.count_reload()
            self.events.add("reload", True, reason)  # before the flow can add its own events
            flow = self._load_until_ready if self.supervisor.serving is None else self._reload_beside
            self._start_flow(flow, "model-reloader")
        logger.info("model reload requested ({})", reason)
        return True

    def _reload_beside(self, may_roll_back: bool = True) -> None:
        if self.spare is not None:  # its memory goes to the new worker, which gets a spare of its own once in
            self.spare.discard()
        serving = self.supervisor.serving
        good = serving.model_path if serving is not None else None
        target = unloaded = None
        try:
            target = self.follower.target()
            unloaded = target is not None and self._unload_if_no_room(target)
            self._load_once(target)
        except Exception as exc:
            message = exc.user_message if isinstance(exc, AllInOneError) else str(exc)
            if may_roll_back and target is not None and good is not None and target != good:
                self._roll_back(target, exc, serving=good)
            else:
                self.readiness.update(reason=f"reload failed, still serving the previous model: {message}")
                self.events.add("load-failed", False, f"reload failed, still serving the previous model: {message}")
                logger.opt(exception=exc).error("model reload failed; still serving the previous model")
            if unloaded:  # nothing serves now: load what the link names (the good version, after a rollback)
                self._load_until_ready(failed_after=RECOVERY_ATTEMPTS_BEFORE_FAILED)
            elif self.spare is not None and self.supervisor.serving is not None:
                self.spare.refill(self.supervisor.serving.model_path)
            return
        if target is not None and good is not None and target != good:
            mode = SwitchMode.UNLOAD_FIRST if unloaded else SwitchMode.BESIDE
            self.readiness.count_switch(mode)
            self.events.add("switch", True, f"{good.name} -> {target.name} ({mode.value.replace('_', ' ')})")

    def _unload_if_no_room(self, target: Path) -> bool:
        """Stop the serving worker when the new version would not fit beside it; True if it did."""
        need = int(weights_bytes(target) * LOAD_MEMORY_FACTOR)
        available = self._available_memory()
        if need <= available:
            return False
        message = (f"not enough free memory to load {target.name} beside the serving model (needs about "
                   f"{need / 2**30:.1f} GiB, {available / 2**30:.1f} GiB available): unloading it first; "
                   "requests wait until the new version is ready")
        logger.warning(message)
        self.events.add("unload-first", False, message)
        with self._lock:
            old = self.supervisor.take_out()
            self.readiness.update(state=State.LOADING, reason=message, worker_pid=None)
        self.supervisor.retire(old)
        return True

    def _roll_back(self, bad: Path, error: BaseException, serving: Path | None = None) -> Path | None:
        """``bad`` failed: refuse it and point the link where the store's rule says (the version
        ``serving``, if still eligible). Returns where the link points, or None: nothing eligible."""
        good, detail = self.follower.roll_back(bad, error, serving, self.integrity.verified(serving))
        self.readiness.count_rollback(rollback_cause(error))
        self.events.add("rollback", False, detail)
        self.readiness.update(reason=f"rolled back: {detail}")
        logger.error("automatic rollback: {}", detail)
        return good

    def recover(self, cause: RecoveryCause, reason: str) -> bool:
        """Detect -> isolate -> recover -> verify -> re-admit. Returns False if already recovering.

        The worker is taken out at once (new requests get "recovering, retry
        shortly"), then killed: its open requests fail fast and are never
        answered by a suspect model, and everything it held is freed. A fresh
        worker is started from the store and must pass its self-test before
        traffic comes back.
        """
        with self._lock:
            if not self.snapshot().ready:
                return False
            replacing = self._loading  # a replacement is loading: it, not a new flow, comes into service
            if replacing:
                reason = f"{reason}; the replacement already loading takes over"
            suspect = self.supervisor.take_out()
            self.readiness.update(state=State.RECOVERING, reason=reason, worker_pid=None)
            self.readiness.count_recovery(cause)
            self.events.add("recovering", False, reason)
            if replacing:
                threading.Thread(target=self.supervisor.kill, args=(suspect,), name="worker-kill",
                                 daemon=True).start()
            else:
                self._start_flow(self._recover, "model-recovery", suspect, cause)
        logger.error("recovering ({}): {}", cause.value, reason)
        return True

    def _recover(self, suspect: WorkerHandle | None, cause: RecoveryCause) -> None:
        started = time.monotonic()
        serving = suspect.model_path if suspect is not None else None
        # The suspect ends beside the new worker's start: a hung one ignores SIGTERM for its whole grace period.
        threading.Thread(target=self.supervisor.kill, args=(suspect,), name="worker-kill", daemon=True).start()
        if not self._switch_to_spare(serving, cause, started):
            self._load_until_ready(failed_after=RECOVERY_ATTEMPTS_BEFORE_FAILED, version=serving)
        if self.snapshot().ready:
            seconds = time.monotonic() - started
            self.readiness.recovered_in(seconds)
            self.events.add("recovered", True, f"in {seconds:.1f} s")
            logger.info("recovered in {:.1f} s", seconds)

    def _switch_to_spare(self, version: Path | None, cause: RecoveryCause, started: float) -> bool:
        """Put the warm spare in service, if there is one for ``version``; True if it now serves. Not when
        the files changed on disk: the spare was loaded from the files before the change."""
        spare = self.spare.take(version) if self.spare is not None and cause is not RecoveryCause.FILES else None
        if spare is None:
            return False
        try:
            self._admit(spare, started)
        except AllInOneError as exc:
            self.events.add("spare", False, f"the warm spare failed its self-test ({exc.user_message}): loading")
            return False
        self.events.add("spare", True, f"switched to the warm spare worker (pid {spare.pid})")
        return True

    def replace_damaged(self, reason: str) -> bool:
        """The serving version's files are damaged: switch to a verified good version and load it
        beside the in-memory copy, which was loaded before the damage and serves meanwhile.
        False when a load is already under way or the damage was already acted on."""
        with self._lock:
            if self._loading:
                return False
            damaged = self.integrity.take_damage()
            if damaged is None:
                return False
            self.readiness.count_integrity_failure()
            self.events.add("integrity", False, reason)
            self._start_flow(self._restore, "model-restore", damaged, reason)
        logger.error("INTEGRITY: {}", reason)
        return True

    def _restore(self, damaged: Path, reason: str) -> None:
        if self.follower.replacement(damaged) is None:
            message = (f"{reason}; no verified version to go back to (none that is not rejected), so the copy loaded "
                       f"into memory before the damage keeps serving. Reinstall {damaged.name} or activate a "
                       "good version.")
            self.readiness.update(reason=message, degraded=message)
            logger.error("INTEGRITY: {}", message)
            return
        self._roll_back(damaged, ModelDamaged(reason))  # the damaged version is refused: never back to it
        self._reload_beside(may_roll_back=False)

    def close(self) -> None:
        self._closing.set()
        self._wake.set()
        if self.spare is not None:
            self.spare.close()
        self.supervisor.kill(self.supervisor.take_out())
