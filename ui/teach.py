"""The Tasks tab's "teach a task by example" panel (admin): define a classify task, give it examples, fit its head.

It goes through ``AdminActions`` like the ``/admin/tasks`` routes (so it can do nothing they would
refuse), polls the fit for its progress bar and shows its report (layer, cross-validated accuracy,
confusion matrix, prompt against head). Strings: ``ui/strings.toml``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Protocol

import gradio as gr
import pandas as pd

from ui.i18n import t
from ui.viewer import Viewer, client_host, viewer_of

__all__ = ["Teaching", "build_teach_panel", "fit_and_report", "save_examples"]

POLL_S = 0.5
FIT_TIMEOUT_S = 900.0
PRIVATE = dict(api_visibility="private")


class Teaching(Protocol):
    """What the panel calls (``ops.api.admin.AdminActions``); an error's text (``str``) is what the operator sees."""

    enabled: bool
    teacher: object | None

    def put_task(self, name: str, table: object, token: str | None, client: str = ...) -> dict: ...

    def put_examples(self, name: str, body: bytes, content_type: str | None, token: str | None,
                     client: str = ...) -> dict: ...

    def fit(self, name: str, token: str | None, client: str = ...) -> dict: ...

    def get_task(self, name: str, token: str | None, client: str = ...) -> dict: ...



def _refused(exc: Exception) -> str:
    return f"✗ {exc}"


def save_examples(admin: Teaching, viewer: Viewer, token: str, name: str, labels: str, instruction: str,
                  lines: str, file: str | None, client: str = "unknown") -> str:
    """Define (or redefine) the task, then give it the pasted lines or the file; the outcome as Markdown."""
    name = (name or "").strip()
    if not name:
        return viewer.text("teach.no_name")
    table = {"kind": "classify", "labels": [x.strip() for x in (labels or "").split(",") if x.strip()],
             "instruction": (instruction or "").strip()}
    data = Path(file).read_bytes() if file else (lines or "").encode("utf-8")
    try:
        admin.put_task(name, table, token, client)
        answer = admin.put_examples(name, data, None, token, client)
    except Exception as exc:  # AdminDenied: show why, never a traceback
        return _refused(exc)
    counts = ", ".join(f"{label} {n}" for label, n in answer["per_label"].items())
    return viewer.text("teach.saved", task=name, count=answer["examples"], per_label=counts)


def fit_and_report(admin: Teaching, viewer: Viewer, token: str, name: str, progress: Callable,
                   client: str = "unknown", sleep: Callable[[float], None] = time.sleep
                   ) -> tuple[str, pd.DataFrame | None]:
    """Start the fit, follow it on ``progress`` and return its report and confusion matrix (or why not)."""
    name = (name or "").strip()
    try:
        admin.fit(name, token, client)
        deadline = time.monotonic() + FIT_TIMEOUT_S
        while True:
            fit = admin.get_task(name, token, client)["fit"]
            if fit["stage"] in ("done", "failed") or time.monotonic() > deadline:
                break
            progress(fit["fraction"], desc=viewer.text(f"teach.stage.{fit['stage']}"))
            sleep(POLL_S)
    except Exception as exc:
        return _refused(exc), None
    if fit["stage"] != "done":
        return viewer.text("teach.failed", error=fit.get("error") or fit["stage"]), None
    report = fit["result"]
    layer = viewer.text("teach.last_layer") if report["layer"] is None else viewer.text("teach.layer",
                                                                                         layer=report["layer"])
    held = report["held_out"]
    summary = viewer.text("teach.report", task=name, layer=layer, cv=f"{report['cv_accuracy']:.3f}",
                          held=held["examples"], prompt=f"{held['prompt_accuracy']:.3f}",
                          head=f"{held['head_accuracy']:.3f}", seconds=f"{report['seconds']:.0f}")
    labels = report["labels"]
    matrix = pd.DataFrame([{"truth": labels[i], "answer": labels[j], "count": n}
                           for i, row in enumerate(report["confusion"]) for j, n in enumerate(row)])
    return summary, matrix


def build_teach_panel(admin: Teaching | None, viewer_box: gr.Textbox) -> None:
    """Render the panel where the app can change its tasks and has an admin token; else nothing."""
    if admin is None or not admin.enabled or admin.teacher is None:
        return
    with gr.Accordion(t("teach.title"), open=False, elem_id="tasks-teach"):
        gr.Markdown(t("teach.help"))
        token = gr.Textbox(label=t("admin_token"), type="password", elem_id="teach-token")
        with gr.Row():
            name = gr.Textbox(label=t("task_name"), elem_id="teach-name")
            labels = gr.Textbox(label=t("teach.labels"), elem_id="teach-labels")
        instruction = gr.Textbox(label=t("teach.instruction"), lines=2, elem_id="teach-instruction")
        with gr.Row():
            lines = gr.Textbox(label=t("teach.lines"), lines=6, scale=3, elem_id="teach-lines")
            upload = gr.File(label=t("teach.file"), file_types=[".txt", ".tsv", ".csv", ".jsonl"], type="filepath",
                             height=120, scale=2, elem_id="teach-file")
        with gr.Row():
            save = gr.Button(t("teach.save"), size="sm", elem_id="teach-save")
            fit = gr.Button(t("teach.fit"), variant="primary", size="sm", elem_id="teach-fit")
        outcome = gr.Markdown(elem_id="teach-outcome")
        confusion = gr.BarPlot(x="truth", y="count", color="answer", label=t("teach.confusion"),
                               x_title=t("teach.truth"), y_title=t("col.count"), color_title=t("teach.answer"),
                               elem_id="teach-confusion")

    def on_save(given, task, names, words, pasted, file, raw, request: gr.Request) -> str:
        return save_examples(admin, viewer_of(raw), given, task, names, words, pasted, file, client_host(request))

    def on_fit(given, task, raw, request: gr.Request, progress=gr.Progress()):
        return fit_and_report(admin, viewer_of(raw), given, task, progress, client_host(request))

    save.click(on_save, inputs=[token, name, labels, instruction, lines, upload, viewer_box], outputs=[outcome],
               **PRIVATE)
    fit.click(on_fit, inputs=[token, name, viewer_box], outputs=[outcome, confusion], **PRIVATE)
