"""What every backend's label scorer shares, runtime-free: spellings, length groups, results.

A classify task is answered by scoring its labels' token sequences at the
answer position (``engine.backends.torch_scoring`` says how). The parts that
do not depend on the runtime live here, so the torch and llama.cpp scorers
tokenize labels, group texts and build results the same way.
"""

from __future__ import annotations

from typing import Callable, Sequence

from engine.backend import Scored
from engine.errors import ConfigError
from engine.heads import HeadState
from engine.prompts import RenderChat, split_classify_prompt
from engine.kinds.classify import ClassifyTask
from engine.types import ClassifyMode

__all__ = ["MAX_TOKENS_PER_FORWARD", "LabelPlan", "TaskScorers", "label_spellings", "length_groups", "scored_rows"]

MAX_TOKENS_PER_FORWARD = 1024  # suffix tokens (padding included, where the runtime pads) in one forward pass


def label_spellings(task: ClassifyTask, encode: Callable[[str], list[int]]) -> list[list[tuple[int, ...]]]:
    """Per label, the token ids of each of its spellings (the label, then its aliases); ``ConfigError``
    when a spelling is empty or two labels are spelt the same."""
    seen: dict[tuple[int, ...], str] = {}
    groups = []
    for label in task.labels:
        spellings: list[tuple[int, ...]] = []
        for spelling in (label, *task.aliases.get(label, ())):
            ids = tuple(encode(spelling))
            if not ids:
                raise ConfigError(f"Task {task.name!r}: the spelling {spelling!r} of {label!r} is empty.")
            if seen.get(ids, label) != label:
                raise ConfigError(f"Task {task.name!r}: labels {seen[ids]!r} and {label!r} are spelt "
                                  f"the same ({spelling!r}); give each label its own spellings.")
            seen[ids] = label
            if ids not in spellings:
                spellings.append(ids)
        groups.append(spellings)
    return groups


class LabelPlan:
    """A classify task as token ids, for any runtime's scorer: the prompt's fixed prefix, what goes
    before and after each input, and every label's spellings (the first token of each, and those
    with more tokens), with the task's per-label calibration."""

    def __init__(self, task: ClassifyTask, render: RenderChat, encode: Callable[[str], list[int]],
                 max_input_tokens: int) -> None:
        self.task = task
        self.max_input_tokens = max_input_tokens
        prefix, suffix_template = split_classify_prompt(task, render)
        before, after = suffix_template.split("{text}")
        self.prefix_ids = encode(prefix)
        self.before_ids, self.after_ids = encode(before), encode(after)
        self.spellings = label_spellings(task, encode)  # per label, the token ids of each spelling
        self.spelling_label = [i for i, spellings in enumerate(self.spellings) for _ in spellings]
        flat = [ids for spellings in self.spellings for ids in spellings]
        self.firsts = [ids[0] for ids in flat]
        self.continuations = [(k, ids) for k, ids in enumerate(flat) if len(ids) > 1]
        # The task's calibration (engine.tasks): a log-score offset per label, zero where none is set.
        self.label_bias = [task.label_bias.get(label, 0.0) for label in task.labels]

    def suffix_ids(self, text_ids: list[int]) -> tuple[list[int], bool]:
        """The tokens after the prefix for an input's ids (cut to ``max_input_tokens``), and whether cut."""
        truncated = len(text_ids) > self.max_input_tokens
        return self.before_ids + text_ids[: self.max_input_tokens] + self.after_ids, truncated


def length_groups(lengths: list[int], budget: int = MAX_TOKENS_PER_FORWARD) -> list[list[int]]:
    """Indices grouped shortest first so that rows x longest row <= budget (at least one row each)."""
    groups: list[list[int]] = []
    current: list[int] = []
    for i in sorted(range(len(lengths)), key=lengths.__getitem__):
        if current and (len(current) + 1) * lengths[i] > budget:
            groups.append(current)
            current = []
        current.append(i)
    if current:
        groups.append(current)
    return groups


def scored_rows(task: ClassifyTask, probabilities: list[list[float]], truncated: Sequence[bool],
                modes: Sequence[ClassifyMode]) -> list[Scored]:
    """One ``Scored`` per row of label probabilities: the arg-max label and every label's probability."""
    results = []
    for row, was_truncated, mode in zip(probabilities, truncated, modes, strict=True):
        best = max(range(len(row)), key=row.__getitem__)
        results.append(Scored(label=task.labels[best], confidence=row[best], scores=dict(zip(task.labels, row)),
                              truncated=was_truncated, mode=mode))
    return results


class TaskScorers:
    """A classifier's label scorer and head state per classify task, on either runtime: what ``head_states``,
    ``scorer`` and ``score`` answer from. ``prepare`` (the runtime's) builds both tables and swaps them whole."""

    def __init__(self) -> None:
        self._scorers: dict = {}  # task -> the runtime's label scorer (its ``score(texts, modes)``)
        self._heads: dict[str, HeadState] = {}

    def head_states(self) -> dict[str, HeadState]:
        return dict(self._heads)

    def scorer(self, task: str):
        """The task's label scorer (for fitting its head: ``ops.tools.heads``)."""
        return self._scorers[task]

    def score(self, task: str, texts: list[str], modes: Sequence[ClassifyMode]) -> list[Scored]:
        return self._scorers[task].score(texts, list(modes))
