"""The warm spare (``--spare-worker``, off by default): a second worker, loaded and self-tested, held ready.

A recovery switches to it in about a second instead of loading; it costs a second worker's memory.
``refill`` warms one in the background, ``take`` hands it over, ``discard`` ends it and ``tend`` (the
watchdog's vitals job) replaces one that died while parked.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Callable

from loguru import logger

from engine.errors import AllInOneError
from ops.serving.supervisor import WorkerHandle

__all__ = ["WarmSpare", "RETRY_AFTER_S"]

RETRY_AFTER_S = 60.0  # a spare that failed to warm is tried again after this long (it must not hog a busy machine)


class WarmSpare:
    """At most one parked worker, for one version; see the module doc. Thread-safe."""

    def __init__(self, start_worker: Callable[[Path | None], WorkerHandle], self_test: Callable[[WorkerHandle], str],
                 on_change: Callable[[int | None], None] = lambda pid: None) -> None:
        """``on_change(pid)`` is told the parked spare's pid, or None when there is none (``/ready`` shows it)."""
        self._start_worker = start_worker
        self._self_test = self_test
        self._on_change = on_change
        self._lock = threading.Lock()
        self._parked: WorkerHandle | None = None
        self._version: Path | None = None  # the version parked, or warming
        self._generation = 0  # each refill or discard starts a new one: an older warm-up discards what it made
        self._warming: threading.Thread | None = None
        self._failed_at: float | None = None  # monotonic time of the last warm-up that failed
        self._closed = False

    @property
    def parked(self) -> WorkerHandle | None:
        return self._parked

    def refill(self, version: Path | None, again: bool = False) -> None:
        """Warm a spare for ``version`` in the background, unless one is parked or warming for it
        (``again``: even so; the one there is replaced)."""
        with self._lock:
            if self._closed or (not again and self._version == version and self._busy_or_parked()):
                return
            old = self._release()
            self._version, self._failed_at = version, None
            self._warming = threading.Thread(target=self._warm, args=(version, self._generation),
                                             name="spare-warm", daemon=True)
            self._warming.start()
        self._end(old)

    def take(self, version: Path | None) -> WorkerHandle | None:
        """The parked spare if it serves ``version`` and its process lives; it is then the caller's."""
        with self._lock:
            worker = self._parked
            if worker is None or self._version != version or not worker.alive():
                return None
            self._parked, self._version = None, None
            self._generation += 1
        self._on_change(None)
        return worker

    def discard(self) -> None:
        """End the spare (parked or warming): its memory is needed, or its version is no longer served."""
        with self._lock:
            old = self._release()
            self._version = None
        self._end(old)

    def tend(self) -> None:
        """Replace a parked spare whose process ended; retry a failed warm-up after ``RETRY_AFTER_S``."""
        with self._lock:
            version, parked, failed_at = self._version, self._parked, self._failed_at
            if self._closed or self._warming_alive():
                return
            dead = parked is not None and not parked.alive()
            retry = parked is None and failed_at is not None and time.monotonic() - failed_at >= RETRY_AFTER_S
        if dead:
            logger.warning("the warm spare worker ended while parked: warming a new one")
        if dead or retry:
            self.refill(version, again=True)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            old = self._release()
        self._end(old)

    # ----- inside -------------------------------------------------------------------

    def _busy_or_parked(self) -> bool:
        return self._warming_alive() or (self._parked is not None and self._parked.alive())

    def _warming_alive(self) -> bool:
        return self._warming is not None and self._warming.is_alive()

    def _release(self) -> WorkerHandle | None:
        """Under the lock: forget the parked spare and outdate any warm-up; the caller ends the worker."""
        old, self._parked = self._parked, None
        self._generation += 1
        return old

    def _end(self, worker: WorkerHandle | None) -> None:
        if worker is not None:
            self._on_change(None)
            worker.kill()

    def _warm(self, version: Path | None, generation: int) -> None:
        started = time.monotonic()
        worker = None
        try:
            worker = self._start_worker(version)
            self._self_test(worker)
        except Exception as exc:  # a spare that cannot warm is logged and retried later; serving goes on
            logger.warning("the warm spare worker could not be started: {}",
                           exc.user_message if isinstance(exc, AllInOneError) else exc)
            with self._lock:
                self._failed_at = time.monotonic() if generation == self._generation else self._failed_at
            if worker is not None:
                worker.kill()
            return
        with self._lock:
            current = generation == self._generation and not self._closed
            if current:
                self._parked = worker
        if not current:  # discarded or replaced while it warmed
            worker.kill()
            return
        self._on_change(worker.pid)
        logger.info("warm spare worker ready (pid {}) in {:.1f} s", worker.pid, time.monotonic() - started)
