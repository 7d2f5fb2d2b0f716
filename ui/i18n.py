"""UI strings in English and Chinese; Gradio picks the browser's language."""

from __future__ import annotations

import gradio as gr

__all__ = ["I18N", "t", "tab_title"]

_EN = {
    "title": "Qwen All-in-One",
    "subtitle": "One small local model, several tasks.",
    "input_text": "Text (one per line for several at once)",
    "analyze": "Analyze",
    "clear": "Clear",
    "result": "Result",
    "table": "Results",
    "col_text": "Text",
    "col_label": "Label",
    "col_confidence": "Confidence",
    "examples": "Examples",
    "chat_placeholder": "Type a message…",
    "state": "Model status",
    "truncated": "Input was long and was truncated to fit.",
    "task.sentiment": "Sentiment",
    "task.chat": "Chat",
}

_ZH = {
    "title": "Qwen 一体化助手",
    "subtitle": "一个本地小模型，多种任务。",
    "input_text": "文本（每行一条，可一次分析多条）",
    "analyze": "分析",
    "clear": "清空",
    "result": "结果",
    "table": "结果列表",
    "col_text": "文本",
    "col_label": "标签",
    "col_confidence": "置信度",
    "examples": "示例",
    "chat_placeholder": "输入消息…",
    "state": "模型状态",
    "truncated": "输入过长，已截断。",
    "task.sentiment": "情感分析",
    "task.chat": "对话",
}

I18N = gr.I18n(en=_EN, zh=_ZH, **{"zh-CN": _ZH, "zh-TW": _ZH})
t = I18N


def tab_title(info):
    """A translated tab title for the built-in tasks; a new task shows its own title."""
    key = f"task.{info.name}"
    return t(key) if key in _EN else info.title
