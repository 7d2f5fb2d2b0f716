"""``python -m ops.console --nodes URL,URL,...``: options, then poller -> actions -> page -> serve.

    python -m ops.console --nodes URL,URL [--port 7870] [--interval-s 5] [--models-root DIR] ...

Each option has an environment twin (``ALLINONE_CONSOLE_*``, and the app's names for what it shares);
a flag wins. The admin token is never a flag, so it never shows in ``ps``. Nothing happens at import.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from engine.errors import ConfigError
from ops.common.net import LOCAL_HOSTS

__all__ = ["ConsoleConfig", "load_console_config", "main"]

DEFAULT_PORT = 7870


@dataclass(frozen=True)
class ConsoleConfig:
    nodes: tuple[str, ...]
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    interval_s: float = 5.0
    timeout_s: float = 2.0
    models_root: Path | None = None  # the store the nodes serve, on this machine: rollback and gray release
    admin_token: str | None = field(default=None, repr=False)
    probes_file: Path | None = None
    alerts_file: Path | None = None
    auth: str | None = field(default=None, repr=False)  # user:password for the page
    no_auth: bool = False


# flag -> (environment variable, help)
_OPTIONS = {
    "nodes": ("ALLINONE_CONSOLE_NODES", "the instances to watch, as base URLs: http://10.0.0.2:7860,http://..."),
    "host": ("ALLINONE_CONSOLE_HOST", "address to bind (default 127.0.0.1); any other needs --auth or --no-auth"),
    "port": ("ALLINONE_CONSOLE_PORT", f"port to serve the console on (default {DEFAULT_PORT})"),
    "interval_s": ("ALLINONE_CONSOLE_INTERVAL_S", "seconds between polls of every node (default 5)"),
    "timeout_s": ("ALLINONE_CONSOLE_TIMEOUT_S", "how long one node may take to answer (default 2)"),
    "models_root": ("ALLINONE_MODELS_ROOT", "the model store the nodes serve, on this machine; turns on "
                                            "rollback and gray release (off without it)"),
    "admin_token_file": ("ALLINONE_ADMIN_TOKEN_FILE", "the nodes' admin token, first line of this file (or "
                                                      "ALLINONE_ADMIN_TOKEN): the console checks the token typed "
                                                      "in the page against it before it changes the store"),
    "probes_file": ("ALLINONE_PROBES_FILE", "known-answer probes a gray release sends (default "
                                            "ops/serving/probes.toml)"),
    "alerts_file": ("ALLINONE_CONSOLE_ALERTS_FILE", "Prometheus alert rules to apply (default "
                                                    "ops/deploy/prometheus/alerts.yml)"),
    "auth": ("ALLINONE_CONSOLE_AUTH", "user:password required to open the console"),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ops.console",
                                     description="Watch and operate a few All-in-One nodes from one page.")
    for name, (env, help_text) in _OPTIONS.items():
        parser.add_argument("--" + name.replace("_", "-"), default=None, help=f"{help_text} [{env}]")
    parser.add_argument("--no-auth", action="store_true", help="allow a non-local --host without --auth")
    return parser


def load_console_config(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
                        ) -> ConsoleConfig:
    """Flags, then environment variables, then defaults; validated (``ConfigError`` says what is wrong)."""
    environ = os.environ if environ is None else environ
    args = vars(_parser().parse_args(argv))
    raw = {name: args[name] if args[name] is not None else environ.get(env) for name, (env, _) in _OPTIONS.items()}
    nodes = tuple(dict.fromkeys(u.strip().rstrip("/") for u in (raw["nodes"] or "").split(",") if u.strip()))
    if not nodes:
        raise ConfigError("Give the nodes to watch: --nodes http://HOST:PORT,... (or ALLINONE_CONSOLE_NODES).")
    for url in nodes:
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"--nodes: {url!r} is not an http(s) URL.")
    try:
        port = int(raw["port"] or DEFAULT_PORT)
        interval_s, timeout_s = float(raw["interval_s"] or 5.0), float(raw["timeout_s"] or 2.0)
    except ValueError as exc:
        raise ConfigError(f"--port, --interval-s and --timeout-s take numbers: {exc}") from None
    if not 0 < port < 65536 or interval_s < 1 or timeout_s <= 0:
        raise ConfigError("--port must be a port number, --interval-s at least 1, --timeout-s above 0.")
    host = raw["host"] or "127.0.0.1"
    auth, no_auth = raw["auth"], bool(args["no_auth"])
    if host not in LOCAL_HOSTS and not (auth or no_auth):
        raise ConfigError(f"Binding the console to {host} lets the network see and act on every node: pass "
                          "--auth user:password (or --no-auth if you really mean it).")
    if auth is not None and not all(auth.partition(":")[::2]):
        raise ConfigError("--auth must look like user:password.")
    models_root = Path(raw["models_root"]) if raw["models_root"] else None
    if models_root is not None and not models_root.is_dir():
        raise ConfigError(f"--models-root {models_root} is not a directory.")
    return ConsoleConfig(nodes, host, port, interval_s, timeout_s, models_root,
                         _admin_token(raw["admin_token_file"], environ),
                         Path(raw["probes_file"]) if raw["probes_file"] else None,
                         Path(raw["alerts_file"]) if raw["alerts_file"] else None, auth, no_auth)


def _admin_token(path: str | None, environ: Mapping[str, str]) -> str | None:
    if path is None:
        return environ.get("ALLINONE_ADMIN_TOKEN") or None
    try:
        lines = Path(path).read_text(encoding="utf-8").strip().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"Cannot read the admin token file {path}: {exc}") from None
    if not lines or not lines[0].strip():
        raise ConfigError(f"The admin token file {path} is empty.")
    return lines[0].strip()


def main(argv: Sequence[str] | None = None) -> int:
    from ops.tools.console.alerts import DEFAULT_ALERTS_FILE, load_alert_rules

    try:
        config = load_console_config(argv)
        rules = load_alert_rules(config.alerts_file or DEFAULT_ALERTS_FILE)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from ops.store.versions import ModelStore
    from ops.tools.console.actions import ConsoleActions
    from ops.tools.console.page import CSS, build_console
    from ops.tools.console.poller import Poller, PollerConfig

    poller = Poller(config.nodes, rules, PollerConfig(config.interval_s, config.timeout_s)).start()
    actions = ConsoleActions(config.nodes, admin_token=config.admin_token,
                             store=ModelStore(config.models_root) if config.models_root else None,
                             probes_file=config.probes_file)
    try:
        demo = build_console(poller.view, actions, refresh_s=config.interval_s)
        user, _, password = (config.auth or "").partition(":")
        demo.launch(server_name=config.host, server_port=config.port, auth=(user, password) if config.auth else None,
                    css=CSS, footer_links=["settings"], show_error=False)
    finally:
        poller.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
