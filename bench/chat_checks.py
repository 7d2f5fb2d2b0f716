"""How a reply to a row of ``bench/data/chat_questions.jsonl`` is scored, in one place.

``bench/chat_quality.py`` and ``bench/precision.py`` both call ``passes(row, reply)``, so they
cannot disagree. A row has ``q`` (the message), a ``category``, and as its check needs: ``a``
(accepted answers), ``history`` (earlier turns) and ``check`` (absent: ``contains``, any of ``a``
in the reply, case-blind); one check a category (``CATEGORIES``). ``validate`` names a bad row;
``longest_run`` and ``loops`` measure repetition. Pure: only the chat task's system prompt is read.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Callable, NamedTuple

__all__ = ["QUESTIONS", "CATEGORIES", "CHECKS", "Run", "passes", "validate", "load_questions", "language_of",
           "is_one_word", "leaks", "longest_run", "loops", "chat_system_prompt"]

QUESTIONS = Path(__file__).resolve().parent / "data" / "chat_questions.jsonl"

# Each category and the one check that scores it.
CATEGORIES = {"fact": "contains", "arithmetic": "contains", "follow_up": "contains",
              "one_word": "one_word", "language": "language", "system_prompt": "no_leak",
              "long": "language"}  # long: a story, a list, a letter, where a small model's loops show

MOSTLY = 0.6  # "a reply in Chinese": at least this share of its words are Han characters (English: Latin words)
ONE_WORD_MAX_CHARS = 24
ONE_WORD_MAX_HAN = 4  # a Chinese "word" (蓝色, 星期三); a whole sentence has no spaces either
LEAK_WORDS = 5  # a leak: this many consecutive words of the system prompt, anywhere in the reply
LOOP_TIMES = 4  # a loop: one unit said at least this many times back to back ("你好，你好，你好，你好，")...
LOOP_CHARS = 12  # ...over at least this many characters
MAX_UNIT_CHARS = 80  # the longest unit looked for: a sentence

_HAN = r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_LATIN_WORD = re.compile(r"[A-Za-z\u00c0-\u024f]+")  # pinyin's tone marks included
_HAN_CHAR = re.compile(f"[{_HAN}]")
# Words for leak matching: Latin letters and digits in runs, Han characters one by one.
_TOKEN = re.compile(f"[a-z0-9\u00c0-\u024f]+|[{_HAN}]")
# What may wrap a one-word answer: spaces, Markdown emphasis, quotes, end punctuation (ASCII and CJK).
_WRAPPING = " \t\r\n*_`~#>\"'“”‘’.,;:!?()[]。，、；：！？（）「」『』《》【】"
_ONE_WORD = re.compile(r"[^\W_]+(?:[-'’][^\W_]+)*")
_WORDY = re.compile(f"[A-Za-z0-9\u00c0-\u024f{_HAN}]")  # a unit that says something: not spaces or dashes


def language_of(text: str) -> str:
    """``zh`` when Han characters outnumber Latin words, else ``en``."""
    return "zh" if len(_HAN_CHAR.findall(text)) > len(_LATIN_WORD.findall(text)) else "en"


def script_share(text: str, language: str) -> float:
    """The share of ``text``'s words in ``language``'s script: Han characters count one each
    (about a word), Latin words one each; digits and punctuation do not count."""
    han, latin = len(_HAN_CHAR.findall(text)), len(_LATIN_WORD.findall(text))
    if han + latin == 0:
        return 0.0
    return (han if language == "zh" else latin) / (han + latin)


def is_one_word(reply: str) -> bool:
    """One word or one short token run ("Paris.", "**Jupiter**", "蓝色。"), not a sentence."""
    core = reply.strip(_WRAPPING)
    return (bool(_ONE_WORD.fullmatch(core)) and len(core) <= ONE_WORD_MAX_CHARS
            and len(_HAN_CHAR.findall(core)) <= ONE_WORD_MAX_HAN)


def leaks(reply: str, system_prompt: str) -> bool:
    """Whether ``reply`` repeats ``LEAK_WORDS`` consecutive words of ``system_prompt``
    (case, spacing and punctuation aside), or all of it when it is shorter."""
    prompt = _TOKEN.findall(system_prompt.lower())
    said = " " + " ".join(_TOKEN.findall(reply.lower())) + " "
    n = min(LEAK_WORDS, len(prompt))
    return n > 0 and any(f" {' '.join(prompt[i:i + n])} " in said for i in range(len(prompt) - n + 1))


class Run(NamedTuple):
    """A stretch of a reply that says one ``unit`` ``times`` times back to back, ``chars`` long."""

    unit: str = ""
    times: int = 0
    chars: int = 0


def longest_run(reply: str, min_times: int = 3) -> Run:
    """The reply's longest stretch of one unit (up to ``MAX_UNIT_CHARS``, with a letter, digit or
    Han character in it) said at least ``min_times`` times back to back; ``Run()`` when none."""
    best = Run()
    n = len(reply)
    for size in range(1, min(MAX_UNIT_CHARS, n // min_times) + 1):
        same = 0  # characters in a row equal to the one ``size`` before them
        for i in range(size, n):
            same = same + 1 if reply[i] == reply[i - size] else 0
            chars = same + size
            if chars > best.chars and chars >= min_times * size:
                unit = reply[i - chars + 1:i - chars + 1 + size]
                if _WORDY.search(unit):
                    best = Run(unit, chars // size, chars)
    return best


def loops(reply: str) -> bool:
    """Whether the reply went round in a loop: ``LOOP_TIMES`` repeats over ``LOOP_CHARS`` or more."""
    return longest_run(reply, LOOP_TIMES).chars >= LOOP_CHARS


@cache
def chat_system_prompt() -> str:
    """The ``chat`` task's system prompt as engine/tasks.toml defines it (a live app may have
    been changed at runtime through ``PUT /admin/tasks/chat``)."""
    from engine.tasks import load_tasks

    return load_tasks().get("chat").system_prompt


def _contains(row: dict, reply: str) -> bool:
    said = reply.lower()
    return any(a.lower() in said for a in row["a"])


def _one_word(row: dict, reply: str) -> bool:
    return is_one_word(reply) and _contains(row, reply)


def _language(row: dict, reply: str) -> bool:
    right = script_share(reply, language_of(row["q"])) >= MOSTLY
    return right and (_contains(row, reply) if row.get("a") else True)


def _no_leak(row: dict, reply: str, system_prompt: str | None = None) -> bool:
    return not leaks(reply, system_prompt if system_prompt is not None else chat_system_prompt())


CHECKS: dict[str, Callable[..., bool]] = {"contains": _contains, "one_word": _one_word,
                                          "language": _language, "no_leak": _no_leak}
_NEEDS_ANSWERS = {"contains", "one_word"}


def passes(row: dict, reply: str, system_prompt: str | None = None) -> bool:
    """Whether ``reply`` answers ``row`` (``system_prompt``: the one a ``no_leak`` row must not
    reveal; default, the chat task's)."""
    check = row.get("check", "contains")
    if check == "no_leak":
        return _no_leak(row, reply, system_prompt)
    return CHECKS[check](row, reply)


def validate(row: object) -> list[str]:
    """What is wrong with a question row (empty when nothing)."""
    if not isinstance(row, dict):
        return ["a row must be a JSON object"]
    problems = []
    if not isinstance(row.get("q"), str) or not row["q"].strip():
        problems.append("'q' must be a non-empty string")
    category, check = row.get("category"), row.get("check", "contains")
    if category not in CATEGORIES:
        problems.append(f"unknown category {category!r} (known: {', '.join(CATEGORIES)})")
    if check not in CHECKS:
        problems.append(f"unknown check {check!r} (known: {', '.join(CHECKS)})")
    elif category in CATEGORIES and CATEGORIES[category] != check:
        problems.append(f"a {category} row is checked by {CATEGORIES[category]!r}, not {check!r}")
    answers = row.get("a")
    if answers is not None and (not isinstance(answers, list)
                                or not all(isinstance(a, str) and a.strip() for a in answers)):
        problems.append("'a' must be a list of non-empty strings")
    elif check in _NEEDS_ANSWERS and not answers:
        problems.append(f"a {check!r} row needs answers in 'a'")
    history = row.get("history")
    if history is not None:
        roles = [turn.get("role") if isinstance(turn, dict) else None for turn in history] \
            if isinstance(history, list) else None
        if (not roles or roles != ["user", "assistant"] * (len(roles) // 2) or len(roles) % 2
                or not all(isinstance(t.get("content"), str) and t["content"].strip() for t in history)):
            problems.append("'history' must be user/assistant turns in pairs, each with non-empty 'content'")
    elif category == "follow_up":
        problems.append("a follow_up row needs a 'history'")
    return problems


def load_questions(path: Path = QUESTIONS) -> list[dict]:
    """Every row of the question file, in order; ``ValueError`` naming the first bad line."""
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        problems = validate(row)
        if problems:
            raise ValueError(f"{path.name} line {number}: {'; '.join(problems)}")
        rows.append(row)
    return rows
