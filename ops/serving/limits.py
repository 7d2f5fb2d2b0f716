"""Limits at the edge: what one request may carry, checked before anything is queued. Pure.

A chat message, its history's messages and characters, a classification's lines and their characters,
and valid Unicode. Each refusal is a ``LimitExceeded`` naming the limit. ``ModelService.submit`` checks
every request here; the Gradio endpoints check again before Gradio's queue (``ui.validation``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from engine.errors import InvalidInput
from engine.types import ChatRequest, ClassifyRequest, Request

__all__ = ["RequestLimits", "LimitExceeded"]


class LimitExceeded(InvalidInput):
    default_message = "The request is larger than this server accepts."


@dataclass(frozen=True)
class RequestLimits:
    max_message_chars: int = 4000  # one chat message, and each line to classify
    max_history_messages: int = 64
    max_history_chars: int = 24000  # about 6,000 tokens: ten times the default 512-token context
    max_lines: int = 64  # texts in one classification request

    def check(self, request: Request) -> None:
        """Raise ``LimitExceeded`` naming the first limit ``request`` is over (types are the engine's job)."""
        if isinstance(request, ChatRequest):
            self.check_message(request.message)
            self.check_history(request.history)
            if request.options.system_prompt is not None:
                self.check_message(request.options.system_prompt, "System prompt")
        elif isinstance(request, ClassifyRequest):
            self.check_lines(request.texts)

    def check_message(self, message: object, what: str = "Message") -> None:
        if isinstance(message, str) and len(message) > self.max_message_chars:
            raise LimitExceeded(f"{what} too long: {len(message)} characters, the limit is "
                                f"{self.max_message_chars}.")
        _check_unicode(message, f"The {what.lower()}")

    def check_history(self, history: object) -> None:
        if not isinstance(history, (list, tuple)):
            return
        if len(history) > self.max_history_messages:
            raise LimitExceeded(f"History too long: {len(history)} messages, the limit is "
                                f"{self.max_history_messages}.")
        chars = sum(len(_text(item)) for item in history)
        if chars > self.max_history_chars:
            raise LimitExceeded(f"History too long: {chars} characters, the limit is {self.max_history_chars}.")
        for i, item in enumerate(history):
            _check_unicode(_text(item), f"history[{i}]")

    def check_lines(self, texts: object) -> None:
        if not isinstance(texts, (list, tuple)):
            return
        if len(texts) > self.max_lines:
            raise LimitExceeded(f"Too many lines: {len(texts)}, the limit is {self.max_lines} per request.")
        for i, text in enumerate(texts):
            if isinstance(text, str) and len(text) > self.max_message_chars:
                raise LimitExceeded(f"Line {i + 1} too long: {len(text)} characters, the limit is "
                                    f"{self.max_message_chars}.")
            _check_unicode(text, f"Line {i + 1}")

    def fit_history(self, history: Sequence[dict] | None) -> list[dict]:
        """The newest messages that fit the limits (what the chat tab sends: the model would drop
        the older ones to fit its context anyway). Starts with a user turn where it can."""
        kept: list[dict] = []
        chars = 0
        for item in reversed(list(history or [])):
            size = len(_text(item))
            if len(kept) == self.max_history_messages or chars + size > self.max_history_chars:
                break
            kept.append(item)
            chars += size
        kept.reverse()
        while kept and isinstance(kept[0], dict) and kept[0].get("role") == "assistant":
            kept.pop(0)
        return kept


def _check_unicode(text: object, what: str) -> None:
    if isinstance(text, str):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidInput(f"{what} is not valid Unicode text (it contains a lone surrogate).") from None


def _text(item: object) -> str:
    """A history message's text, however Gradio sent it (a string, or a list of parts)."""
    content = item.get("content", "") if isinstance(item, dict) else item
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return content if isinstance(content, str) else str(content)
