"""Memory as this process and the machine see it (the watchdog's limit, the perf log, the loader's check)."""

from __future__ import annotations

__all__ = ["process_rss_bytes", "free_memory_bytes"]


def process_rss_bytes() -> int:
    """This process's resident memory (the watchdog's limit, the perf log, the Status tab)."""
    import psutil

    return psutil.Process().memory_info().rss


def free_memory_bytes() -> int:
    """Memory the machine has available now (whether a second worker fits beside the first)."""
    import psutil

    return psutil.virtual_memory().available
