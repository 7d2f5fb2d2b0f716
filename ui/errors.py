"""One exception interceptor for every UI and API handler.

Engine errors (``AllInOneError``) become ``gr.Error`` with their friendly
message, the same text for browser users and API clients; anything else is
logged with its stack trace and the user sees one generic message.
"""

from __future__ import annotations

import functools
import inspect
from typing import Callable

import gradio as gr
from loguru import logger

from engine.errors import AllInOneError

__all__ = ["friendly_errors", "GENERIC_ERROR"]

GENERIC_ERROR = "Something went wrong on the server. Please try again."


def _translate(exc: Exception) -> gr.Error:
    if isinstance(exc, gr.Error):
        return exc
    if isinstance(exc, AllInOneError):
        return gr.Error(exc.user_message, print_exception=False)
    logger.opt(exception=exc).error("unexpected error in a request handler")
    return gr.Error(GENERIC_ERROR, print_exception=False)


def friendly_errors(fn: Callable) -> Callable:
    """Wrap a handler (plain function or generator) so only friendly errors escape."""
    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def gen_wrapper(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except Exception as exc:
                raise _translate(exc) from None

        return gen_wrapper

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            raise _translate(exc) from None

    return wrapper
