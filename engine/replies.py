"""The caller's side of one request: ``QueuedReplies``. Pure Python, no torch.

The producer ``put``s results, ``ChatUpdate``s or an exception into the stream's ``sink``; the caller
iterates with a deadline (``InferenceTimeout``, never a hang). Closing or dropping the stream calls
``on_close`` once, which cancels the request; the producer holds only the sink, never the stream.
"""

from __future__ import annotations

import queue
import time
from collections import deque
from typing import TYPE_CHECKING, Callable

from engine.errors import InferenceTimeout
from engine.chat import ChatUpdate

if TYPE_CHECKING:
    from engine.kinds.registry import Reply

__all__ = ["QueuedReplies"]


class QueuedReplies:
    """Iterates the replies of one request as a producer thread puts them; see the module doc."""

    def __init__(self, timeout_s: float, on_close: Callable[[], None] | None = None) -> None:
        self.sink: queue.Queue = queue.Queue()  # the producer's end: put(item)
        self._deadline = time.monotonic() + timeout_s
        self._on_close = on_close
        self._ready: deque[Reply] = deque()
        self._finished = False  # the caller has had everything (or gave up)
        self._answered = False  # the producer delivered its last item: nothing to cancel
        self._closed = False

    def __iter__(self) -> "QueuedReplies":
        return self

    def __next__(self) -> Reply:
        if self._ready:
            return self._ready.popleft()
        if self._finished:
            raise StopIteration
        try:
            item = self.sink.get(timeout=max(self._deadline - time.monotonic(), 0.05))
        except queue.Empty:
            self.close()
            raise InferenceTimeout() from None
        if isinstance(item, BaseException):
            self._answered = True
            self.close()
            raise item
        if isinstance(item, ChatUpdate):
            if item.done:
                self._finished = self._answered = True
            return item
        self._finished = self._answered = True  # a classification arrives whole
        self._ready.extend(item)
        return next(self)

    def on_close(self, callback: Callable[[], None]) -> None:
        """Set what closing (or dropping) the stream does before it is answered: cancel the job."""
        self._on_close = callback

    def close(self) -> None:
        """Let go of the request; cancels it unless it has already been answered in full."""
        self._finished = True
        if not self._closed:
            self._closed = True
            if self._on_close is not None and not self._answered:
                self._on_close()

    def __del__(self) -> None:
        self.close()
