"""The edge's one request check, run as a Gradio validator: a bad API call is refused at the queue's door.

Gradio runs an event's ``validator`` before the job waits for a slot; a refusal answers at once and names
the problem. The check is the request's kind's (``engine.kinds.registry.check_request``), the same one
``ModelService.submit`` applies to every request.
"""

from __future__ import annotations

from typing import Callable

import gradio as gr

from engine.errors import InvalidInput
from engine.kinds.base import RequestLimits
from engine.kinds.registry import check_request

__all__ = ["request_validator", "attach_validator"]


def request_validator(build: Callable[..., object], limits: RequestLimits) -> Callable:
    """A validator for an endpoint whose inputs ``build`` makes into the request it will submit."""

    def validate(*values):
        try:
            check_request(build(*values), limits)
        except InvalidInput as refused:
            verdicts = (gr.validate(False, refused.user_message),) + (gr.validate(True, ""),) * (len(values) - 1)
        else:
            verdicts = (gr.validate(True, ""),) * len(values)
        return verdicts if len(verdicts) > 1 else verdicts[0]

    return validate


def attach_validator(dependency, validator: Callable) -> None:
    """``gr.api`` takes no ``validator`` argument (event listeners do): set it on the event's ``BlockFunction``,
    where Gradio's queue looks for it (the ``Dependency``'s ``fn`` is the plain function, which it never reads)."""
    gr.context.get_blocks_context().fns[dependency["id"]].validator = validator
