"""The request limits as Gradio validators: an API call over a limit is refused at the queue's door.

Gradio runs an event's ``validator`` before the job waits for a slot; a refusal answers at once (HTTP
422) and names the limit. The service checks the same limits again for every request
(``ops.serving.limits``).
"""

from __future__ import annotations

from typing import Callable

import gradio as gr

from engine.errors import InvalidInput

__all__ = ["limit_validator", "attach_validator", "no_check"]


def _verdict(check: Callable[[object], None], value: object):
    try:
        check(value)
    except InvalidInput as refused:
        return gr.validate(False, refused.user_message)
    return gr.validate(True, "")


def no_check(value: object) -> None:
    """For an input a validator leaves alone (a task name, a mode: the service checks those)."""


def limit_validator(*checks: Callable[[object], None]) -> Callable:
    """A validator for an endpoint whose inputs are checked, in order, by ``checks`` (inputs past
    the last check are not checked here)."""

    def validate(*values):
        verdicts = tuple(_verdict(checks[i] if i < len(checks) else no_check, value) for i, value in enumerate(values))
        return verdicts if len(verdicts) > 1 else verdicts[0]

    return validate


def attach_validator(dependency, validator: Callable) -> None:
    """``gr.api`` takes no ``validator`` argument (event listeners do): set it on the event's function."""
    dependency.fn.validator = validator
