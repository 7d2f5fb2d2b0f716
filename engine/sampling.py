"""How a chat's next token is chosen, the same on every backend, and the repetition guard.

A backend hands ``choose_token`` its row of next-token logits (numpy): greedy at
temperature 0, else a draw with the chat's own seeded generator, after the
guard's bans. The guard (``RepetitionGuard``, per request) watches the tokens a
chat generated (``RepeatWatch``, a few dozen comparisons a token, no model work)
and ends an answer whose tail loops, or bans the token that would go on with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Mapping

import numpy as np

__all__ = ["BREAK_GUARD", "DEFAULT_GUARD", "GUARDS", "MAX_BREAKS", "MAX_PERIOD", "NO_GUARD", "GuardAction",
           "RepeatWatch", "RepetitionGuard", "choose_token", "named_guard", "sampling_rng"]

MAX_PERIOD = 64  # the longest repeated unit (in tokens) the guard looks for: a sentence or two
MAX_BREAKS = 3  # BREAK: loops broken in one answer before the next one ends it
BANNED = float("-inf")


class GuardAction(str, Enum):
    """What the guard does once the answer's tail is a loop."""

    STOP = "stop"  # end the answer there (finish reason ``stop``)
    BREAK = "break"  # ban the token that would go on with the loop; the ``MAX_BREAKS``+1-th loop ends it


@dataclass(frozen=True)
class RepetitionGuard:
    """A loop is the answer's last ``loop_tokens`` or more tokens being one unit of at most
    ``MAX_PERIOD`` tokens, repeated at least ``loop_repeats`` times in a row ("你好，" eight
    times is 16 tokens; a 10-token sentence, four times). A unit that closes ("[0, 0],"
    three times, then "[0, 0]]") never completes its last repeat, so a short list of
    equal rows is no loop. ``no_repeat_ngram`` (0: off) also bans any token that would
    repeat an n-gram of the answer. Only the answer's own tokens count, not the prompt's."""

    loop_tokens: int = 16  # 0: no loop watch
    loop_repeats: int = 4
    action: GuardAction = GuardAction.STOP
    no_repeat_ngram: int = 0

    def __post_init__(self) -> None:
        if self.loop_tokens < 0 or self.loop_repeats < 2 or self.no_repeat_ngram not in (0, *range(2, 65)):
            raise ValueError(f"not a repetition guard: {self}")

    @property
    def active(self) -> bool:
        return bool(self.loop_tokens or self.no_repeat_ngram)


NO_GUARD = RepetitionGuard(loop_tokens=0)
# What a chat gets when its request does not say: stop, which ended every runaway loop the chat benchmark
# saw and changed no other reply, on either backend (docs/benchmarks.md, "The repetition guard").
DEFAULT_GUARD = RepetitionGuard()
BREAK_GUARD = RepetitionGuard(action=GuardAction.BREAK)
# The guards an operator names (``--repetition-guard``, ``EngineConfig.repetition_guard``).
GUARDS = {"stop": DEFAULT_GUARD, "break": BREAK_GUARD, "off": NO_GUARD}


def named_guard(name: str) -> RepetitionGuard:
    """The guard ``GUARDS`` names; ``ValueError`` lists the names."""
    try:
        return GUARDS[name]
    except (KeyError, TypeError):
        raise ValueError(f"Unknown repetition guard {name!r}; use one of: {', '.join(GUARDS)}.") from None


class RepeatWatch:
    """One answer's tokens as the guard sees them: ``add`` each generated token (True: end the
    answer here), ``bias`` before choosing the next (the bans, as logit offsets)."""

    def __init__(self, guard: RepetitionGuard) -> None:
        self.guard = guard
        self.tokens: list[int] = []
        # _runs[p]: how many of the last tokens each equal the token p places before them, so the
        # answer's last _runs[p] + p tokens repeat a unit of p tokens.
        self._runs = [0] * (MAX_PERIOD + 1)
        self._followers: dict[tuple[int, ...], set[int]] = {}  # (n-1)-gram -> the tokens seen after it
        self._ban: int | None = None  # BREAK: the token that would go on with the loop just found
        self.breaks = 0

    def add(self, token: int) -> bool:
        tokens = self.tokens
        tokens.append(token)
        if not self.guard.active:
            return False
        n = len(tokens)
        for p in range(1, min(MAX_PERIOD, n - 1) + 1):
            self._runs[p] = self._runs[p] + 1 if tokens[-1 - p] == token else 0
        k = self.guard.no_repeat_ngram
        if k and n >= k:
            self._followers.setdefault(tuple(tokens[n - k:n - 1]), set()).add(token)
        period = self.loop_period()
        self._ban = None
        if not period:
            return False
        if self.guard.action is GuardAction.STOP or self.breaks >= MAX_BREAKS:
            return True
        self.breaks += 1
        self._ban = tokens[-period]
        return False

    def loop_period(self) -> int:
        """The shortest unit (in tokens) whose repetition makes the answer's tail a loop; 0: none."""
        guard = self.guard
        if not guard.loop_tokens:
            return 0
        for p in range(1, min(MAX_PERIOD, len(self.tokens) // guard.loop_repeats) + 1):
            span = self._runs[p] + p
            if span >= guard.loop_tokens and span >= guard.loop_repeats * p:
                return p
        return 0

    def bias(self) -> dict[int, float]:
        """Logit offsets for the next token: the loop's next token (BREAK), the n-grams' (empty: none)."""
        banned: set[int] = set()
        k = self.guard.no_repeat_ngram
        if k and len(self.tokens) >= k - 1:
            banned |= self._followers.get(tuple(self.tokens[len(self.tokens) - k + 1:]), set())
        if self._ban is not None:
            banned.add(self._ban)
        return dict.fromkeys(banned, BANNED)


def sampling_rng(temperature: float, seed: int) -> np.random.Generator | None:
    """A chat's own generator: sampled chats draw from it, greedy ones need none."""
    return np.random.default_rng(seed) if temperature > 0 else None


def choose_token(logits: np.ndarray, temperature: float, rng: np.random.Generator | None,
                 bias: Mapping[int, float] | None = None) -> int:
    """The next token from one row of logits: ``bias`` added (the guard's bans), then the
    argmax at temperature 0, else a draw from softmax(logits / temperature)."""
    if bias:
        logits = logits.astype(np.float32, copy=True)
        logits[list(bias)] += np.fromiter(bias.values(), dtype=np.float32, count=len(bias))
    if temperature <= 0.0 or rng is None:
        return int(np.argmax(logits))
    scaled = (logits.astype(np.float64) - logits.max()) / temperature
    probs = np.exp(scaled)
    return int(rng.choice(len(probs), p=probs / probs.sum()))
