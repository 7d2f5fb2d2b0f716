"""Configuration, read once into a frozen dataclass.

Every option is a command-line flag with an environment-variable equivalent
under the prefix ``ALLINONE_`` (``--max-new-tokens`` is
``ALLINONE_MAX_NEW_TOKENS``); a flag wins over the environment. Parsing has no
side effects; ``app.py`` calls ``load_config()`` once and passes the result down.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Sequence

from engine.errors import ConfigError
from ops.common.net import LOCAL_HOSTS
from ops.common.paths import REPO_ROOT

__all__ = ["AppConfig", "load_config", "build_parser", "ENV_PREFIX"]

ENV_PREFIX = "ALLINONE_"
BACKENDS = ("auto", "torch", "llamacpp")  # engine.backends.BackendKind, without importing the engine
PRECISIONS = ("auto", "fp32", "bf16", "int8")  # engine.precision.Precision, without importing the engine
REPETITION_GUARDS = ("stop", "break", "off")  # engine.sampling.GUARDS, without importing the engine


@dataclass(frozen=True)
class AppConfig:
    host: str = "127.0.0.1"
    port: int = 7860
    models_root: Path = REPO_ROOT / "models"
    model_dir: Path | None = None  # default: <models_root>/current
    tasks_file: Path | None = None  # default: engine/tasks.toml
    backend: str = "auto"
    precision: str = "auto"
    device: str = "cpu"
    auth: str | None = None  # "user:password"
    no_auth: bool = False
    admin_token: str | None = field(default=None, repr=False)
    admin_token_file: Path | None = None
    api_key: str | None = field(default=None, repr=False)
    api_key_file: Path | None = None
    fault_injection: bool = False
    context_tokens: int = 512
    max_new_tokens: int = 256
    max_input_tokens: int = 256
    request_timeout_s: float = 60.0
    ready_wait_s: float = 30.0
    max_message_chars: int = 4000
    max_history_messages: int = 64
    max_history_chars: int = 24000
    max_lines: int = 64
    max_body_bytes: int = 1048576
    failures_before_reload: int = 3
    max_batch: int = 16
    max_active_chats: int = 8
    max_waiting_chats: int = 16
    repetition_guard: str = field(default="stop", metadata={"metavar": "{" + ",".join(REPETITION_GUARDS) + "}"})
    queue_max_size: int = 64
    probes_file: Path | None = None  # default: ops/serving/probes.toml
    self_test_interval_s: float = 15.0
    hang_limit_s: float = 10.0
    spare_worker: bool = False
    memory_limit_mb: int = 0  # 0: no limit
    log_dir: Path = REPO_ROOT / "logs"
    data_dir: Path = REPO_ROOT / "data"  # what the app writes and keeps: tasks defined at run time
    log_text: bool = False
    log_json: bool = False
    peers: str | None = None  # comma-separated base URLs of other instances, for the Status tab
    # Not a flag: what reading the configuration found worth a warning (main logs them).
    warnings: tuple[str, ...] = field(default=(), metadata={"flag": False})

    @property
    def resolved_model_dir(self) -> Path:
        return self.model_dir if self.model_dir is not None else self.models_root / "current"

    @property
    def peer_urls(self) -> tuple[str, ...]:
        return tuple(url.strip().rstrip("/") for url in (self.peers or "").split(",") if url.strip())

    @property
    def auth_pair(self) -> tuple[str, str] | None:
        if not self.auth:
            return None
        user, _, password = self.auth.partition(":")
        return user, password


_HELP = {
    "host": "address to bind; anything but 127.0.0.1/localhost needs --auth or --no-auth",
    "port": "port to serve on",
    "models_root": "the model store (models/<name>@<version>, current, previous)",
    "model_dir": "serve this model directory instead of <models-root>/current",
    "tasks_file": "task registry (TOML); default engine/tasks.toml",
    "backend": "model runtime: auto (the faster one on this CPU and memory, see docs/benchmarks.md; llamacpp for a "
               "GGUF-only version), torch (transformers + torch on the safetensors) or llamacpp (llama.cpp on the GGUF)",
    "precision": "weight format: auto (the fastest that keeps the answers on this CPU, see docs/benchmarks.md), "
                 "fp32, bf16 or int8",
    "device": "cpu or cuda",
    "auth": "user:password required to use the UI and API",
    "no_auth": "allow binding to a non-local address without --auth",
    "admin_token": "token for the /admin routes (Authorization: Bearer ...); unset: admin routes are off. "
                   "On the command line it shows in ps: prefer ALLINONE_ADMIN_TOKEN or --admin-token-file",
    "admin_token_file": "read the admin token from this file (first line); not visible in ps",
    "api_key": "key for the /v1 API (Authorization: Bearer ...); required there when set. Off a local host with "
               "--auth, /v1 is off without one. Prefer ALLINONE_API_KEY or --api-key-file (not visible in ps)",
    "api_key_file": "read the /v1 API key from this file (first line); not visible in ps",
    "fault_injection": "enable the /admin/fault drills (needs an admin token)",
    "context_tokens": "chat prompt budget in tokens; older turns are dropped to fit",
    "max_new_tokens": "cap on the tokens of one answer",
    "max_input_tokens": "cap on a classification input in tokens; longer input is truncated",
    "request_timeout_s": "wall-clock limit of one request, seconds",
    "ready_wait_s": "a request arriving while the model loads or recovers waits this long for it (0: fail at once)",
    "max_message_chars": "longest chat message, and longest line to classify, in characters (longer is refused)",
    "max_history_messages": "most chat history messages one request may carry",
    "max_history_chars": "most characters of chat history one request may carry",
    "max_lines": "most lines (texts) one classification request may carry",
    "max_body_bytes": "largest request body on the app's own routes (/admin, and /v1 when there is one); "
                      "a task's examples may be up to 2 MiB",
    "failures_before_reload": "failed requests in a row that make the model count as sick and be reloaded "
                              "(one failure is the request's; NaN/inf output reloads at once)",
    "max_batch": "classification batch size",
    "max_active_chats": "chats decoded together, one batch per token (more wait in line)",
    "max_waiting_chats": "chats that may wait for a slot before new ones get 'busy'",
    "repetition_guard": "what a chat does when its answer starts going round in a loop, unless its request says: "
                        "stop (end the answer there), break (ban the token that would go on with the loop; after "
                        "three, stop) or off; see docs/benchmarks.md",
    "queue_max_size": "Gradio queue size; past it users get 'busy, try again shortly'",
    "probes_file": "known-answer self-test probes (TOML); default ops/serving/probes.toml",
    "self_test_interval_s": "seconds between watchdog self-tests (skipped while real traffic succeeds)",
    "hang_limit_s": "the worker's loop silent longer than this is a hang: its process is replaced",
    "spare_worker": "keep a second worker loaded and self-tested, so a recovery is a switch to it in about a "
                    "second (costs a second copy of the worker's memory; see docs/reliability.md)",
    "memory_limit_mb": "replace the model's worker process when it uses more memory than this (0: no limit)",
    "log_dir": "where log files go",
    "data_dir": "where the app keeps what it is told at run time (tasks added by an operator: tasks.json)",
    "log_text": "include user text in the access log",
    "log_json": "log to the console as JSON lines",
    "peers": "other instances to show on the Status tab, as base URLs: http://10.0.0.2:7860,http://10.0.0.3:7860",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python app.py",
        description="Qwen All-in-One: one small local model, several tasks, a self-healing Gradio app.",
        epilog=f"Every option can also be set as an environment variable {ENV_PREFIX}<NAME>, e.g. {ENV_PREFIX}PORT=7861.",
    )
    for f in _flag_fields():
        flag = "--" + f.name.replace("_", "-")
        if isinstance(f.default, bool):
            parser.add_argument(flag, action="store_const", const="true", default=None, help=_HELP[f.name])
        else:
            parser.add_argument(flag, default=None, metavar=f.metadata.get("metavar", f.name.upper()),
                                help=_HELP[f.name])
    return parser


def _convert(f, raw: str, source: str) -> object:
    """One conversion for flags and environment values alike (``f.type`` is a string here)."""
    try:
        if isinstance(f.default, bool):
            if raw.lower() not in ("1", "true", "yes", "on", "0", "false", "no", "off", ""):
                raise ValueError(raw)
            return raw.lower() in ("1", "true", "yes", "on")
        if "Path" in f.type:
            return Path(raw)
        if f.type == "int":
            return int(raw)
        if f.type == "float":
            return float(raw)
        return raw
    except ValueError:
        raise ConfigError(f"{source}={raw!r} is not a valid value.") from None


def load_config(argv: Sequence[str] | None = None, environ: dict[str, str] | None = None) -> AppConfig:
    """Flags, then ``ALLINONE_*`` variables, then defaults; validated."""
    environ = os.environ if environ is None else environ
    args = vars(build_parser().parse_args(argv))
    values: dict[str, object] = {}
    for f in _flag_fields():
        env_name = ENV_PREFIX + f.name.upper()
        if args.get(f.name) is not None:
            values[f.name] = _convert(f, args[f.name], "--" + f.name.replace("_", "-"))
        elif env_name in environ:
            values[f.name] = _convert(f, environ[env_name], env_name)
    config = AppConfig(**values)
    for secret in ("admin_token", "api_key"):
        config = _with_secret(config, secret, from_command_line=args.get(secret) is not None)
    _validate(config)
    return config


def _flag_fields():
    return [f for f in fields(AppConfig) if f.metadata.get("flag", True)]


def _with_secret(config: AppConfig, name: str, from_command_line: bool) -> AppConfig:
    """A secret (``admin_token``, ``api_key``) from its ``--<name>-file`` (or the environment, or, with a
    warning, the command line, where every user of the machine can read it in ``ps``)."""
    flag, env = "--" + name.replace("_", "-"), ENV_PREFIX + name.upper()
    what = name.replace("_", " ")
    path = getattr(config, f"{name}_file")
    if path is not None:
        if getattr(config, name):
            raise ConfigError(f"Give the {what} once: {flag}-file, or {env}.")
        try:
            secret = path.read_text(encoding="utf-8").strip().splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"Cannot read the {what} file {path}: {exc}") from None
        if not secret or not secret[0].strip():
            raise ConfigError(f"The {what} file {path} is empty.")
        return replace(config, **{name: secret[0].strip()})
    if from_command_line:
        return replace(config, warnings=config.warnings + (
            f"{flag} on the command line is visible to every user of this machine (ps); "
            f"use {env} or {flag}-file instead",))
    return config


def _validate(config: AppConfig) -> None:
    if config.host not in LOCAL_HOSTS and not (config.auth or config.no_auth):
        raise ConfigError(
            f"Binding to {config.host} exposes the app to the network: pass --auth user:password "
            "(or --no-auth if you really mean an open service)."
        )
    if config.auth is not None:
        user, sep, password = config.auth.partition(":")
        if not sep or not user or not password:
            raise ConfigError("--auth must look like user:password.")
    if config.fault_injection and not config.admin_token:
        raise ConfigError("--fault-injection needs an admin token "
                          "(ALLINONE_ADMIN_TOKEN, --admin-token-file or --admin-token).")
    for name in ("port", "context_tokens", "max_new_tokens", "max_input_tokens", "max_batch",
                 "max_active_chats", "queue_max_size", "max_message_chars", "max_history_messages",
                 "max_history_chars", "max_lines", "max_body_bytes", "failures_before_reload"):
        if getattr(config, name) <= 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be positive.")
    if config.ready_wait_s < 0:
        raise ConfigError("--ready-wait-s must be 0 or more.")
    if config.self_test_interval_s < 1 or config.hang_limit_s < 1 or config.memory_limit_mb < 0:
        raise ConfigError("--self-test-interval-s and --hang-limit-s must be at least 1; --memory-limit-mb >= 0.")
    for url in config.peer_urls:
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"--peers: {url!r} is not an http(s) URL.")
    if config.backend not in BACKENDS:
        raise ConfigError(f"--backend {config.backend!r}: choose one of {', '.join(BACKENDS)}.")
    if config.precision not in PRECISIONS:
        raise ConfigError(f"--precision {config.precision!r}: choose one of {', '.join(PRECISIONS)}.")
    if config.repetition_guard not in REPETITION_GUARDS:
        raise ConfigError(f"--repetition-guard {config.repetition_guard!r}: choose one of "
                          f"{', '.join(REPETITION_GUARDS)}.")
    if config.backend == "llamacpp" and config.precision != "auto":
        raise ConfigError(f"--precision {config.precision} is a torch weight format; the llamacpp backend serves "
                          "the GGUF's own. Leave --precision out, or use --backend torch.")
    if config.context_tokens < 32:
        raise ConfigError("--context-tokens must be at least 32.")
