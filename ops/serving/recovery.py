"""Recovery: a sick serving worker is isolated, killed and replaced by a fresh one (or the warm spare). No torch.

``Recovery.recover(cause, reason)`` is detect -> isolate -> recover -> verify -> re-admit; the watchdog
and the service's request rules call it. The flow runs through the ``WorkerLoader``'s gate, one flow at a
time. docs/internals.md, "The model's lifecycle".
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from loguru import logger

from engine.errors import AllInOneError
from ops.serving.loader import RECOVERY_ATTEMPTS_BEFORE_FAILED, WorkerLoader
from ops.serving.readiness import Readiness, RecoveryCause, State
from ops.serving.spare import WarmSpare
from ops.serving.supervisor import WorkerHandle, WorkerSupervisor

__all__ = ["Recovery"]


class Recovery:
    """Replaces a sick serving worker; see the module doc."""

    def __init__(self, loader: WorkerLoader, supervisor: WorkerSupervisor, readiness: Readiness,
                 spare: WarmSpare | None = None) -> None:
        """``spare``: the warm spare worker (``--spare-worker``) that a recovery switches to, if any."""
        self.loader = loader
        self.supervisor = supervisor
        self.readiness = readiness
        self.spare = spare
        self._gate = loader.gate

    def recover(self, cause: RecoveryCause, reason: str) -> bool:
        """Detect -> isolate -> recover -> verify -> re-admit. Returns False if already recovering.

        The worker is taken out at once (new requests get "recovering, retry
        shortly"), then killed: its open requests fail fast and are never
        answered by a suspect model, and everything it held is freed. A fresh
        worker is started from the store and must pass its self-test before
        traffic comes back.
        """
        with self._gate.lock:
            if not self.readiness.snapshot().ready:
                return False
            replacing = self._gate.loading  # a replacement is loading: it, not a new flow, comes into service
            if replacing:
                reason = f"{reason}; the replacement already loading takes over"
            suspect = self.supervisor.take_out()
            self.readiness.update(state=State.RECOVERING, reason=reason, worker_pid=None)
            self.readiness.count_recovery(cause)
            self.readiness.events.add("recovering", False, reason)
            if replacing:
                threading.Thread(target=self.supervisor.kill, args=(suspect,), name="worker-kill",
                                 daemon=True).start()
            else:
                self._gate.start(self._recover, "model-recovery", suspect, cause)
        logger.error("recovering ({}): {}", cause.value, reason)
        return True

    def _recover(self, suspect: WorkerHandle | None, cause: RecoveryCause) -> None:
        started = time.monotonic()
        serving = suspect.model_path if suspect is not None else None
        # The suspect ends beside the new worker's start: a hung one ignores SIGTERM for its whole grace period.
        threading.Thread(target=self.supervisor.kill, args=(suspect,), name="worker-kill", daemon=True).start()
        if not self._switch_to_spare(serving, cause, started):
            self.loader.load_until_ready(failed_after=RECOVERY_ATTEMPTS_BEFORE_FAILED, version=serving)
        if self.readiness.snapshot().ready:
            seconds = time.monotonic() - started
            self.readiness.recovered_in(seconds)
            self.readiness.events.add("recovered", True, f"in {seconds:.1f} s")
            logger.info("recovered in {:.1f} s", seconds)

    def _switch_to_spare(self, version: Path | None, cause: RecoveryCause, started: float) -> bool:
        """Put the warm spare in service, if there is one for ``version``; True if it now serves. Not when
        the files changed on disk: the spare was loaded from the files before the change."""
        spare = self.spare.take(version) if self.spare is not None and cause is not RecoveryCause.FILES else None
        if spare is None:
            return False
        try:
            self.loader.admit(spare, started)
        except AllInOneError as exc:
            self.readiness.events.add("spare", False,
                                      f"the warm spare failed its self-test ({exc.user_message}): loading")
            return False
        self.readiness.events.add("spare", True, f"switched to the warm spare worker (pid {spare.pid})")
        return True
