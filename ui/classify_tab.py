"""Builder for a classify task's tab (the Sentiment tab is one) and its API.

One text gives a label with confidences; several lines give a table, scored
in one batch. The API endpoint ``/<task>`` takes one text and returns the
engine's fixed result shape (``ClassifyResult.to_api``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import gradio as gr
import pandas as pd

from engine.errors import InvalidInput
from engine.types import Inference, TaskInfo
from ui.errors import friendly_errors
from ui.i18n import both, t
from ui.validation import attach_validator, limit_validator

if TYPE_CHECKING:
    from ops.limits import RequestLimits

__all__ = ["build_classify_tab"]

TABLE_HEADERS = [both("col_text"), both("col_label"), both("col_confidence")]


def build_classify_tab(service: Inference, info: TaskInfo, concurrency_limit: int, limits: "RequestLimits") -> None:
    """Render the tab's components into the current Blocks context. ``limits`` (``ops.limits``)
    refuses an oversized API call before it joins the queue."""

    @friendly_errors
    def analyze(text: str):
        lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
        if not lines:
            raise InvalidInput("Please enter some text.")
        results = service.classify(info.name, lines)
        if any(r.truncated for r in results):
            gr.Info(t("truncated"))
        if len(results) == 1:
            return gr.update(value=results[0].scores, visible=True), gr.update(value=None, visible=False)
        rows = [[line, r.label, round(r.confidence, 3)] for line, r in zip(lines, results)]
        return gr.update(value=None, visible=False), gr.update(value=pd.DataFrame(rows, columns=TABLE_HEADERS),
                                                               visible=True)

    with gr.Row():
        with gr.Column(scale=3):
            text = gr.Textbox(label=t("input_text"), lines=4, max_lines=20, elem_id=f"{info.name}-input")
            with gr.Row():
                button = gr.Button(t("analyze"), variant="primary", elem_id=f"{info.name}-run")
                clear = gr.Button(t("clear"))
        with gr.Column(scale=2):
            label = gr.Label(label=t("result"), num_top_classes=len(info.labels), elem_id=f"{info.name}-label")
            table = gr.Dataframe(
                headers=TABLE_HEADERS,
                label=t("table"),
                visible=False,
                interactive=False,
                wrap=True,
                elem_id=f"{info.name}-table",
            )
    clear.click(
        lambda: ("", None, gr.update(value=None, visible=False)),
        outputs=[text, label, table], queue=False, api_visibility="private",
    )
    if info.ui_examples:
        gr.Examples(examples=[[e] for e in info.ui_examples], inputs=[text], label=t("examples"))
    for trigger in (button.click, text.submit):
        trigger(
            analyze, inputs=[text], outputs=[label, table],
            api_visibility="private", concurrency_limit=concurrency_limit, concurrency_id=info.name,
        )

    def api(text: str) -> dict:
        """Classify one text; returns {"label", "confidence", "scores", "truncated"}."""
        return service.classify(info.name, [text])[0].to_api()

    api.__name__ = info.name
    endpoint = gr.api(
        friendly_errors(api), api_name=info.name, concurrency_limit=concurrency_limit, concurrency_id=info.name
    )
    attach_validator(endpoint, limit_validator(limits.check_message))
