"""The Status tab's task panel (admin): add, change or remove a task while the app runs.

A task is its name and its fields as JSON, the same fields as a table of
``engine/tasks.toml``; the panel goes through ``AdminActions`` like
``PUT``/``DELETE /admin/tasks/{name}``, so it can do nothing the routes would
refuse, and a refusal shows its reason (the field at fault, or the worker's).
"""

from __future__ import annotations

import json
from typing import Callable, Protocol

import gradio as gr

from ui.i18n import t
from ui.viewer import client_host, viewer_of

__all__ = ["TaskAdmin", "build_task_panel"]

QUIET = dict(queue=False, api_visibility="private", show_progress="hidden")
EXAMPLE = {"kind": "classify", "title": "Topic", "labels": ["food", "sport"],
           "instruction": "Is the text about food or sport? Answer with one word.",
           "probes": [{"text": "a bowl of noodles", "label": "food"}]}


class TaskAdmin(Protocol):
    """What the panel calls (``ops.api.admin.AdminActions``); an error's text (``str``) is what the operator sees."""

    def put_task(self, name: str, table: object, token: str | None, client: str = ...) -> dict: ...

    def remove_task(self, name: str, token: str | None, client: str = ...) -> dict: ...



def build_task_panel(admin: TaskAdmin, token: gr.Textbox, viewer_box: gr.Textbox) -> None:
    """Render the panel; ``token`` is the admin token box it shares with the drills; ``viewer_box``:
    see ``ui.viewer``."""
    with gr.Accordion(t("task_admin"), open=False, elem_id="status-tasks"):
        gr.Markdown(t("task_admin_help"))
        name = gr.Textbox(label=t("task_name"), value="topic", elem_id="status-task-name")
        fields = gr.Code(json.dumps(EXAMPLE, ensure_ascii=False, indent=2), language="json",
                         label=t("task_fields"), elem_id="status-task-fields")
        with gr.Row():
            save = gr.Button(t("task_save"), variant="primary", size="sm", elem_id="status-task-save")
            remove = gr.Button(t("task_remove"), variant="stop", size="sm", elem_id="status-task-remove")
        outcome = gr.Markdown(elem_id="status-task-outcome")

    def on_save(task: str, text: str, given: str, raw: str, request: gr.Request) -> str:
        try:
            table = json.loads(text or "")
        except ValueError as exc:
            return f"✗ {viewer_of(raw).text('task_fields_not_json', error=exc)}"
        return _run(lambda: admin.put_task((task or "").strip(), table, given, client_host(request)))

    def on_remove(task: str, given: str, request: gr.Request) -> str:
        return _run(lambda: admin.remove_task((task or "").strip(), given, client_host(request)))

    save.click(on_save, inputs=[name, fields, token, viewer_box], outputs=[outcome], **QUIET)
    remove.click(on_remove, inputs=[name, token], outputs=[outcome], **QUIET)


def _run(action: Callable[[], dict]) -> str:
    try:
        result = action()
    except Exception as exc:  # AdminDenied: show why, never a traceback
        return f"✗ {exc}"
    return f"✓ `{result['task']}` {result['change']}"
