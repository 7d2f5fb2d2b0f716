"""Putting a worker in service: load until one passes its self-test, or load one beside the serving one. No torch.

``WorkerLoader`` starts, self-tests and swaps in workers (``WorkerSupervisor``), backs off between failed
tries, stops the serving worker first when the new one would not fit beside it, and rolls back a version
that fails by its own fault (``StoreFollower``). Its flows start through its ``FlowGate``. The flows:
docs/internals.md, "The model's lifecycle".
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
from ops.serving.flows import FlowGate
from ops.serving.readiness import Readiness, SelfTestResult, State, SwitchMode
from ops.serving.spare import WarmSpare
from ops.serving.supervisor import WorkerHandle, WorkerSupervisor
from ops.store.follower import VERSION_FAULTS, StoreFollower, rollback_cause
from ops.store.integrity import IntegrityMonitor
from ops.store.manifest import MANIFEST, quick_check, weights_bytes

__all__ = ["WorkerLoader", "basic_self_test", "RECOVERY_ATTEMPTS_BEFORE_FAILED"]

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


class WorkerLoader:
    """Loads workers and puts them in service; see the module doc."""

    def __init__(self, supervisor: WorkerSupervisor, readiness: Readiness, follower: StoreFollower,
                 integrity: IntegrityMonitor, self_test: Callable[[Inference], str] = basic_self_test,
                 max_backoff_s: float = 60.0, available_memory: Callable[[], int] = free_memory_bytes,
                 spare: WarmSpare | None = None) -> None:
        """``spare``: the warm spare worker (``--spare-worker``), refilled for each version put in service."""
        self.supervisor = supervisor
        self.readiness = readiness
        self.follower = follower
        self.integrity = integrity
        self.spare = spare
        self._self_test = self_test
        self._max_backoff_s = max_backoff_s
        self._available_memory = available_memory
        self.gate = FlowGate(after=self._load_if_nothing_serves)

    def _load_if_nothing_serves(self) -> None:
        """The end of a flow (lock held): the serving worker was taken out while it ran (a recovery)
        and it put none in. Load, rather than serve nothing."""
        if self.supervisor.serving is None:
            self.gate.start(self.load_until_ready, "model-loader", RECOVERY_ATTEMPTS_BEFORE_FAILED)

    def load_until_ready(self, failed_after: int = 1, version: Path | None = None) -> None:
        """Load until a worker passes its self-test, backing off between tries. The state
        turns ``failed`` after ``failed_after`` consecutive failures (and the tries go on).

        ``version``: load this one (a recovery reloads what was serving, not whatever the link
        names by now) until it fails by its own fault (files gone or damaged, wrong answers); it
        is then rolled back and the tries go on with where the link points."""
        delay = min(1.0, self._max_backoff_s)
        attempts = 0
        while not self.gate.closed:
            try:
                self.load_once(version if version is not None else self.follower.target())
                return
            except AllInOneError as exc:
                reason = exc.user_message
                if version is not None and isinstance(exc, VERSION_FAULTS):
                    self.roll_back(version, exc)
                    version = None
            except Exception as exc:  # never let the loader thread die silently
                logger.opt(exception=exc).error("model load failed unexpectedly")
                reason = f"loading failed: {exc}"
            attempts += 1
            self.readiness.events.add("load-failed", False, reason)
            snapshot = self.readiness.snapshot()
            self.readiness.update(state=State.FAILED if attempts >= failed_after else snapshot.state, reason=reason,
                                  consecutive_failures=snapshot.consecutive_failures + 1)
            logger.error("model not available: {} (retrying in {:.0f} s)", reason, delay)
            self.gate.backoff(delay)
            delay = min(delay * 2, self._max_backoff_s)

    def load_once(self, target: Path | None) -> None:
        """Start a worker for ``target``, self-test it, and put it in service."""
        started = time.monotonic()
        if target is not None and (target / MANIFEST).is_file():
            problems = quick_check(target)
            if problems:
                raise ModelDamaged(f"{target.name} does not match its MANIFEST: {'; '.join(problems[:3])}")
        self.admit(self.supervisor.start_worker(target), started)

    def admit(self, worker: WorkerHandle, started: float) -> None:
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
        if self.gate.closed:  # the service was closed while this load ran
            self.supervisor.kill(worker)
            return
        with self.gate.lock:
            self.gate.swapped()
            old = self.supervisor.swap_in(worker)
            self.readiness.set_ready(worker.model_label, result, worker.pid, worker.precision, worker.heads,
                                     worker.backend)
        self.integrity.watch(worker.model_path)
        events = self.readiness.events
        events.add("self-test", True, detail)
        events.add("loaded", True, f"{worker.model_label} in {time.monotonic() - started:.1f} s")
        logger.info("model {} ready in {:.1f} s ({})", worker.model_label, time.monotonic() - started, detail)
        if old is not None:  # it finishes its open requests (up to the request timeout) in the background
            threading.Thread(target=self.supervisor.retire, args=(old,), name="worker-retire", daemon=True).start()
        if self.spare is not None:
            self.spare.refill(worker.model_path)

    def load_beside(self, may_roll_back: bool = True) -> None:
        """Load the version the link names beside the serving worker and swap it in; a new version
        that fails is rolled back (with ``may_roll_back``) and the serving worker goes on."""
        if self.spare is not None:  # its memory goes to the new worker, which gets a spare of its own once in
            self.spare.discard()
        serving = self.supervisor.serving
        good = serving.model_path if serving is not None else None
        target = unloaded = None
        try:
            target = self.follower.target()
            unloaded = target is not None and self._unload_if_no_room(target)
            self.load_once(target)
        except Exception as exc:
            message = exc.user_message if isinstance(exc, AllInOneError) else str(exc)
            if may_roll_back and target is not None and good is not None and target != good:
                self.roll_back(target, exc, serving=good)
            else:
                self.readiness.update(reason=f"reload failed, still serving the previous model: {message}")
                self.readiness.events.add("load-failed", False,
                                          f"reload failed, still serving the previous model: {message}")
                logger.opt(exception=exc).error("model reload failed; still serving the previous model")
            if unloaded:  # nothing serves now: load what the link names (the good version, after a rollback)
                self.load_until_ready(failed_after=RECOVERY_ATTEMPTS_BEFORE_FAILED)
            elif self.spare is not None and self.supervisor.serving is not None:
                self.spare.refill(self.supervisor.serving.model_path)
            return
        if target is not None and good is not None and target != good:
            mode = SwitchMode.UNLOAD_FIRST if unloaded else SwitchMode.BESIDE
            self.readiness.count_switch(mode)
            self.readiness.events.add("switch", True, f"{good.name} -> {target.name} ({mode.value.replace('_', ' ')})")

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
        self.readiness.events.add("unload-first", False, message)
        with self.gate.lock:
            old = self.supervisor.take_out()
            self.readiness.update(state=State.LOADING, reason=message, worker_pid=None)
        self.supervisor.retire(old)
        return True

    def roll_back(self, bad: Path, error: BaseException, serving: Path | None = None) -> Path | None:
        """``bad`` failed: refuse it and point the link where the store's rule says (the version
        ``serving``, if still eligible). Returns where the link points, or None: nothing eligible."""
        good, detail = self.follower.roll_back(bad, error, serving, self.integrity.verified(serving))
        self.readiness.count_rollback(rollback_cause(error))
        self.readiness.events.add("rollback", False, detail)
        self.readiness.update(reason=f"rolled back: {detail}")
        logger.error("automatic rollback: {}", detail)
        return good
