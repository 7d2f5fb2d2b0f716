"""Task pickers (the Chat tab's task selector, the Tasks tab's dropdown): which tasks to offer, read again
whenever asked, since an operator may add or remove tasks while the app runs (``ops.api.runtime_tasks``)."""

from __future__ import annotations

from typing import Callable

import gradio as gr

from engine.types import Inference, TaskKind

__all__ = ["task_names", "choice_refresher"]


def task_names(service: Inference, kind: TaskKind) -> list[str]:
    """The names of the tasks of ``kind`` (``classify`` or ``generate``) served now."""
    return [info.name for info in service.task_infos() if info.kind == kind]


def choice_refresher(service: Inference, kind: TaskKind, fallback: Callable[[list[str]], str | None]) -> Callable:
    """A handler that re-reads the choices of a task dropdown and keeps the current one while it still
    exists (else ``fallback(choices)``)."""

    def refresh(current: str | None):
        choices = task_names(service, kind)
        return gr.update(choices=choices, value=current if current in choices else fallback(choices))

    return refresh
