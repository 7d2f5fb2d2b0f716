"""Logging setup (loguru): lifecycle events at INFO to the console and to a
size-rotated file under ``log_dir``; JSON lines on request. User text is never
logged unless the operator passed ``--log-text``."""

from __future__ import annotations

import sys
from pathlib import Path

from loguru import logger

__all__ = ["setup_logging"]


def setup_logging(log_dir: Path, json_console: bool = False, level: str = "INFO") -> None:
    logger.remove()
    logger.add(sys.stderr, level=level, serialize=json_console, backtrace=False, diagnose=False)
    try:
        log_dir.mkdir(parents=True, exist_ok=True)
        logger.add(
            log_dir / "app.log", level=level, serialize=True, rotation="10 MB", retention="14 days",
            backtrace=True, diagnose=False, enqueue=True,
        )
    except OSError as exc:
        logger.warning("cannot write logs to {}: {} (console only)", log_dir, exc)
