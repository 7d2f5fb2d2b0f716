"""UI strings in English and Chinese; Gradio picks the browser's language."""

from __future__ import annotations

import gradio as gr

__all__ = ["I18N", "t", "both", "tab_title"]

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
    "mode": "Answer by",
    "task_choice": "Task",
    "task_admin": "Tasks (admin)",
    "task_admin_help": "Add or change a task while the app runs: its name, and its fields as JSON (the fields of "
                       "engine/tasks.toml). It serves at once, without a reload, and is kept across restarts. "
                       "Tasks from the shipped file cannot be changed here. Uses the admin token above.",
    "task_name": "Task name",
    "task_fields": "Fields (JSON)",
    "task_save": "Save task",
    "task_remove": "Remove task",
    "task.tasks": "Tasks",
    "mode_info": "auto: the linear head where one is fitted for this model, else the prompt",
    "col_mode": "Answered by",
    "task.sentiment": "Sentiment",
    "task.chat": "Chat",
    "task.status": "Status",
    "latency_plot": "Latency (mean per 5 s)",
    "memory_plot": "Process memory",
    "col_time": "Time",
    "col_event": "Event",
    "col_detail": "Detail",
    "recent_self_tests": "Recent self-tests",
    "reload_history": "Loads, reloads and recoveries",
    "drills": "Fault drills (admin)",
    "drills_help": "Break the service on purpose and watch it heal. Needs the admin token the app was started with.",
    "admin_token": "Admin token",
    "reload_button": "Reload model",
    "peers": "Other instances",
    "col_instance": "Instance",
    "col_ready": "Ready",
    "col_state": "State",
    "col_model": "Model",
    "col_latency": "Latency (ms)",
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
    "mode": "回答方式",
    "task_choice": "任务",
    "task_admin": "任务管理（管理员）",
    "task_admin_help": "运行中添加或修改任务：任务名，以及 JSON 格式的字段（与 engine/tasks.toml 相同）。立即生效，无需重新加载，"
                       "重启后仍保留。内置任务不能在此修改。使用上方的管理员令牌。",
    "task_name": "任务名",
    "task_fields": "字段（JSON）",
    "task_save": "保存任务",
    "task_remove": "删除任务",
    "task.tasks": "任务",
    "mode_info": "auto：本模型有已训练的线性头时用线性头，否则用提示词",
    "col_mode": "回答方式",
    "task.sentiment": "情感分析",
    "task.chat": "对话",
    "task.status": "状态",
    "latency_plot": "延迟（每 5 秒平均）",
    "memory_plot": "进程内存",
    "col_time": "时间",
    "col_event": "事件",
    "col_detail": "详情",
    "recent_self_tests": "最近自检",
    "reload_history": "加载、重载与恢复记录",
    "drills": "故障演练（管理员）",
    "drills_help": "故意让服务出故障，观察它自动恢复。需要启动应用时设置的管理员令牌。",
    "admin_token": "管理员令牌",
    "reload_button": "重新加载模型",
    "peers": "其他实例",
    "col_instance": "实例",
    "col_ready": "就绪",
    "col_state": "状态",
    "col_model": "模型",
    "col_latency": "延迟（毫秒）",
}

I18N = gr.I18n(en=_EN, zh=_ZH, **{"zh-CN": _ZH, "zh-TW": _ZH})
t = I18N


def both(key: str) -> str:
    """"English / 中文" as plain text, for strings Gradio does not translate: headers of a
    table whose rows a handler returns (Gradio turns I18n keys there into raw markers)."""
    return f"{_EN[key]} / {_ZH[key]}"


def tab_title(info):
    """A translated tab title for the built-in tasks; a new task shows its own title."""
    key = f"task.{info.name}"
    return t(key) if key in _EN else info.title
