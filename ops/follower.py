"""Which version should serve, by the model store: the store follower.

The app follows a store link (``models/current``, or ``standby`` on a gray
release's standby). ``StoreFollower`` answers the questions the lifecycle
asks of the store, and keeps what the app learned about versions:

- ``target``: the version directory to load now (the link resolved once);
- ``switched_to``: the link names another version than the one serving
  (an operator activated it), unless that version was rolled back here and
  the link has not been re-made since;
- ``roll_back``: a version failed (to load, its self-test, or its MANIFEST):
  point the link back to the one that was serving, mark the failed one
  rejected in the store, and remember not to try it again;
- ``fallback``: where to go when the serving version is found damaged: the
  newest version that served well here or the link's previous one, verified
  by hash first.

Pure file work through ``ops.store``: no torch.
"""

from __future__ import annotations

import threading
from pathlib import Path

from loguru import logger

from engine.errors import ModelDamaged, SelfTestFailed
from ops.readiness import RollbackCause
from ops.store import ModelSource

__all__ = ["StoreFollower", "rollback_cause"]

GOOD_VERSIONS_KEPT = 10


def rollback_cause(error: BaseException) -> RollbackCause:
    """Why a version failed, from the error's type."""
    if isinstance(error, ModelDamaged):
        return RollbackCause.DAMAGED
    if isinstance(error, SelfTestFailed):
        return RollbackCause.SELF_TEST
    return RollbackCause.LOAD_FAILED


class StoreFollower:
    """The store as the running app sees it; see the module doc. ``source`` None: a fixed directory."""

    def __init__(self, source: ModelSource | None) -> None:
        self.source = source
        self._lock = threading.Lock()
        self._good: list[Path] = []  # versions that passed their self-test here, oldest first
        self._refused: tuple | None = None  # (version, link stamp) rolled back: not tried again until re-activated

    def target(self) -> Path | None:
        """The version directory to load (None without a store: the loader has its own default)."""
        return self.source.active() if self.source is not None else None

    def switched_to(self, serving: Path | None) -> str | None:
        if self.source is None or serving is None:
            return None
        target = self.source.active()
        if target is None or target == serving or self._refused == (target, self.source.stamp()):
            return None
        return target.name

    def served_well(self, path: Path | None) -> None:
        """``path`` passed its self-test and serves: a version to come back to."""
        if path is not None:
            with self._lock:
                self._good = [p for p in self._good if p != path][-(GOOD_VERSIONS_KEPT - 1):] + [Path(path)]

    def roll_back(self, bad: Path, good: Path, error: BaseException) -> str:
        """``bad`` failed with ``error``: point the link back at ``good`` and refuse ``bad``.
        Returns what was done, for the events and the readiness reason."""
        why = getattr(error, "user_message", None) or str(error)
        try:
            pointed = self.source.point_back(bad, good, why) if self.source is not None else False
        except OSError as exc:
            logger.error("could not point the model link back: {}", exc)
            pointed = False
        self._refused = (bad, self.source.stamp() if self.source is not None else None)
        where = f"{self.source.link} points back to {good.name}" if pointed else "the link was not moved back"
        return f"{bad.name} rejected ({why}); {where}"

    def fallback(self, damaged: Path) -> Path | None:
        """A verified version other than ``damaged`` to serve instead, or None."""
        if self.source is None:
            return None
        with self._lock:
            candidates = list(reversed(self._good))
        return self.source.verified_fallback(damaged, candidates)
