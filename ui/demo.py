"""The Gradio app: a tab per task over one shared service, a Status tab, and a status line.
Every string in it comes from one table, in one language at a time (``ui.i18n``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import gradio as gr

from engine.types import Inference, TaskKind
from ui.chat_tab import build_chat_tab
from ui.classify_tab import build_classify_tab
from ui.file_panel import FileDoor
from ui.i18n import t, tab_title
from ui.status_tab import QUIET, Drills, StatusSource, build_status_tab
from ui.tasks_tab import build_tasks_tab
from ui.viewer import VIEWER_JS, Viewer, viewer_of

if TYPE_CHECKING:
    from engine.kinds.base import RequestLimits

__all__ = ["build_demo"]

CACHE_CLEANUP = (600, 3600)  # uploads and results in Gradio's cache: every 10 min, drop those over an hour old


def status_text(snapshot_json: dict, viewer: Viewer = Viewer()) -> str:
    """The status line, in the viewer's language (``ui.viewer``)."""
    state = snapshot_json["state"]
    if state == "ready":
        return viewer.text("status.ready", model=snapshot_json["model"])
    if state == "failed":
        return viewer.text("status.failed", reason=viewer.detail(snapshot_json.get("reason") or ""))
    if state in ("loading", "recovering"):
        return viewer.text(f"status.{state}")
    return state


def build_demo(service: Inference, snapshot, classify_concurrency: int, chat_concurrency: int,
               limits: "RequestLimits", status: StatusSource | None = None,
               drills: Drills | None = None) -> gr.Blocks:
    """``snapshot()`` returns the readiness JSON shown in the status line; ``status`` adds the Status tab;
    ``limits`` are the request limits the tabs apply before the queue."""
    with gr.Blocks(title="Qwen All-in-One", fill_height=False, delete_cache=CACHE_CLEANUP) as demo:
        gr.Markdown(t("heading"))
        # The browser's time zone and language, for text built on the server (ui.viewer).
        viewer_box = gr.Textbox(visible=False, elem_id="viewer")
        status_line = gr.Markdown(elem_id="model-status")
        files = FileDoor(service, limits)
        task_tabs = []
        for info in service.task_infos():
            with gr.Tab(tab_title(info), id=info.name) as tab:
                if info.kind is TaskKind.CLASSIFY:
                    build_classify_tab(service, info, classify_concurrency, viewer_box, files)
                else:
                    refresh, selector = build_chat_tab(service, info, chat_concurrency, limits)
                    # Generate tasks added at run time join the selector: on page load, and on opening the tab.
                    demo.load(refresh, inputs=[selector], outputs=[selector], **QUIET)
                    tab.select(refresh, inputs=[selector], outputs=[selector], **QUIET)
            task_tabs.append(tab)
        with gr.Tab(t("task.tasks"), id="tasks") as tasks_tab:
            refresh_tasks, task_dropdown = build_tasks_tab(service, classify_concurrency, chat_concurrency,
                                                           viewer_box, files, admin=drills)
        # Tasks added at run time show up here: the list is read again whenever the tab is opened.
        tasks_tab.select(refresh_tasks, inputs=[task_dropdown], outputs=[task_dropdown], **QUIET)
        task_tabs.append(tasks_tab)
        if status is not None:
            with gr.Tab(t("task.status"), id="status") as status_tab:
                timer, refresh_status, status_outputs = build_status_tab(status, drills, viewer_box)
            # The Status tab's timer runs only while that tab is shown.
            status_tab.select(lambda: gr.Timer(active=True), outputs=[timer], **QUIET).then(
                refresh_status, inputs=[viewer_box], outputs=status_outputs, **QUIET)
            for tab in task_tabs:
                tab.select(lambda: gr.Timer(active=False), outputs=[timer], **QUIET)
        # Refreshed on page load and every 10 s, outside the queue: a tiny read of the snapshot.
        refresh_line = dict(fn=lambda raw: status_text(snapshot(), viewer_of(raw)), inputs=[viewer_box],
                            outputs=[status_line], **QUIET)
        demo.load(None, js=VIEWER_JS, outputs=[viewer_box], **QUIET).then(**refresh_line)
        gr.Timer(10).tick(**refresh_line)
    return demo
