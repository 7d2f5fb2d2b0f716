"""Builder for a generate task's tab (the Chat tab is one) and its API.

A ``gr.ChatInterface`` (streaming, Stop and Clear; history in the browser session) with a selector of
every generate task, runtime ones too, read again on load and on opening the tab. The endpoint
``/<task>`` takes ``message`` and an optional ``history`` and streams the reply when submitted as a job.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterator

import gradio as gr

from engine.kinds.generate import fit_history
from engine.types import (
    FINISH_LENGTH,
    FINISH_TIME_LIMIT,
    NOTICE_HISTORY_TRIMMED,
    NOTICE_INPUT_TRUNCATED,
    GenerateOptions,
    Inference,
    TaskInfo,
    TaskKind,
)
from ui.errors import friendly_errors
from ui.i18n import language_of, t, text
from ui.task_choice import choice_refresher, task_names

if TYPE_CHECKING:
    from engine.kinds.base import RequestLimits

__all__ = ["build_chat_tab", "CHAT_POOL"]

# Every chat door (each generate task's tab and endpoint, the Tasks tab's /generate) draws on one pool
# of slots: the engine decodes at most max_active_chats chats, whatever their task.
CHAT_POOL = "chat-slots"

_NOTICES = {  # the engine's notice codes -> their strings in ui.i18n
    NOTICE_HISTORY_TRIMMED: "notice.history_trimmed",
    NOTICE_INPUT_TRUNCATED: "notice.input_truncated",
    FINISH_LENGTH: "notice.length",
    FINISH_TIME_LIMIT: "notice.time_limit",
}


def build_chat_tab(service: Inference, info: TaskInfo, concurrency_limit: int, limits: "RequestLimits"):
    """Render the tab. The browser chat and the API share one pool of ``concurrency_limit``
    slots (the engine's active chats); past it, requests wait in Gradio's queue, which shows
    each browser its place in line, and a full queue answers "busy". ``limits``
    (``engine.kinds.base``): the browser sends only the history that fits them (the model would drop
    older turns to fit its context anyway); an API call over them is refused by the service's check.
    The notices are in the browser's language (its request's Accept-Language).
    Returns ``(refresh, selector)``: the caller re-reads the generate tasks into the selector."""

    def stream_reply(message: str, history: list | None, task: str | None, request: gr.Request) -> Iterator[str]:
        update = None
        # One slot per browser session: a new message replaces the session's unfinished answer.
        options = GenerateOptions(session=getattr(request, "session_hash", None))
        for update in service.generate(task or info.name, message, fit_history(history, limits), options):
            yield update.text
        if update is not None:
            for code in (*update.notices, update.finish_reason):
                if code in _NOTICES:
                    gr.Info(text(_NOTICES[code], language_of(_accept_language(request))))

    pool = CHAT_POOL
    blocks = gr.context.get_blocks_context()
    before = set(blocks.fns)
    selector = gr.Dropdown(task_names(service, TaskKind.GENERATE), value=info.name, label=t("task_choice"),
                           render=False, elem_id=f"{info.name}-task")
    gr.ChatInterface(
        fn=friendly_errors(stream_reply),
        chatbot=gr.Chatbot(label=t("chat_box"), height=420, elem_id=f"{info.name}-chatbot"),
        textbox=gr.Textbox(label=t("chat_input"), placeholder=t("chat_placeholder"), submit_btn=True,
                           stop_btn=True, elem_id=f"{info.name}-input"),
        # No values for the extra inputs: the examples show in the chat box, not as a table of them.
        examples=[[example, None] for example in info.ui_examples] or None,
        api_visibility="private",
        concurrency_limit=concurrency_limit,
        fill_height=False,
        additional_inputs=[selector],
        # Not rendered here: ChatInterface renders its own from this one's settings, under the chat.
        additional_inputs_accordion=gr.Accordion(t("task_choice"), open=False, render=False),
    )
    # ChatInterface makes its own events (submit, retry, examples...); the ones that run the
    # model get a concurrency limit: put them in the API's pool (see the docstring).
    for key in set(blocks.fns) - before:
        if blocks.fns[key].concurrency_limit == concurrency_limit:
            blocks.fns[key].concurrency_id = pool

    def api(message: str, history: list[dict] | None = None) -> str:
        """Reply to ``message`` given ``history``; streams the text so far when submitted as a job."""
        for update in service.generate(info.name, message, history):
            yield update.text

    api.__name__ = info.name
    gr.api(friendly_errors(api), api_name=info.name, concurrency_limit=concurrency_limit, concurrency_id=pool)

    return choice_refresher(service, TaskKind.GENERATE, lambda choices: info.name), selector


def _accept_language(request: gr.Request | None) -> str:
    headers = getattr(request, "headers", None) or {}
    return headers.get("accept-language", "")
