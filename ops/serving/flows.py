"""One lifecycle flow at a time: the gate every load, reload, recovery and restore starts through. No torch.

A flow runs in a background thread of its own, so no flow ever holds the watchdog. ``loading`` is True from
a flow's start until its worker is swapped in (``swapped``, under the lock) or it gives up, so a reload asked
for the instant the service turns ready is not taken for "a load is already under way". The flows:
docs/internals.md, "The model's lifecycle".
"""

from __future__ import annotations

import threading
from typing import Callable

__all__ = ["FlowGate"]


class FlowGate:
    """The lock, the "a load is under way" flag, the backoff's wake-up and the closing flag, for all flows."""

    def __init__(self, after: Callable[[], None] = lambda: None) -> None:
        """``after()`` runs with the lock held when the latest flow ends, unless the gate is closed (it may
        start another flow)."""
        self.lock = threading.Lock()  # held to start a flow, and by a flow at its swap
        self._after = after
        self._closing = threading.Event()
        self._wake = threading.Event()  # cuts a retry's backoff short (an operator asked for a reload)
        self._loading = False
        self._flow: threading.Thread | None = None  # the flow that owns _loading

    @property
    def loading(self) -> bool:
        return self._loading

    @property
    def closed(self) -> bool:
        return self._closing.is_set()

    def start(self, target: Callable, name: str, *args) -> None:
        """Run ``target(*args)`` in the background as the latest flow. Call with the lock held.

        A flow gives up the "loading" flag at its swap, so another may start while it finishes up;
        its end must not clear the flag of the one after it."""

        def run() -> None:
            try:
                target(*args)
            finally:
                with self.lock:
                    if self._flow is flow:
                        self._loading = False
                        if not self._closing.is_set():
                            self._after()

        flow = threading.Thread(target=run, name=name, daemon=True)
        self._flow = flow
        self._loading = True
        flow.start()

    def swapped(self) -> None:
        """The flow's worker is in service: another flow may start now. Call with the lock held."""
        self._loading = False

    def backoff(self, delay: float) -> None:
        """Wait ``delay`` seconds between a flow's tries, less if ``hurry`` is called meanwhile."""
        self._wake.wait(delay)
        self._wake.clear()

    def hurry(self) -> None:
        """End the backoff under way now (an operator asked for a reload while the tries go on)."""
        self._wake.set()

    def close(self) -> None:
        self._closing.set()
        self._wake.set()
