"""Builder for a classify task's tab (the Sentiment tab is one) and its API.

One text gives a label with confidences; several lines give a table, scored in one batch; a file goes
through the file panel (``ui.file_panel``). The API endpoint ``/<task>`` takes one text (and an optional
``mode``: ``auto``, ``prompt`` or ``head``, see ``engine.heads``) and returns the engine's fixed result
shape (``ClassifyResult.to_api``) with label ids; the tab shows the labels' names in the viewer's language.
"""

from __future__ import annotations


import gradio as gr

from engine.kinds.classify import ClassifyResult
from engine.types import ClassifyMode, Inference, TaskInfo
from ui.errors import friendly_errors
from ui.file_panel import FileDoor, results_frame
from ui.i18n import t
from ui.viewer import Viewer, viewer_of

__all__ = ["build_classify_tab", "mode_choice", "shown_result"]


def mode_choice(elem_id: str, visible: bool = True) -> gr.Radio:
    """How to answer: ``auto``, ``prompt`` or ``head``, named in the browser's language."""
    return gr.Radio([(t(f"modes.{m.value}"), m.value) for m in ClassifyMode], value=ClassifyMode.AUTO.value,
                    label=t("mode"), info=t("mode_info"), visible=visible, elem_id=elem_id)


def shown_result(result: ClassifyResult, info: TaskInfo, viewer: Viewer) -> tuple[dict[str, float], str]:
    """One result for ``gr.Label`` (label names -> scores) and the line that says which mode answered."""
    names = viewer.labels(info)
    return ({names.get(label, label): score for label, score in result.scores.items()},
            viewer.text("answered", mode=viewer.text(f"modes.{result.mode.value}")))


def build_classify_tab(service: Inference, info: TaskInfo, concurrency_limit: int, viewer_box: gr.Textbox,
                       files: FileDoor) -> None:
    """Render the tab's components into the current Blocks context (the service checks every request: the
    edge's one check, ``engine.kinds``); ``viewer_box``: see ``ui.viewer``."""

    @friendly_errors
    def analyze(text: str, mode: str, raw: str):
        viewer = viewer_of(raw)
        lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
        if not lines:
            raise gr.Error(viewer.text("error.empty_text"), print_exception=False)
        results = service.classify(info.name, lines, mode)
        if any(r.truncated for r in results):
            gr.Info(viewer.text("truncated"))
        scores, answered = shown_result(results[0], info, viewer)
        answered = answered if info.modes else ""
        if len(results) == 1:
            return gr.update(value=scores, visible=True), gr.update(value=None, visible=False), answered
        rows = [(line, r.label, r.confidence, r.mode.value) for line, r in zip(lines, results)]
        return (gr.update(value=None, visible=False),
                gr.update(value=results_frame(rows, info, viewer), visible=True), answered)

    with gr.Row():
        with gr.Column(scale=3):
            text = gr.Textbox(label=t("input_text"), lines=4, max_lines=20, elem_id=f"{info.name}-input")
            with gr.Row():
                button = gr.Button(t("analyze"), variant="primary", elem_id=f"{info.name}-run")
                clear = gr.Button(t("clear"))
            # Only a task with an examples file has a head to choose; the others answer by prompt alone.
            mode = mode_choice(f"{info.name}-mode", visible=bool(info.modes))
        with gr.Column(scale=2):
            label = gr.Label(label=t("result"), num_top_classes=len(info.labels), elem_id=f"{info.name}-label")
            answered = gr.Markdown(elem_id=f"{info.name}-mode-answered")
            # Headers come with the rows, in the viewer's language (Gradio shows translation keys raw here).
            table = gr.Dataframe(label=t("table"), visible=False, interactive=False, wrap=True,
                                 elem_id=f"{info.name}-table")
    clear.click(
        lambda: ("", None, gr.update(value=None, visible=False), ""),
        outputs=[text, label, table, answered], queue=False, api_visibility="private",
    )
    if info.ui_examples:
        gr.Examples(examples=[[e] for e in info.ui_examples], inputs=[text], label=t("examples"))
    for trigger in (button.click, text.submit):
        trigger(
            analyze, inputs=[text, mode, viewer_box], outputs=[label, table, answered],
            api_visibility="private", concurrency_limit=concurrency_limit, concurrency_id=info.name,
        )
    files.build_panel(info.name, mode, viewer_box, info.name)

    def api(text: str, mode: str = ClassifyMode.AUTO.value) -> dict:
        """Classify one text; returns {"label", "confidence", "scores", "truncated", "mode"}.
        ``mode``: auto (default), prompt or head; the result's ``mode`` says which answered."""
        return service.classify(info.name, [text], mode)[0].to_api()

    api.__name__ = info.name
    gr.api(friendly_errors(api), api_name=info.name, concurrency_limit=concurrency_limit, concurrency_id=info.name)
