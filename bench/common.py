"""Shared helpers for the benchmarks: load the default engine, time things, describe the machine."""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
DATA = REPO.parent / "shared" / "data"

from ops.common.net import free_port  # noqa: E402  (after the path insert; one helper for app, tests, benches)

# Sentiment texts whose answer is not in doubt: traffic during drills and swaps must keep getting these.
KNOWN = [("What a lovely, friendly place. Loved it!", "positive"), ("Awful. Cold food and rude staff.", "negative"),
         ("质量很好，非常满意。", "positive"), ("太失望了，再也不买了。", "negative")]


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


def cpu_flags_line() -> str:
    """The CPU flags that decide the weight format (``engine.precision``), for a benchmark's header."""
    from engine.precision import cpu_flags

    wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
    flags = cpu_flags()
    return f"CPU flags that matter: {', '.join(f for f in wanted if f in flags) or 'none'}"


def header(title: str) -> None:
    print(f"# {title}  ({time.strftime('%Y-%m-%d %H:%M')} UTC, {machine()})", flush=True)


def load_engine(model_dir: Path | None = None, precision: str = "auto", tasks=None, backend: str = "torch",
                **config):
    """An in-process engine (no worker process) on ``backend`` (torch unless said: what the model itself
    costs). ``tasks``: a loaded task registry (default engine/tasks.toml)."""
    from engine.backends import open_backend
    from engine.engine import Engine, EngineConfig
    from engine.tasks import load_tasks

    limits = EngineConfig(**config)
    runtime = open_backend(backend, model_dir or REPO / "models" / "current", precision=precision, limits=limits)
    return Engine(runtime, tasks or load_tasks(), limits).start()


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


def median(values: list[float]) -> float:
    return statistics.median(values)


def tree_rss(pid: int) -> tuple[int, int]:
    """(the web process's RSS, its children's: the model's worker) in bytes; (0, 0) once it is gone."""
    import psutil

    try:
        process = psutil.Process(pid)
        web = process.memory_info().rss
        children = process.children(recursive=True)
    except psutil.Error:
        return 0, 0
    worker = 0
    for child in children:
        try:
            worker += child.memory_info().rss
        except psutil.Error:
            pass
    return web, worker


class PeakRss:
    """Watches an app's resident memory from a background thread, in bytes: ``peak`` for the web
    process and its worker together, ``worker_peak`` for the worker (the process that holds the
    model). Pass ``watch`` as ``start_app(on_start=...)`` to see the memory from the first second; the
    watch ends when the process does, or at ``stop()``."""

    def __init__(self) -> None:
        import threading

        self.peak = 0
        self.worker_peak = 0
        self._stop = threading.Event()

    def watch(self, proc) -> None:
        import threading

        def loop() -> None:
            while not self._stop.is_set() and proc.poll() is None:
                web, worker = tree_rss(proc.pid)
                self.peak = max(self.peak, web + worker)
                self.worker_peak = max(self.worker_peak, worker)
                time.sleep(0.1)

        threading.Thread(target=loop, daemon=True).start()

    def stop(self) -> None:
        self._stop.set()


def start_app(args: list[str], timeout: float = 300.0, on_start=None, env: dict[str, str] | None = None):
    """Start ``python app.py`` on a free port; return (process, url, seconds from start to /ready 200).
    ``on_start(process)`` runs right after the process exists (to watch its memory from the start)."""
    import subprocess

    import httpx

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, str(REPO / "app.py"), "--port", str(port), *args], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, **(env or {})})
    if on_start is not None:
        on_start(proc)
    while True:
        try:
            if httpx.get(url + "/ready", timeout=1).status_code == 200:
                return proc, url, time.perf_counter() - started
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.perf_counter() - started > timeout:
            proc.kill()
            raise SystemExit("the app did not become ready")
        time.sleep(0.1)


@contextlib.contextmanager
def running_app(args: list[str], timeout: float = 300.0, on_start=None, env: dict[str, str] | None = None):
    """``start_app`` for a ``with`` block: yields (process, url, seconds to /ready 200), and stops the app
    when the block ends, however it ends."""
    proc, url, ready_s = start_app(args, timeout, on_start, env)
    try:
        yield proc, url, ready_s
    finally:
        proc.terminate()
        proc.wait(30)


def store_cli(root: Path, *args: str) -> float:
    """``python -m ops.models --root ROOT ARGS``; returns the seconds it took."""
    import subprocess

    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "ops.models", "--root", str(root), *args], cwd=REPO, check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def install_broken_copy(source: Path, root: Path, version: str) -> None:
    """Install ``source`` with its output layer negated as ``name@version``: it loads and answers,
    but every sentiment flips, so it fails the known-answer self-test (what a bad release looks like).
    Negated in every form the backends read: the safetensors (its int8 variant is made again from them
    at install) and the GGUF."""
    import shutil
    import tempfile

    import torch
    from safetensors.torch import load_file, save_file

    name = source.resolve().name.partition("@")[0]
    with tempfile.TemporaryDirectory(dir=root.parent) as tmp:
        broken = Path(tmp) / name
        shutil.copytree(source.resolve(), broken,
                        ignore=shutil.ignore_patterns("MANIFEST", "model.safetensors", "variants"))
        tensors = load_file(source / "model.safetensors")
        tensors["lm_head.weight"] = torch.neg(tensors["lm_head.weight"])
        save_file(tensors, broken / "model.safetensors", metadata={"format": "pt"})
        del tensors
        for gguf in broken.glob("*.gguf"):
            gguf.chmod(0o644)  # copied read-only from the store
            negate_gguf_output(gguf)
        store_cli(root, "install", str(broken), "--version", version)


def negate_gguf_output(path: Path) -> None:
    """Negate a GGUF's output layer in place: the sign bit of each Q8_0 block's scale (34-byte blocks,
    an fp16 scale first), or of each value of an F16/F32 tensor."""
    import numpy as np
    from gguf import GGMLQuantizationType, GGUFReader

    tensor = next(t for t in GGUFReader(path).tensors if t.name == "output.weight")
    kind = tensor.tensor_type
    step, sign_byte = {GGMLQuantizationType.Q8_0: (34, 1), GGMLQuantizationType.F16: (2, 1),
                       GGMLQuantizationType.F32: (4, 3)}.get(kind, (None, None))
    if step is None:
        raise SystemExit(f"{path.name}: cannot negate an output layer of type {kind.name}")
    data = np.memmap(path, dtype=np.uint8, mode="r+", offset=tensor.data_offset, shape=(tensor.n_bytes,))
    data.reshape(-1, step)[:, sign_byte] ^= 0x80
    data.flush()
