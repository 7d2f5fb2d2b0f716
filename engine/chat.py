"""One chat request being answered, on the scheduler's side of the backend seam.

A ``ChatStream`` holds a chat's limits and deadline, its tokens and published text, and the backend's
opaque sequence. ``choose`` asks the backend for the next token (``engine.sampling``), decides whether
the answer has finished (stop token, length, time limit or a loop) and publishes the new text. No torch.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field

from typing import TYPE_CHECKING

from engine.prompts import safe_stream_text
from engine.sampling import DEFAULT_GUARD, RepeatWatch, RepetitionGuard
from engine.types import FINISH_LENGTH, FINISH_STOP, FINISH_TIME_LIMIT

if TYPE_CHECKING:
    from engine.backend import Backend

__all__ = ["ChatStream", "ChatUpdate"]


@dataclass(frozen=True)
class ChatUpdate:
    """One step of a streamed answer (the ``generate`` kind's result): the whole text so far, and what is new."""

    text: str
    delta: str
    done: bool = False
    finish_reason: str | None = None
    notices: tuple[str, ...] = ()
    tokens: int = 0  # generated so far
    prompt_tokens: int = 0  # the fitted prompt's (system prompt, history and message, as rendered)


@dataclass(eq=False)
class ChatStream:
    """One chat request being decoded. The engine's thread writes, the caller reads ``updates``."""

    prompt_ids: list[int]
    max_new_tokens: int
    temperature: float
    deadline: float
    notices: tuple[str, ...]
    seed: int = 0
    updates: queue.Queue = field(default_factory=queue.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    generated: list[int] = field(default_factory=list)
    text: str = ""
    sequence: object = None  # the backend's, from ``start`` until ``release``
    repetition: RepetitionGuard = DEFAULT_GUARD
    watch: RepeatWatch = field(init=False)

    def __post_init__(self) -> None:
        self.watch = RepeatWatch(self.repetition)

    def start(self, backend: Backend) -> None:
        """Take a sequence for the prompt; ``prefill`` feeds the prompt in."""
        self.sequence = backend.decoder.begin(self.prompt_ids, self.temperature, self.seed)

    def prefill(self, backend: Backend, max_tokens: int) -> bool:
        """Up to ``max_tokens`` more of the prompt; True once all of it is in (the chat then decodes)."""
        return backend.decoder.prefill(self.sequence, max_tokens)

    def choose(self, backend: Backend) -> int | None:
        """Pick the next token and publish the new text. Returns the token to feed back, or
        None when the answer is finished (stop token, length, time limit, or a loop the guard ends)."""
        token = backend.decoder.next_token(self.sequence, self.watch.bias())
        finish = None
        if token in backend.text.stop_ids:
            finish = FINISH_STOP
        else:
            self.generated.append(token)
            looping = self.watch.add(token)
            if len(self.generated) >= self.max_new_tokens:
                finish = FINISH_LENGTH
            elif time.monotonic() >= self.deadline:
                finish = FINISH_TIME_LIMIT
            elif looping:
                finish = FINISH_STOP  # the answer went round in a loop: it has said what it will say
        text = backend.text.decode(self.generated)
        if finish is None:
            text = safe_stream_text(text)
        delta, self.text = text[len(self.text):], text
        self.publish(ChatUpdate(text, delta, finish is not None, finish, self.notices, len(self.generated),
                                len(self.prompt_ids)))
        return None if finish is not None else token

    def publish(self, update: ChatUpdate | BaseException) -> None:
        self.updates.put(update)

    def release(self, backend: Backend) -> None:
        """Free the cache as soon as the stream ends, not when the caller lets go."""
        if self.sequence is not None:
            backend.decoder.release(self.sequence)
            self.sequence = None
