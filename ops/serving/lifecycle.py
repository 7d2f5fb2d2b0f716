"""The model's lifecycle: start, reload (a new version too), restore a damaged version, close. No torch.

``Lifecycle`` decides which flow starts, one at a time through the ``WorkerLoader``'s ``FlowGate``; the
loader does the loading, ``ops.serving.recovery`` the recoveries. Its parts: ``WorkerSupervisor``,
``Readiness``, ``StoreFollower`` and ``IntegrityMonitor``. The flows: docs/internals.md, "The model's
lifecycle".
"""

from __future__ import annotations

from pathlib import Path

from loguru import logger

from engine.errors import ModelDamaged
from ops.serving.loader import WorkerLoader
from ops.serving.readiness import Readiness
from ops.serving.spare import WarmSpare
from ops.serving.supervisor import WorkerSupervisor
from ops.store.follower import StoreFollower
from ops.store.integrity import IntegrityMonitor

__all__ = ["Lifecycle"]


class Lifecycle:
    """The flows that start, switch and restore versions; see the module doc."""

    def __init__(self, loader: WorkerLoader, supervisor: WorkerSupervisor, readiness: Readiness,
                 follower: StoreFollower, integrity: IntegrityMonitor, spare: WarmSpare | None = None) -> None:
        self.loader = loader
        self.supervisor = supervisor
        self.readiness = readiness
        self.follower = follower
        self.integrity = integrity
        self.spare = spare
        self._gate = loader.gate

    def start(self) -> "Lifecycle":
        """Load the version the link names in the background (``Readiness.wait_ready`` waits for it)."""
        with self._gate.lock:
            self._gate.start(self.loader.load_until_ready, "model-loader")
        return self

    def reload(self, reason: str, operator: bool = True) -> bool:
        """Start the active version's worker beside the one serving; swap once it passes its self-test.

        With a store this is also how a new version comes in: the link is
        resolved again, so after ``activate`` the new version loads. The old
        worker serves meanwhile and finishes its open requests. If the new one
        fails, the old one keeps serving, ``/ready`` says why, and a new
        version is rolled back. Returns False when a load is already under way
        (a failed-state retry is then started at once).
        """
        with self._gate.lock:
            if self._gate.loading:
                self._gate.hurry()
                return False
            if operator:
                self.readiness.count_reload()
            self.readiness.events.add("reload", True, reason)  # before the flow can add its own events
            flow = self.loader.load_until_ready if self.supervisor.serving is None else self.loader.load_beside
            self._gate.start(flow, "model-reloader")
        logger.info("model reload requested ({})", reason)
        return True

    def replace_damaged(self, reason: str) -> bool:
        """The serving version's files are damaged: switch to a verified good version and load it
        beside the in-memory copy, which was loaded before the damage and serves meanwhile.
        False when a load is already under way or the damage was already acted on."""
        with self._gate.lock:
            if self._gate.loading:
                return False
            damaged = self.integrity.take_damage()
            if damaged is None:
                return False
            self.readiness.count_integrity_failure()
            self.readiness.events.add("integrity", False, reason)
            self._gate.start(self._restore, "model-restore", damaged, reason)
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
        self.loader.roll_back(damaged, ModelDamaged(reason))  # the damaged version is refused: never back to it
        self.loader.load_beside(may_roll_back=False)

    def close(self) -> None:
        self._gate.close()
        if self.spare is not None:
            self.spare.close()
        self.supervisor.kill(self.supervisor.take_out())
