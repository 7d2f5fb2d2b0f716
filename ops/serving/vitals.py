"""A worker's vitals read from outside it: whether its process computes, and its own resident memory.

Linux's /proc, read without asking the worker anything, so they work while it hangs or is stopped.
``CpuProgress`` is what tells a slow step from a hung one (docs/internals.md, "The watchdog").
"""

from __future__ import annotations

import os
import threading
import time

__all__ = ["BUSY_SHARE", "BUSY_WINDOW_S", "CpuProgress", "resident_bytes"]

# A worker using this share of a core is computing (a slow step), not hung: a starved step on a machine
# with four busy neighbours still got about a third of a core; a hung worker's idle threads use ~0.1 %.
BUSY_SHARE = 0.05
BUSY_WINDOW_S = 1.0  # the share is judged over at least this long (the CPU clock ticks in 10 ms steps)


class CpuProgress:
    """When a process last used the CPU as a computing process does (at least ``BUSY_SHARE`` of a core
    between two looks): what tells a slow step from a hung one. A step on an overloaded machine keeps
    computing however long it takes; a hung or stopped worker uses nothing (its idle threads wake for
    microseconds). Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: tuple[float, float] | None = None  # (CPU seconds, monotonic time) at the last look
        self._busy_at = 0.0

    def last_seen(self, pid: int | None) -> float:
        """The monotonic time the process was last seen computing (0.0: never), looking now."""
        cpu = _cpu_seconds(pid)
        now = time.monotonic()
        with self._lock:
            if cpu is not None:
                if self._seen is None:
                    self._seen = (cpu, now)
                elif now - self._seen[1] >= BUSY_WINDOW_S:  # shorter, one clock tick of CPU could pass for 5 %
                    if cpu - self._seen[0] >= BUSY_SHARE * (now - self._seen[1]):
                        self._busy_at = now
                    self._seen = (cpu, now)
            return self._busy_at


def _cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU seconds of ``pid`` (Linux's /proc), ``None`` where unknown."""
    if not pid:
        return None
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
    except (OSError, ValueError, IndexError):
        return None


def resident_bytes(pid: int | None) -> int:
    """A worker's own resident memory: anonymous and shared-memory pages (``RssAnon`` +
    ``RssShmem``, Linux), without the model files' pages, which the kernel may drop and reread,
    and which both the old and the new worker map during a swap. Elsewhere: the plain RSS."""
    if not pid:
        return 0
    try:
        with open(f"/proc/{pid}/status") as status:
            fields = dict(line.split(":", 1) for line in status if line.startswith(("RssAnon:", "RssShmem:")))
        if fields:
            return sum(int(value.split()[0]) for value in fields.values()) * 1024
    except (OSError, ValueError, IndexError):
        pass
    import psutil

    try:
        return psutil.Process(pid).memory_info().rss
    except psutil.Error:
        return 0
