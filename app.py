"""Qwen All-in-One: wires config -> worker supervisor -> watchdog -> HTTP/UI -> serve.

    python app.py [--host] [--port] [--model-dir] [--admin-token] ...   (``-h``; ``ALLINONE_*`` twins)

The web process: it never imports torch, and nothing happens at import. ``main()`` starts the worker
first, serves ``/health`` and ``/ready`` at once while the UI is built (``ops.serving.staged_app``), and
shuts the parts down in reverse. docs/architecture.md has the two processes.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable, Sequence

from loguru import logger

from engine.errors import ConfigError
from engine.ipc import WorkerSpec
from engine.loader import check_model_dir
from engine.tasks import DEFAULT_TASKS_FILE, TaskRegistry, load_tasks
from engine.types import EngineConfig
from ops.api.runtime_tasks import RuntimeTasks
from ops.common.net import LOCAL_HOSTS
from ops.serving.config import AppConfig, load_config
from ops.serving.history import Timeline
from engine.kinds.base import RequestLimits
from ops.serving.service import ModelService
from ops.serving.watchdog import DEFAULT_PROBES_FILE, LiveProbes, Watchdog, WatchdogConfig, load_probes
from ops.serving.worker_process import WorkerProcess
from ops.store.versions import ModelSource

STATE_SESSIONS = 500


def make_worker_starter(config: AppConfig, tasks: Callable[[], TaskRegistry]) -> Callable[[Path | None], WorkerProcess]:
    """The function the lifecycle calls to start a worker process for a model version.

    It is given the version directory the store link names at that moment
    (resolved by the lifecycle, so a hot swap loads the new version); ``tasks``
    gives the tasks served at that moment (runtime tasks included)."""
    engine_config = EngineConfig(
        context_tokens=config.context_tokens,
        max_new_tokens=config.max_new_tokens,
        max_input_tokens=config.max_input_tokens,
        request_timeout_s=config.request_timeout_s,
        max_batch=config.max_batch,
        max_active_chats=config.max_active_chats,
        max_waiting_chats=config.max_waiting_chats,
        repetition_guard=config.repetition_guard,
    )

    def start(model_dir: Path | None = None) -> WorkerProcess:
        model_dir = Path(model_dir or config.resolved_model_dir).resolve()
        check_model_dir(model_dir)  # a missing model is named here, without starting a process for it
        return WorkerProcess(WorkerSpec(model_dir, tasks(), engine_config, config.backend, config.precision,
                                        config.device, fault_drills=config.fault_injection)).start()

    return start


class WebParts:
    """What the early app and the full app share: one set of metrics, one set of admin rules."""

    def __init__(self, config: AppConfig, service: ModelService, timeline: Timeline,
                 runtime_tasks: RuntimeTasks | None = None) -> None:
        from ops.api.admin import AdminActions
        from ops.serving.metrics import InstrumentedInference, Metrics

        self.config, self.service, self.timeline = config, service, timeline
        readiness, workers = service.readiness, service.supervisor
        self.metrics = Metrics(state=lambda: readiness.snapshot().state.value, queue_depth=workers.queue_depth,
                               stats=lambda: readiness.stats, timeline=timeline, worker_rss=workers.worker_rss_bytes,
                               degraded=lambda: readiness.snapshot().degraded is not None)
        self.admin = AdminActions(service, config.admin_token, config.fault_injection, tasks=runtime_tasks)
        # Every door (the UI, the Gradio API, /v1) goes through this one: counted, timed and logged once.
        self.inference = InstrumentedInference(service, self.metrics, log_text=config.log_text,
                                               worker_rss=workers.worker_rss_bytes)

    def api_keys(self):
        """Who may call /v1 (``ops.api.openai_api``): the API key when there is one; open on a local host;
        off on a network host whose UI asks for a password but which has no key."""
        from ops.api.openai_api import ApiKeys

        config = self.config
        if config.api_key is None and config.host not in LOCAL_HOSTS and config.auth:
            return ApiKeys(None, "The /v1 API is off: this server asks for a password (--auth) and has no API "
                                 "key. Start it with ALLINONE_API_KEY or --api-key-file.")
        return ApiKeys(config.api_key)

    def routes(self, ui_served: bool = True):
        """A FastAPI app with the health, metrics and admin routes."""
        from fastapi import FastAPI

        from ops.api.admin import add_admin_routes, body_limits
        from ops.serving.body_limit import BodyLimit
        from ops.serving.health import add_health_routes
        from ops.serving.metrics import add_metrics_route

        app = FastAPI(title="Qwen All-in-One", docs_url=None, redoc_url=None, openapi_url=None)
        app.add_middleware(BodyLimit, max_bytes=self.config.max_body_bytes,
                           routes=body_limits(self.config.max_body_bytes))
        add_health_routes(app, self.service.readiness, ui_served, hide_paths=self.config.host not in LOCAL_HOSTS,
                          is_admin=self.admin.allows)
        add_metrics_route(app, self.metrics)
        add_admin_routes(app, self.admin)
        if ui_served:
            from ops.api.openai_api import add_openai_routes

            add_openai_routes(app, self.inference, self.api_keys())
        return app

    def early_app(self):
        """Served while the full app is built: the routes, and 503 "starting" for every other path."""
        from ops.serving.staged_app import add_starting_routes

        app = self.routes(ui_served=False)
        add_starting_routes(app)
        return app

    def full_app(self):
        """The routes, then the Gradio UI and API at ``/``."""
        import gradio as gr

        from ops.serving.peers import Peers
        from ui.demo import build_demo
        from ui.file_panel import UPLOAD_CAP_BYTES
        from ui.i18n import gradio_i18n
        from ui.status_tab import StatusSource

        config, service, timeline = self.config, self.service, self.timeline
        snapshot = lambda: service.readiness.snapshot().to_json()  # noqa: E731
        demo = build_demo(
            self.inference,
            snapshot=snapshot,
            classify_concurrency=config.max_batch,
            chat_concurrency=config.max_active_chats,
            limits=service.limits,
            status=StatusSource(snapshot, service.readiness.events.recent, timeline.latency_rows, timeline.memory_rows,
                                peers=Peers(config.peer_urls).check if config.peer_urls else None),
            drills=self.admin,
        )
        demo.queue(max_size=config.queue_max_size, default_concurrency_limit=config.max_batch)
        # Gradio keeps per-session state in memory; a class opens a few hundred sessions a day, so
        # cap it well below the default 10000 to keep memory flat over a long-running service.
        demo.state_session_capacity = STATE_SESSIONS
        return gr.mount_gradio_app(
            self.routes(), demo, path="", auth=config.auth_pair, i18n=gradio_i18n(), server_name=config.host,
            server_port=config.port, footer_links=["api", "settings"], max_file_size=UPLOAD_CAP_BYTES,
        )


def main(argv: Sequence[str] | None = None) -> int:
    from ops.serving.logs import setup_logging

    try:
        config = load_config(argv)
        runtime_tasks = RuntimeTasks(load_tasks(config.tasks_file or DEFAULT_TASKS_FILE), config.data_dir)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    setup_logging(config.log_dir, json_console=config.log_json)
    for warning in config.warnings:
        logger.warning(warning)
    try:
        probes = load_probes(config.probes_file or DEFAULT_PROBES_FILE)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # First: the worker process starts loading torch and the weights while this one imports Gradio.
    limits = RequestLimits(config.max_message_chars, config.max_history_messages, config.max_history_chars,
                           config.max_lines)
    probes = LiveProbes(probes, runtime_tasks.registry)
    service = ModelService(runtime_tasks.registry(), make_worker_starter(config, runtime_tasks.registry),
                           self_test=probes.run,
                           source=ModelSource(config.resolved_model_dir), ready_wait_s=config.ready_wait_s,
                           limits=limits, failures_before_reload=config.failures_before_reload,
                           spare_worker=config.spare_worker)
    service.lifecycle.start()
    timeline = Timeline()  # latency and memory over time, for the Status tab
    watchdog = Watchdog(service, probes, WatchdogConfig(
        interval_s=config.self_test_interval_s,
        hang_limit_s=config.hang_limit_s,
        memory_limit_bytes=config.memory_limit_mb * 2**20 or None,
    ), timeline=timeline).start()
    try:
        import uvicorn

        from ops.serving.staged_app import StagedApp

        parts = WebParts(config, service, timeline, runtime_tasks)
        server = uvicorn.Server(uvicorn.Config(
            StagedApp(parts.early_app(), parts.full_app, on_failure=lambda: setattr(server, "should_exit", True)),
            host=config.host, port=config.port, log_level="warning", timeout_graceful_shutdown=5))
        logger.info("serving on http://{}:{} (model dir {})", config.host, config.port, config.resolved_model_dir)
        server.run()
    finally:
        watchdog.stop()
        service.lifecycle.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
