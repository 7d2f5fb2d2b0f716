"""Prompt building and output parsing: pure functions, tested without a model.

Everything here takes the tokenizer's pieces as plain callables (render a chat
template, count tokens), so the same code runs on the real tokenizer and in
unit tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from engine.kinds.classify import ClassifyTask

__all__ = [
    "Message",
    "RenderChat",
    "classify_messages",
    "split_classify_prompt",
    "validate_history",
    "fit_conversation",
    "FittedConversation",
    "safe_stream_text",
]

Message = dict[str, str]
# (messages, add_generation_prompt) -> prompt text, i.e. the chat template.
RenderChat = Callable[[list[Message], bool], str]

_SENTINEL = "\u2063<<ALLINONE-INPUT>>\u2063"


def classify_messages(task: ClassifyTask, text: str) -> list[Message]:
    """The chat for one classification: instruction, few-shot turns, the input."""
    system = task.instruction.replace("{labels}", ", ".join(task.labels))
    messages: list[Message] = [{"role": "system", "content": system}]
    for example in task.examples:
        messages.append({"role": "user", "content": task.input_template.replace("{text}", example.text)})
        messages.append({"role": "assistant", "content": example.label})
    messages.append({"role": "user", "content": task.input_template.replace("{text}", text)})
    return messages


def split_classify_prompt(task: ClassifyTask, render: RenderChat) -> tuple[str, str]:
    """Split the rendered prompt into a fixed prefix and a suffix template.

    The prefix (instruction and few-shot turns) is the same for every request,
    so its KV cache is computed once. The suffix holds ``{text}`` where the
    input goes and ends at the answer position, where the labels are scored.
    The input is placed after the prefix as data; nothing in it can change
    which labels are scored.
    """
    rendered = render(classify_messages(task, _SENTINEL), True)
    if rendered.count(_SENTINEL) != 1:
        raise ValueError("the chat template must place the user text exactly once")
    prefix, after = rendered.split(_SENTINEL)
    return prefix, "{text}" + after


def validate_history(history: object) -> list[Message]:
    """Accept a list of ``{"role", "content"}`` dicts (or ``None``); raise ``ValueError`` otherwise."""
    if history is None:
        return []
    if not isinstance(history, (list, tuple)):
        raise ValueError("history must be a list of {role, content} messages")
    clean: list[Message] = []
    for i, item in enumerate(history):
        if not isinstance(item, dict) or item.get("role") not in ("user", "assistant"):
            raise ValueError(f"history[{i}] must be a dict with role 'user' or 'assistant'")
        content = item.get("content")
        if isinstance(content, list):  # Gradio may send content as parts
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        if not isinstance(content, str):
            raise ValueError(f"history[{i}].content must be text")
        clean.append({"role": item["role"], "content": content})
    return clean


@dataclass(frozen=True)
class FittedConversation:
    messages: list[Message]
    dropped_messages: int
    truncated: bool


def fit_conversation(
    system_prompt: str,
    history: Sequence[Message],
    message: str,
    budget_tokens: int,
    count_tokens: Callable[[list[Message]], int],
    truncate_text: Callable[[str, int], str],
    message_tokens: Callable[[Message], int],
) -> FittedConversation:
    """Fit a chat into ``budget_tokens`` by dropping the oldest turns, never by failing.

    The system prompt and the new message always stay. Older messages go first,
    oldest first. If the new message alone is still too long, its beginning is
    kept (``truncate_text(text, max_tokens)``) and ``truncated`` says so.

    Linear in the history: ``message_tokens`` (one message's share of the
    rendered prompt) is asked once per message, and the whole conversation is
    rendered and counted (``count_tokens``) a few times, not once per dropped
    turn; an estimate that proves short is corrected by counting again.
    """
    system = [{"role": "system", "content": system_prompt}]
    turns = list(history)
    new = {"role": "user", "content": message}
    dropped = 0
    total = count_tokens(system + turns + [new])
    if total > budget_tokens and turns:
        sizes = [message_tokens(m) for m in turns]
        while turns and total > budget_tokens:
            total -= sizes[dropped]
            turns.pop(0)
            dropped += 1
            if total <= budget_tokens or not turns:
                total = count_tokens(system + turns + [new])  # the estimate, checked
    # A conversation should not start with an orphan assistant reply.
    while turns and turns[0]["role"] == "assistant":
        turns.pop(0)
        dropped += 1
    truncated = False
    if count_tokens(system + turns + [new]) > budget_tokens:
        overhead = count_tokens(system + [{"role": "user", "content": ""}])
        room = max(budget_tokens - overhead, 1)
        new = {"role": "user", "content": truncate_text(message, room)}
        truncated = True
    return FittedConversation(system + turns + [new], dropped, truncated)


def safe_stream_text(text: str) -> str:
    """Hold back a trailing partial UTF-8 character (a byte-level token can end mid-character)."""
    return text[:-1] if text.endswith("\ufffd") else text
