"""The Tasks tab: run any classify task, the shipped ones and those added at run time, from one place.

Its task list is read again each time the tab opens (runtime tasks get no tab of their own); files go
through ``ui.file_panel``. API: ``/classify`` (``task``, ``text``, optional ``mode``), ``/classify_file``
(a file and ``task``; a CSV) and ``/generate`` (``task``, ``message``, ``history``; streaming as a job).
"""

from __future__ import annotations

from typing import Iterator

import gradio as gr

from engine.types import ClassifyMode, Inference, TaskKind
from ui.chat_tab import CHAT_POOL
from ui.classify_tab import mode_choice, shown_result
from ui.errors import friendly_errors
from ui.file_panel import FileDoor
from ui.i18n import t
from ui.task_choice import choice_refresher, task_names
from ui.teach import Teaching, build_teach_panel
from ui.viewer import viewer_of

__all__ = ["build_tasks_tab"]

# This tab's endpoints are /classify and /generate: engine.tasks.RESERVED_NAMES keeps tasks off those names.


def build_tasks_tab(service: Inference, classify_concurrency: int, chat_concurrency: int,
                    viewer_box: gr.Textbox, files: FileDoor, admin: Teaching | None = None):
    """Render the tab's contents; returns ``(refresh, dropdown)``: the caller re-reads the task list
    into the dropdown whenever the tab is opened. ``viewer_box``: see ``ui.viewer``."""
    names = task_names(service, TaskKind.CLASSIFY)

    @friendly_errors
    def run(task: str, text: str, mode: str, raw: str):
        viewer = viewer_of(raw)
        if not task:
            raise gr.Error(viewer.text("error.no_task"), print_exception=False)
        if not (text or "").strip():
            raise gr.Error(viewer.text("error.empty_text"), print_exception=False)
        result = service.classify(task, [text.strip()], mode)[0]
        return shown_result(result, {i.name: i for i in service.task_infos()}[task], viewer)

    with gr.Row():
        with gr.Column(scale=3):
            task = gr.Dropdown(names, value=names[0] if names else None, label=t("task_choice"),
                               elem_id="tasks-task")
            text = gr.Textbox(label=t("input_text"), lines=3, elem_id="tasks-input")
            mode = mode_choice("tasks-mode")
            button = gr.Button(t("analyze"), variant="primary", elem_id="tasks-run")
        with gr.Column(scale=2):
            label = gr.Label(label=t("result"), elem_id="tasks-label")
            answered = gr.Markdown(elem_id="tasks-mode-answered")
    for trigger in (button.click, text.submit):
        trigger(run, inputs=[task, text, mode, viewer_box], outputs=[label, answered], api_visibility="private",
                concurrency_limit=classify_concurrency, concurrency_id="tasks-classify")
    files.build_panel(task, mode, viewer_box, "tasks")
    build_teach_panel(admin, viewer_box)  # admin only: define a task, give it examples, fit its head
    files.add_api()

    def classify(task: str, text: str, mode: str = ClassifyMode.AUTO.value) -> dict:
        """Classify ``text`` with the classify task ``task``; the same shape as ``/sentiment``."""
        return service.classify(task, [text], mode)[0].to_api()

    gr.api(friendly_errors(classify), api_name="classify", concurrency_limit=classify_concurrency,
           concurrency_id="tasks-classify")

    def generate(task: str, message: str, history: list[dict] | None = None) -> Iterator[str]:
        """Answer ``message`` with the generate task ``task``; streams the text so far as a job."""
        for update in service.generate(task, message, history):
            yield update.text

    gr.api(friendly_errors(generate), api_name="generate", concurrency_limit=chat_concurrency, concurrency_id=CHAT_POOL)

    return choice_refresher(service, TaskKind.CLASSIFY, lambda choices: choices[0] if choices else None), task
