"""Shared fixtures: the tiny generated model, engines over it, and a live app.

The tiny model is built once per session (seconds). ``live_app`` starts the
real ``app.py`` in a subprocess on a free port, so the UI and API are tested
through the same code path users get.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from ops.common.net import free_port
from tests.tiny_gguf import build_tiny_gguf
from tests.tiny_model import build_tiny_model

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "artifacts"
# The runtime and weight format every engine and app of a test run uses: torch in fp32 (the reference)
# unless the run says otherwise. `make test` runs the model-facing tests again in the format `auto` picks
# here, and again on the llamacpp backend (which serves the GGUF's
# own format: no --precision).
TEST_BACKEND = os.environ.get("ALLINONE_TEST_BACKEND", "torch")
TEST_PRECISION = "auto" if TEST_BACKEND == "llamacpp" else os.environ.get("ALLINONE_TEST_PRECISION", "fp32")


def build_tiny_version(out_dir: Path, seed: int = 0) -> Path:
    """A tiny model version as the store keeps the default one: safetensors and the same model's GGUF."""
    build_tiny_model(out_dir, seed=seed)
    build_tiny_gguf(out_dir, out_dir / "tiny-qwen2.gguf")
    return out_dir


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_version(tmp_path_factory.mktemp("models") / "tiny-qwen2@test")


@pytest.fixture(scope="session")
def tasks():
    from engine.tasks import load_tasks

    return load_tasks()


@pytest.fixture(scope="session")
def tiny_handle(tiny_model_dir):
    from engine.loader import load_model

    return load_model(tiny_model_dir, precision=TEST_PRECISION)


def _engine_config(overrides: dict):
    """The engine settings every test engine starts from: short answers, a generous time limit."""
    from engine.types import EngineConfig

    return EngineConfig(**{"max_new_tokens": 12, "request_timeout_s": 30.0, **overrides})


def _engine_on(backend, tasks, config):
    from engine.engine import Engine
    from engine.faults import FaultyBackend

    return Engine(FaultyBackend(backend), tasks, config).start()


def make_engine(handle, tasks, **overrides):
    """An engine on the torch backend over a loaded model, wrapped for fault drills as the worker wraps it."""
    from engine.backends.torch_backend import TorchBackend

    return _engine_on(TorchBackend(handle), tasks, _engine_config(overrides))


def chat_in_flight(target, message: str = "hello"):
    """A chat stream on ``target`` (an engine, a worker or the service) that has yielded its first update:
    the request is running, and stays open until the stream is read to its end, closed or dropped."""
    stream = target.generate("chat", message)
    next(stream)
    return stream


def make_test_engine(model_dir, tasks, **overrides):
    """An engine on the test run's backend and format (``TEST_BACKEND``), as the worker makes it."""
    from engine.backends import open_backend

    config = _engine_config(overrides)
    return _engine_on(open_backend(TEST_BACKEND, model_dir, TEST_PRECISION, limits=config), tasks, config)


@pytest.fixture(scope="session")
def tiny_engine(tiny_model_dir, tasks):
    engine = make_test_engine(tiny_model_dir, tasks)
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def tiny_probes_file(tiny_engine, tmp_path_factory) -> Path:
    """The default probes with the tiny model's own (random but fixed) answers as the known answers."""
    from ops.serving.watchdog import load_probes

    probes = load_probes()
    lines = []
    for task, text, _ in probes.classify:
        label = tiny_engine.classify(task, [text])[0].label
        lines += ["[[classify]]", f"task = {task!r}", f"text = {text!r}", f"label = {label!r}", ""]
    for task, message, max_new_tokens in probes.generate:
        lines += ["[[generate]]", f"task = {task!r}", f"message = {message!r}", f"max_new_tokens = {max_new_tokens}", ""]
    path = tmp_path_factory.mktemp("probes") / "probes.toml"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def wrong_tiny_model_dir(tiny_probes_file, tasks, tmp_path_factory) -> Path:
    """A tiny model that loads and answers, but fails the known-answer probes (another seed):
    what a bad release looks like."""
    from engine.errors import ModelUnavailable
    from ops.serving.watchdog import load_probes

    probes = load_probes(tiny_probes_file)
    for seed in range(1, 20):
        path = build_tiny_version(tmp_path_factory.mktemp("wrong") / "tiny-qwen2@wrong", seed=seed)
        engine = make_test_engine(path, tasks)
        try:
            probes.run(engine)
        except ModelUnavailable:
            return path
        finally:
            engine.close()
    raise RuntimeError("no seed gave a tiny model that fails the probes")


@pytest.fixture(scope="session")
def tiny_app_args(tiny_model_dir, tiny_probes_file) -> list[str]:
    return ["--model-dir", str(tiny_model_dir), "--probes-file", str(tiny_probes_file)]


class LiveApp:
    def __init__(self, args: list[str], log_path: Path, wait_ready: bool = True,
                 env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # Its own data directory (runtime tasks) beside its log, so no test sees another's or a developer's.
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("ALLINONE_")},
               "ALLINONE_PRECISION": TEST_PRECISION, "ALLINONE_BACKEND": TEST_BACKEND,
               "ALLINONE_DATA_DIR": str(Path(log_path).parent / "data"),
               **(env or {})}
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, str(REPO / "app.py"), "--port", str(self.port), *args],
            cwd=REPO, env=env, stdout=self.log, stderr=subprocess.STDOUT,
        )
        # /ready is 200 once the model and the UI are both served; without a model, wait for the UI
        # itself (the web process answers /health at once and shows a "starting" page until then).
        self._wait("/ready" if wait_ready else "/")

    def _wait(self, route: str, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"app exited with {self.proc.returncode}; see {self.log.name}")
            try:
                if httpx.get(self.url + route, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise TimeoutError(f"{route} not 200 after {timeout} s; see {self.log.name}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


@pytest.fixture(scope="session")
def live_app(tiny_app_args, tmp_path_factory):
    logs = tmp_path_factory.mktemp("logs")
    app = LiveApp(
        [*tiny_app_args, "--log-dir", str(logs), "--max-new-tokens", "12"],
        logs / "console.log",
    )
    yield app
    app.stop()


@pytest.fixture()
def drill_app(tiny_app_args, tmp_path, live_app):
    """An app of its own (drills break it) with drills on, token ``drill``, and a fast watchdog.
    Its Status tab lists two peers: the shared live app and an address where nothing answers."""
    app = LiveApp([*tiny_app_args, "--log-dir", str(tmp_path), "--admin-token", "drill", "--fault-injection",
                   "--self-test-interval-s", "1", "--hang-limit-s", "2", "--request-timeout-s", "5",
                   "--peers", f"{live_app.url},http://127.0.0.1:{free_port()}"],
                  tmp_path / "console.log")
    yield app
    app.stop()
