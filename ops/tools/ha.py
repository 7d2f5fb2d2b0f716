"""Primary and standby behind HAProxy, each under its own supervisord: the failover demonstration.

    python -m ops.ha demo --port 8000 [--stats-port N] [--run-dir DIR] [APP OPTIONS ...]

Starts two app instances and HAProxy in front, prints one JSON line of their PIDs and ports once both
are ready, and runs until SIGTERM or Ctrl-C (``HaDemo``). ``failover_drill`` (``ops.tools.ha_drill``)
kills the primary under traffic and measures the failover. docs/operations.md has the walk-through.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Callable, Sequence

import httpx
from loguru import logger

from engine.errors import ConfigError
from ops.common.net import free_port
from ops.common.paths import REPO_ROOT
from ops.serving.config import ENV_PREFIX, build_parser, load_config

__all__ = ["HaDemo", "Instance", "InstanceFailed", "ProgramState", "ProgramStatus", "app_environment", "main"]

DEPLOY = REPO_ROOT / "ops" / "deploy"
SUPERVISORD_CONF = DEPLOY / "supervisord.conf"
HAPROXY_CFG = DEPLOY / "haproxy.cfg"
PROGRAM = "allinone"  # the [program:...] name in supervisord.conf
PYTHON_ENV = ENV_PREFIX + "PYTHON"  # supervisord.conf runs the app with this interpreter
BACKEND_HEADER = "X-Allinone-Backend"  # set by haproxy.cfg: which server answered
STOP_WAIT_S = 25.0  # supervisord gives the app 15 s (stopwaitsecs) before SIGKILL


def _die_with_parent() -> None:
    """Runs in the child before exec: if the demo itself is killed, its children get SIGTERM (Linux)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the demo's own cleanup still applies
        pass


def app_environment(app_args: Sequence[str]) -> dict[str, str]:
    """``python app.py`` options as the ``ALLINONE_*`` variables supervisord passes down to the app.

    Validated here with the app's own parser, so a bad option fails before anything starts.
    """
    given = vars(build_parser().parse_args(list(app_args)))
    env = {ENV_PREFIX + name.upper(): value for name, value in given.items() if value is not None}
    load_config([], environ=env)
    return env


class ProgramState(Enum):
    """supervisord's process states (``supervisor.states.ProcessStates``), as ``supervisorctl status`` names them."""

    STOPPED = "STOPPED"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    BACKOFF = "BACKOFF"  # exited before startsecs, or could not be spawned; supervisord will retry
    STOPPING = "STOPPING"
    EXITED = "EXITED"
    FATAL = "FATAL"  # startretries failed starts in a row: supervisord gave up
    UNKNOWN = "UNKNOWN"


FAILED_START = frozenset({ProgramState.BACKOFF, ProgramState.EXITED, ProgramState.FATAL})


@dataclass(frozen=True)
class ProgramStatus:
    state: ProgramState
    reason: str  # supervisord's description: "can't find command '...'", "Exited too quickly (...)", "pid 12, ..."

    @classmethod
    def parse(cls, line: str, program: str = PROGRAM) -> ProgramStatus | None:
        """One line of ``supervisorctl status PROGRAM`` (``NAME  STATE  description``).

        None for anything else, such as the error while supervisord is still starting.
        """
        parts = line.split(None, 2)
        if len(parts) < 2 or parts[0] != program or parts[1] not in ProgramState.__members__:
            return None
        return cls(ProgramState[parts[1]], parts[2].strip() if len(parts) == 3 else "")


class InstanceFailed(RuntimeError):
    """A supervised app could not start: which instance, supervisord's status and the app's last console lines."""

    def __init__(self, role: str, status: ProgramStatus, console_log: Path, console_tail: Sequence[str]) -> None:
        self.role, self.status, self.console_log, self.console_tail = role, status, console_log, list(console_tail)
        tail = ("; last lines of " + str(console_log) + ":\n" + "\n".join("    " + line for line in console_tail)
                if console_tail else f"; the app wrote nothing to {console_log}")
        super().__init__(f"the {role} could not start: supervisord says {status.state.value}: {status.reason}{tail}")


def _get(url: str, timeout: float = 2.0) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=timeout)
    except httpx.HTTPError:
        return None


def wait_until(check: Callable[[], bool], timeout: float, what: str, alive: Callable[[], bool] = lambda: True,
               interval: float = 0.2) -> float:
    """Poll ``check`` until true; return the seconds it took. ``alive`` false means give up at once."""
    started = time.monotonic()
    while not check():
        if not alive():
            raise RuntimeError(f"gave up waiting for {what}: a process it needs has exited")
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"{what} not reached within {timeout:.0f} s")
        time.sleep(interval)
    return time.monotonic() - started


def is_ready(url: str) -> bool:
    response = _get(url + "/ready")
    return response is not None and response.status_code == 200


def serving(haproxy_port: int) -> str | None:
    """Which instance HAProxy sends a new client to right now (None: no ready answer)."""
    response = _get(f"http://127.0.0.1:{haproxy_port}/ready")
    return response.headers.get(BACKEND_HEADER) if response is not None and response.status_code == 200 else None


@dataclass
class Instance:
    """One app instance under its own supervisord."""

    role: str
    port: int
    run_dir: Path
    env: dict[str, str]
    supervisor: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.run_dir / "supervisord.console.log", "ab")
        self.supervisor = subprocess.Popen(
            [sys.executable, "-m", "supervisor.supervisord", "-c", str(SUPERVISORD_CONF)],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, preexec_fn=_die_with_parent)
        log.close()

    def ctl(self, *command: str) -> str:
        result = subprocess.run([sys.executable, "-m", "supervisor.supervisorctl", "-c", str(SUPERVISORD_CONF),
                                 *command], env=self.env, capture_output=True, text=True, timeout=30)
        return result.stdout.strip()

    def app_pid(self) -> int | None:
        """The app's PID as supervisord knows it (None while it is not running)."""
        out = self.ctl("pid", PROGRAM)
        return int(out) if out.isdigit() and int(out) > 0 else None

    def status(self) -> ProgramStatus | None:
        """The app's state as supervisord reports it (None while supervisord does not answer yet)."""
        return ProgramStatus.parse(self.ctl("status", PROGRAM))

    def raise_if_failed(self) -> None:
        """InstanceFailed if supervisord reports that the app exited or could not be spawned."""
        status = self.status()
        if status is not None and status.state in FAILED_START:
            raise InstanceFailed(self.role, status, self.console_log, self.console_tail())

    def console_tail(self, lines: int = 15, max_bytes: int = 16384) -> list[str]:
        """The last lines the app wrote to its console (stdout and stderr); [] if none."""
        try:
            with open(self.console_log, "rb") as log:
                log.seek(max(0, log.seek(0, os.SEEK_END) - max_bytes))
                text = log.read().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return []
        return [line for line in text.splitlines() if line.strip()][-lines:]

    def ready(self) -> bool:
        return is_ready(self.url)

    def supervisor_alive(self) -> bool:
        return self.supervisor is not None and self.supervisor.poll() is None

    @property
    def console_log(self) -> Path:
        return self.run_dir / "allinone.console.log"


@dataclass
class HaDemo:
    port: int
    app_args: Sequence[str] = ()
    stats_port: int = 0
    run_dir: Path | None = None
    instances: dict[str, Instance] = field(default_factory=dict)
    haproxy: subprocess.Popen | None = None
    _own_run_dir: bool = False

    def start(self, timeout: float = 300.0) -> dict:
        """Start both instances and HAProxy; return the JSON-able description once HAProxy serves the primary."""
        app_env = app_environment(self.app_args)
        if self.run_dir is None:
            self.run_dir, self._own_run_dir = Path(tempfile.mkdtemp(prefix="allinone-ha-")), True
        self.run_dir.mkdir(parents=True, exist_ok=True)
        log_root = Path(app_env.pop(ENV_PREFIX + "LOG_DIR", self.run_dir))
        for role in ("primary", "standby"):
            instance_dir = self.run_dir / role
            port = free_port()
            env = {**os.environ, **app_env, ENV_PREFIX + "PORT": str(port),
                   ENV_PREFIX + "LOG_DIR": str(log_root / role / "logs"),
                   ENV_PREFIX + "SUPERVISOR_DIR": str(instance_dir),
                   PYTHON_ENV: os.environ.get(PYTHON_ENV) or sys.executable}
            self.instances[role] = Instance(role, port, instance_dir, env)
            self.instances[role].start()
        self.stats_port = self.stats_port or free_port()
        primary, standby = self.instances["primary"], self.instances["standby"]
        haproxy_env = {**os.environ,
                       "ALLINONE_HA_BIND": f"127.0.0.1:{self.port}",
                       "ALLINONE_PRIMARY": f"127.0.0.1:{primary.port}",
                       "ALLINONE_STANDBY": f"127.0.0.1:{standby.port}",
                       "ALLINONE_HA_STATS": f"127.0.0.1:{self.stats_port}",
                       "ALLINONE_HA_RUN": str(self.run_dir)}
        with open(self.run_dir / "haproxy.log", "ab") as log:
            self.haproxy = subprocess.Popen([shutil.which("haproxy") or "haproxy", "-db", "-f", str(HAPROXY_CFG)],
                                            env=haproxy_env, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True,
                                            preexec_fn=_die_with_parent)
        logger.info("starting primary on :{} and standby on :{} behind HAProxy on :{} (stats "
                    "http://127.0.0.1:{}/stats); run dir {}", primary.port, standby.port, self.port,
                    self.stats_port, self.run_dir)
        logs = ", ".join(str(instance.console_log) for instance in self.instances.values())
        wait_until(self._instances_ready, timeout, f"/ready 200 from both instances (see {logs})",
                   self.processes_alive, interval=0.5)
        wait_until(lambda: serving(self.port) == "primary", 30, "HAProxy routing to the primary", self.processes_alive)
        return self.describe()

    def _instances_ready(self) -> bool:
        """True once every instance passes /ready; InstanceFailed as soon as one's app fails to start."""
        waiting = [instance for instance in self.instances.values() if not instance.ready()]
        for instance in waiting:
            instance.raise_if_failed()
        return not waiting

    def describe(self) -> dict:
        info = {role: {"pid": instance.app_pid(), "port": instance.port} for role, instance in self.instances.items()}
        info["haproxy"] = {"pid": self.haproxy.pid if self.haproxy else None, "port": self.port}
        return info

    def processes_alive(self) -> bool:
        return (self.haproxy is not None and self.haproxy.poll() is None
                and all(i.supervisor_alive() for i in self.instances.values()))

    def stop(self) -> None:
        """SIGTERM to HAProxy and the supervisors (each stops its app); SIGKILL by PID to whatever outlives that."""
        import psutil

        apps = []
        for instance in self.instances.values():
            if instance.supervisor_alive():
                try:
                    pid = instance.app_pid()
                    apps += [psutil.Process(pid)] if pid else []
                except (psutil.Error, subprocess.SubprocessError, OSError):
                    pass
        children = [p for p in [self.haproxy, *(i.supervisor for i in self.instances.values())] if p is not None]
        for proc in children:
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + STOP_WAIT_S
        for proc in children:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                logger.warning("pid {} did not stop in time; killing it", proc.pid)
                proc.kill()
                proc.wait()
        for app in apps:  # only if its supervisor could not stop it (psutil checks the PID was not reused)
            try:
                app.wait(max(0.1, deadline - time.monotonic()))
            except psutil.TimeoutExpired:
                app.kill()
            except psutil.NoSuchProcess:
                pass
        if self._own_run_dir and self.run_dir is not None:
            shutil.rmtree(self.run_dir, ignore_errors=True)


# ---- command line ---------------------------------------------------------------------------------

class _Stop(Exception):
    pass


def _raise_stop(signum, frame) -> None:
    raise _Stop()


def _demo(args: argparse.Namespace, app_args: list[str]) -> int:
    demo = HaDemo(args.port, app_args, stats_port=args.stats_port, run_dir=args.run_dir)
    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGINT, _raise_stop)
    try:
        info = demo.start(args.timeout)
        sys.stdout.write(json.dumps(info) + "\n")
        sys.stdout.flush()
        logger.info("ready: http://127.0.0.1:{} (Ctrl-C stops everything)", args.port)
        while demo.processes_alive():
            time.sleep(0.5)
        logger.error("HAProxy or a supervisor exited on its own; stopping the demo (logs in {})", demo.run_dir)
        return 1
    except _Stop:
        logger.info("stopping")
        return 0
    except (ConfigError, RuntimeError, TimeoutError) as exc:
        logger.error("{}", exc)
        return 1
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one orderly stop; a second signal must not cut it short
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        demo.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ops.ha", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="primary + standby (each under supervisord) behind HAProxy",
                               epilog="Other options go to both app instances (python app.py -h).")
    demo.add_argument("--port", type=int, default=7860, help="HAProxy's port on 127.0.0.1")
    demo.add_argument("--stats-port", type=int, default=0, help="HAProxy's stats page and metrics (default: free)")
    demo.add_argument("--run-dir", type=Path,
                      help="keep sockets, pid files and logs here (default: a temporary directory, removed at exit)")
    demo.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for both instances to be ready")
    args, app_args = parser.parse_known_args(argv)
    if app_args[:1] == ["--"]:
        app_args = app_args[1:]
    if shutil.which("haproxy") is None:
        logger.error("haproxy is not installed (Debian: apt-get install haproxy; or make test-deps)")
        return 2
    return _demo(args, app_args)

