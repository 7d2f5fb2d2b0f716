"""Logging setup (loguru), JSON lines under ``log_dir``, rotated by size and kept by age.

Files:
- ``app.log``: lifecycle events (loading, ready, recovering, reloads) at INFO;
- ``error.log``: errors with their stack traces;
- ``access.log``: one line per request: request id, task, latency, outcome
  (the user's text only with ``--log-text``);
- ``perf.log``: per-request performance: latency, tokens, tokens/s, memory.

Access and performance records are bound with ``channel="access"`` / ``"perf"``
(see ``access_logger``); everything else is a lifecycle record. The console
shows lifecycle records and errors, human-readable or JSON (``--log-json``).
"""

from __future__ import annotations

import sys
from pathlib import Path

from loguru import logger

__all__ = ["setup_logging", "access_logger", "perf_logger"]

ROTATION = "10 MB"
RETENTION = "14 days"


def access_logger():
    return logger.bind(channel="access")


def perf_logger():
    return logger.bind(channel="perf")


def _channel(name: str | None):
    return lambda record: record["extra"].get("channel") == name


def setup_logging(log_dir: Path, json_console: bool = False, level: str = "INFO") -> None:
    logger.remove()
    logger.add(sys.stderr, level=level, serialize=json_console, backtrace=False, diagnose=False,
               filter=_channel(None))
    try:
        log_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        logger.warning("cannot write logs to {}: {} (console only)", log_dir, exc)
        return
    common = dict(serialize=True, rotation=ROTATION, retention=RETENTION, enqueue=True, diagnose=False)
    logger.add(log_dir / "app.log", level=level, filter=_channel(None), backtrace=False, **common)
    logger.add(log_dir / "error.log", level="ERROR", backtrace=True, **common)
    logger.add(log_dir / "access.log", level="INFO", filter=_channel("access"), **common)
    logger.add(log_dir / "perf.log", level="INFO", filter=_channel("perf"), **common)
