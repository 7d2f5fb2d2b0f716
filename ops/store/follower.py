"""Which version should serve, by the model store: the store follower. No torch.

``StoreFollower`` answers the lifecycle's questions of the store link it follows: the version to load
(``target``), an operator's switch (``switched_to``), and where to go when a version fails
(``roll_back``) or is damaged (``replacement``), by ``ModelStore.fallback``. A version an app rolled
back is never loaded again unless an operator activates it with ``--force``.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path

from loguru import logger

from engine.errors import AllInOneError, ModelDamaged, ModelNotFound, ModelUnavailable, SelfTestFailed
from ops.store.versions import ModelSource

__all__ = ["StoreFollower", "RollbackCause", "rollback_cause", "VERSION_FAULTS"]

# Failures that are the version's, not the moment's: its files are gone, broken or damaged, or it
# answers wrongly. Anything else (a timeout, a worker killed while loading) may pass if tried again.
VERSION_FAULTS = (ModelNotFound, ModelDamaged, SelfTestFailed)


class RollbackCause(str, Enum):
    """Why a version was rolled back (the ``cause`` label of ``allinone_rollbacks_total``)."""

    LOAD_FAILED = "load_failed"
    SELF_TEST = "self_test"
    DAMAGED = "damaged"


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
        self._refused: tuple | None = None  # (version, link stamp) rolled back: not tried again until re-activated

    def target(self) -> Path | None:
        """The version directory to load (None without a store: the loader has its own default)."""
        if self.source is None:
            return None
        target = self.source.active()
        why = self.source.rejected(target)
        if why is None:
            return target
        good = self.source.fallback(exclude=target)
        if good is None:
            raise ModelUnavailable(f"{self.source.link} names {target.name}, which an app rolled back ({why}), "
                                   "and no other version is verified and not rejected. Activate a good version "
                                   f"(python -m ops.models activate V), or {target.name} with --force.")
        moved = self.source.point_back(target, good, why)
        logger.error("{} names {}, which was rolled back ({}): loading {} instead{}", self.source.link, target.name,
                     why, good.name, f"; {self.source.link} now points to it" if moved else "")
        return good

    def switched_to(self, serving: Path | None) -> str | None:
        """The version the link names if an operator moved it off ``serving``; None when it names a
        version rejected or rolled back here (until the link is made again)."""
        if self.source is None or serving is None:
            return None
        target = self.source.active()
        if target is None or target == serving or self._refused == (target, self.source.stamp()):
            return None
        if self.source.rejected(target) is not None:
            return None  # never again, unless an operator activates it with --force (which clears that)
        return target.name

    def roll_back(self, bad: Path, error: BaseException, serving: Path | None = None,
                  serving_intact: bool = False) -> tuple[Path | None, str]:
        """``bad`` failed with ``error``: refuse it, and point the link where the rule says.
        ``serving_intact``: the serving version's files were hashed after its load and have not
        changed since, so it counts as verified without hashing it again. Returns (where the link
        now points, or None; what was done, for the events and the readiness reason)."""
        why = error.user_message if isinstance(error, AllInOneError) else str(error)
        good = None
        if self.source is not None:
            trusted = (serving,) if serving is not None and serving_intact else ()
            good = self.source.fallback(exclude=bad, prefer=serving, trusted=trusted)
        try:
            pointed = self.source.point_back(bad, good, why) if self.source is not None else False
        except OSError as exc:
            logger.error("could not point the model link back: {}", exc)
            pointed = False
        self._refused = (bad, self.source.stamp() if self.source is not None else None)
        if good is None:
            return None, f"{bad.name} rejected ({why}); no verified version to go back to (none that is not rejected)"
        where = f"{self.source.link} points to {good.name}" if pointed else "the link was not moved"
        return good, f"{bad.name} rejected ({why}); {where}"

    def replacement(self, damaged: Path) -> Path | None:
        """A verified version other than ``damaged``, not rejected, to serve instead; or None."""
        return None if self.source is None else self.source.fallback(exclude=damaged)
