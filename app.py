"""Qwen All-in-One: wires config -> engine -> lifecycle -> watchdog -> HTTP/UI -> serve.

    python app.py [--host] [--port] [--model-dir] [--admin-token] ...

Every flag has an ``ALLINONE_*`` environment equivalent (``python app.py -h``).
Nothing happens at import; ``main()`` builds the parts in order and shuts
them down in reverse.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

from loguru import logger

from engine.errors import ConfigError
from engine.tasks import DEFAULT_TASKS_FILE, TaskRegistry, load_tasks
from ops.config import AppConfig, load_config
from ops.history import Timeline
from ops.lifecycle import ModelService
from ops.store import ModelSource
from ops.watchdog import DEFAULT_PROBES_FILE, Watchdog, WatchdogConfig, load_probes


STATE_SESSIONS = 500


def make_engine_loader(config: AppConfig, tasks: TaskRegistry):
    """The function the lifecycle calls to get a warmed-up engine (imports torch lazily).

    It is given the version directory the store link names at that moment
    (resolved by the lifecycle, so a hot swap loads the new version)."""

    def load(model_dir: Path | None = None):
        from engine.engine import Engine, EngineConfig
        from engine.loader import load_model

        handle = load_model(model_dir or config.resolved_model_dir, dtype=config.dtype, device=config.device)
        engine_config = EngineConfig(
            context_tokens=config.context_tokens,
            max_new_tokens=config.max_new_tokens,
            max_input_tokens=config.max_input_tokens,
            request_timeout_s=config.request_timeout_s,
            max_batch=config.max_batch,
            max_active_chats=config.max_active_chats,
            max_waiting_chats=config.max_waiting_chats,
        )
        logger.info("loaded {} ({}, {}) in {:.1f} s", handle.label, handle.dtype, handle.device, handle.load_seconds)
        return Engine(handle, tasks, engine_config).start()

    return load


def build_app(config: AppConfig, service: ModelService, timeline: Timeline | None = None):
    """The FastAPI app: health and metrics routes first, then the Gradio UI and API at ``/``."""
    import gradio as gr
    from fastapi import FastAPI

    from ops.admin import AdminActions, add_admin_routes
    from ops.health import add_health_routes
    from ops.metrics import InstrumentedInference, Metrics, add_metrics_route
    from ops.peers import Peers
    from ui.demo import build_demo
    from ui.i18n import I18N
    from ui.status_tab import StatusSource

    timeline = timeline if timeline is not None else Timeline()

    app = FastAPI(title="Qwen All-in-One", docs_url=None, redoc_url=None, openapi_url=None)
    add_health_routes(app, service)
    metrics = Metrics(state=lambda: service.snapshot().state.value, queue_depth=service.queue_depth,
                      stats=lambda: service.stats, timeline=timeline)
    add_metrics_route(app, metrics)
    admin = AdminActions(service, config.admin_token, config.fault_injection)
    add_admin_routes(app, admin)
    snapshot = lambda: service.snapshot().to_json()  # noqa: E731
    demo = build_demo(
        InstrumentedInference(service, metrics, log_text=config.log_text),
        snapshot=snapshot,
        classify_concurrency=config.max_batch,
        chat_concurrency=config.max_active_chats,
        status=StatusSource(snapshot, service.events.recent, timeline.latency_rows, timeline.memory_rows,
                            peers=Peers(config.peer_urls).check if config.peer_urls else None),
        drills=admin,
    )
    demo.queue(max_size=config.queue_max_size, default_concurrency_limit=config.max_batch)
    # Gradio keeps per-session state in memory; a class opens a few hundred sessions a day, so
    # cap it well below the default 10000 to keep memory flat over a long-running service.
    demo.state_session_capacity = STATE_SESSIONS
    return gr.mount_gradio_app(
        app, demo, path="", auth=config.auth_pair, i18n=I18N, server_name=config.host, server_port=config.port,
        footer_links=["api", "settings"],
    )


def main(argv: Sequence[str] | None = None) -> int:
    from ops.logs import setup_logging

    try:
        config = load_config(argv)
        tasks = load_tasks(config.tasks_file or DEFAULT_TASKS_FILE)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    setup_logging(config.log_dir, json_console=config.log_json)
    try:
        probes = load_probes(config.probes_file or DEFAULT_PROBES_FILE)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    service = ModelService(tasks, make_engine_loader(config, tasks), self_test=probes.run,
                           source=ModelSource(config.resolved_model_dir)).start()
    timeline = Timeline()  # latency and memory over time, for the Status tab
    watchdog = Watchdog(service, probes, WatchdogConfig(
        interval_s=config.self_test_interval_s,
        hang_limit_s=config.hang_limit_s,
        memory_limit_bytes=config.memory_limit_mb * 2**20 or None,
    ), timeline=timeline).start()
    try:
        import uvicorn

        app = build_app(config, service, timeline)
        logger.info("serving on http://{}:{} (model dir {})", config.host, config.port, config.resolved_model_dir)
        uvicorn.run(app, host=config.host, port=config.port, log_level="warning", timeout_graceful_shutdown=5)
    finally:
        watchdog.stop()
        service.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
