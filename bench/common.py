"""Shared helpers for the benchmarks: load the default engine, time things, describe the machine."""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
DATA = REPO.parent / "shared" / "data"


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def header(title: str) -> None:
    print(f"# {title}  ({time.strftime('%Y-%m-%d %H:%M')} UTC, {machine()})", flush=True)


def load_engine(model_dir: Path | None = None, dtype: str = "auto", **config):
    from engine.engine import Engine, EngineConfig
    from engine.loader import load_model
    from engine.tasks import load_tasks

    handle = load_model(model_dir or REPO / "models" / "current", dtype=dtype)
    return Engine(handle, load_tasks(), EngineConfig(**config)).start()


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


def median(values: list[float]) -> float:
    return statistics.median(values)
