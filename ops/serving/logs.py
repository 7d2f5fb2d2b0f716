"""Logging setup (loguru), JSON lines under ``log_dir``, rotated by size and kept by age.

Files: ``app.log`` (lifecycle, INFO), ``error.log`` (errors with traces), ``access.log`` (one line per
request; the user's text only with ``--log-text``) and ``perf.log`` (latency, tokens, memory). Access
and perf records are bound with ``channel=`` (``access_logger``); the console shows the rest.
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
