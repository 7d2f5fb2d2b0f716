"""Builder for a classify task's tab (the Sentiment tab is one) and its API.

One text gives a label with confidences; several lines give a table, scored
in one batch. The API endpoint ``/<task>`` takes one text (and an optional
``mode``: ``auto``, ``prompt`` or ``head``, see ``engine.heads``) and returns
the engine's fixed result shape (``ClassifyResult.to_api``), which says which
mode answered. A task with an examples file shows a mode choice, so a class
can compare the prompt with the fitted head.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import gradio as gr
import pandas as pd

from engine.errors import InvalidInput
from engine.types import ClassifyMode, Inference, TaskInfo
from ui.errors import friendly_errors
from ui.i18n import both, t
from ui.validation import attach_validator, limit_validator

if TYPE_CHECKING:
    from ops.limits import RequestLimits

__all__ = ["build_classify_tab"]

TABLE_HEADERS = [both("col_text"), both("col_label"), both("col_confidence"), both("col_mode")]


def build_classify_tab(service: Inference, info: TaskInfo, concurrency_limit: int, limits: "RequestLimits") -> None:
    """Render the tab's components into the current Blocks context. ``limits`` (``ops.limits``)
    refuses an oversized API call before it joins the queue."""

    @friendly_errors
    def analyze(text: str, mode: str = ClassifyMode.AUTO.value):
        lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
        if not lines:
            raise InvalidInput("Please enter some text.")
        results = service.classify(info.name, lines, mode)
        if any(r.truncated for r in results):
            gr.Info(t("truncated"))
        answered = f"{both('col_mode')}: **{results[0].mode.value}**" if info.modes else ""
        if len(results) == 1:
            return (gr.update(value=results[0].scores, visible=True), gr.update(value=None, visible=False),
                    answered)
        rows = [[line, r.label, round(r.confidence, 3), r.mode.value] for line, r in zip(lines, results)]
        return (gr.update(value=None, visible=False),
                gr.update(value=pd.DataFrame(rows, columns=TABLE_HEADERS), visible=True), answered)

    with gr.Row():
        with gr.Column(scale=3):
            text = gr.Textbox(label=t("input_text"), lines=4, max_lines=20, elem_id=f"{info.name}-input")
            with gr.Row():
                button = gr.Button(t("analyze"), variant="primary", elem_id=f"{info.name}-run")
                clear = gr.Button(t("clear"))
            # Only a task with an examples file has a head to choose; the others answer by prompt alone.
            mode = gr.Radio([m.value for m in ClassifyMode], value=ClassifyMode.AUTO.value, label=t("mode"),
                            info=t("mode_info"), visible=bool(info.modes), elem_id=f"{info.name}-mode")
        with gr.Column(scale=2):
            label = gr.Label(label=t("result"), num_top_classes=len(info.labels), elem_id=f"{info.name}-label")
            answered = gr.Markdown(elem_id=f"{info.name}-mode-answered")
            table = gr.Dataframe(
                headers=TABLE_HEADERS,
                label=t("table"),
                visible=False,
                interactive=False,
                wrap=True,
                elem_id=f"{info.name}-table",
            )
    clear.click(
        lambda: ("", None, gr.update(value=None, visible=False), ""),
        outputs=[text, label, table, answered], queue=False, api_visibility="private",
    )
    if info.ui_examples:
        gr.Examples(examples=[[e] for e in info.ui_examples], inputs=[text], label=t("examples"))
    for trigger in (button.click, text.submit):
        trigger(
            analyze, inputs=[text, mode], outputs=[label, table, answered],
            api_visibility="private", concurrency_limit=concurrency_limit, concurrency_id=info.name,
        )

    def api(text: str, mode: str = ClassifyMode.AUTO.value) -> dict:
        """Classify one text; returns {"label", "confidence", "scores", "truncated", "mode"}.
        ``mode``: auto (default), prompt or head; the result's ``mode`` says which answered."""
        return service.classify(info.name, [text], mode)[0].to_api()

    api.__name__ = info.name
    endpoint = gr.api(
        friendly_errors(api), api_name=info.name, concurrency_limit=concurrency_limit, concurrency_id=info.name
    )
    attach_validator(endpoint, limit_validator(limits.check_message))
