"""The llamacpp backend's classification: label scoring on a cached prompt prefix, in numpy.

The rule is the torch scorer's (docs/internals.md, "Classification"). The prefix lives in a
sequence id the scorer keeps; a batch shares it per text (``LlamaRuntime.share``) and evaluates the
suffixes in one ``llama_decode``, dropping the scratch sequences after. Heads are applied here too, in
numpy: on layer k from the early-exit context (``llamacpp_layers``), v1 on this pass's features.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from engine.backend import Scored
from engine.backends.llamacpp_layers import LayerTap, TapPrefix
from engine.backends.llamacpp_runtime import BatchEntry, LlamaRuntime, SequenceIds
from engine.errors import ConfigError, InvalidOutput
from engine.heads import HeadFile
from engine.label_scoring import MAX_TOKENS_PER_FORWARD, LabelPlan, length_groups, scored_rows
from engine.prompts import RenderChat
from engine.kinds.classify import ClassifyTask
from engine.types import ClassifyMode

__all__ = ["GgufLabelScorer", "NumpyHead", "SCORE_ROWS", "TASK_PREFIXES"]

SCORE_ROWS = 32  # texts scored in one decode (each takes a sequence id and, at its answer position, an output)
TASK_PREFIXES = 24  # classify tasks whose prompt prefixes the context keeps (a sequence id each)


def _log_softmax(rows: np.ndarray) -> np.ndarray:
    shifted = rows - rows.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _logsumexp(values: np.ndarray) -> np.ndarray:
    top = values.max(axis=-1, keepdims=True)
    return (top + np.log(np.exp(values - top).sum(axis=-1, keepdims=True)))[..., 0]


class NumpyHead:
    """A fitted linear head (``engine.heads.HeadFile``) applied to a batch's features."""

    def __init__(self, head: HeadFile) -> None:
        self.weight = np.asarray(head.weight, dtype=np.float64)
        self.bias = np.asarray(head.bias, dtype=np.float64)
        self.layer = head.layer

    def log_probs(self, hidden: np.ndarray, label_logprobs: np.ndarray | None = None) -> np.ndarray:
        """Label log-probabilities from the hidden states the head reads (plus the label scores for a
        last-layer head)."""
        features = hidden if self.layer is not None else np.concatenate([hidden, label_logprobs], axis=-1)
        return _log_softmax(features.astype(np.float64) @ self.weight.T + self.bias)


class GgufLabelScorer:
    """Scores one classify task's labels on a ``LlamaRuntime``; the model thread's only."""

    def __init__(self, runtime: LlamaRuntime, sequences: SequenceIds, task: ClassifyTask, render: RenderChat,
                 max_input_tokens: int, early_exit: Callable[[], LayerTap]) -> None:
        self.runtime = runtime
        self._early_exit = early_exit  # the backend's early-exit context, made on first use
        self.task = task
        self.max_input_tokens = max_input_tokens
        self._sequences = sequences
        self._plan = plan = LabelPlan(task, render, runtime.vocab.tokenize, max_input_tokens)
        self._spellings, self._spelling_label = plan.spellings, np.array(plan.spelling_label)
        self._firsts, self._continuations = np.array(plan.firsts), plan.continuations
        self._label_bias = np.array(plan.label_bias)
        self.head: NumpyHead | None = None  # set by ``attach_head`` when a head fitted for this model is found
        self._exit: TapPrefix | None = None  # the prefix on the early-exit context, for layer heads
        prefix_ids = plan.prefix_ids
        self.prefix_len = len(prefix_ids)
        self._prefix_sequence = sequences.take()
        try:
            runtime.evaluate([BatchEntry(t, i, self._prefix_sequence) for i, t in enumerate(prefix_ids)])
        except BaseException:
            self.close()
            raise

    def attach_head(self, head: HeadFile | None) -> None:
        """Answer ``head`` mode with ``head``; a head on a layer has the task's prefix put on the
        early-exit context now, not at the first request."""
        self.head = None if head is None else NumpyHead(head)
        if head is not None and head.layer is not None:
            self._exit_prefix()

    def _exit_prefix(self) -> TapPrefix:
        if self._exit is None:
            state = self.runtime.sequence_state(self._prefix_sequence)
            self._exit = TapPrefix(self._early_exit(), self.prefix_len, state)
        return self._exit

    def close(self) -> None:
        """Free the prefix's cells and its sequence id (when the task is dropped or changed)."""
        if self._exit is not None:
            self._exit.close()
            self._exit = None
        if self._prefix_sequence is not None:
            self.runtime.drop(self._prefix_sequence)
            self._sequences.give(self._prefix_sequence)
            self._prefix_sequence = None

    def _suffix_ids(self, text: str) -> tuple[list[int], bool]:
        return self._plan.suffix_ids(self.runtime.vocab.tokenize(text, special=False))  # the input is data

    def features(self, texts: list[str], with_hidden: bool = True) -> tuple[np.ndarray, np.ndarray, list[bool]]:
        """Per text: the hidden state at the answer position [n, hidden] (zeros unless ``with_hidden``),
        the label log-probabilities [n, labels], and whether the input was truncated. Texts run in
        groups of at most ``MAX_TOKENS_PER_FORWARD`` tokens (``engine.label_scoring``) and at most
        ``SCORE_ROWS`` texts."""
        encoded = [self._suffix_ids(t) for t in texts]
        hidden = np.zeros((len(texts), self.runtime.hidden_size), dtype=np.float32)
        logprobs = np.empty((len(texts), len(self.task.labels)))
        # No padding here, so a group's cost is its tokens; grouping by count x longest, as the torch
        # scorer does, bounds their sum too.
        for group in length_groups([len(ids) for ids, _ in encoded], MAX_TOKENS_PER_FORWARD):
            for start in range(0, len(group), SCORE_ROWS):
                rows = group[start : start + SCORE_ROWS]
                hidden[rows], logprobs[rows] = self._forward([encoded[i][0] for i in rows], with_hidden)
        return hidden, logprobs, [t for _, t in encoded]

    def layer_features(self, texts: list[str], layers: list[int]) -> dict[int, np.ndarray]:
        """Per layer of ``layers`` (each 1 .. layers-1), the hidden state after that many blocks at each
        text's answer position [n, hidden], from the early-exit context."""
        prefix = self._exit_prefix()
        encoded = [self._suffix_ids(t)[0] for t in texts]
        found = {k: np.zeros((len(texts), self.runtime.hidden_size), dtype=np.float32) for k in layers}
        for group in length_groups([len(ids) for ids in encoded], MAX_TOKENS_PER_FORWARD):
            for start in range(0, len(group), SCORE_ROWS):
                rows = group[start : start + SCORE_ROWS]
                for k, values in prefix.hidden([encoded[i] for i in rows], layers).items():
                    found[k][rows] = values
        return found

    def all_features(self, texts: list[str], layers: list[int]
                     ) -> tuple[np.ndarray, np.ndarray, list[bool], dict[int, np.ndarray]]:
        """``features`` and ``layer_features`` of ``texts`` (a fit reads both; two contexts, two passes)."""
        return (*self.features(texts), self.layer_features(texts, layers) if layers else {})

    def _forward(self, rows: list[list[int]], with_hidden: bool) -> tuple[np.ndarray, np.ndarray]:
        runtime = self.runtime
        sequences: list[int] = []
        try:
            body, answers = [], []  # every suffix token but the last; the last (the answer position) of each
            for ids in rows:
                sequence = self._sequences.take()
                sequences.append(sequence)
                runtime.share(self._prefix_sequence, sequence)
                body += [BatchEntry(t, self.prefix_len + i, sequence) for i, t in enumerate(ids[:-1])]
                answers.append(BatchEntry(ids[-1], self.prefix_len + len(ids) - 1, sequence, True))
            if with_hidden:
                # The answer positions on their own: with hidden states on, every token of a batch is an
                # output (its logits computed over the whole vocabulary), so the body goes first without.
                runtime.evaluate(body)
                outputs = runtime.decode(answers, with_hidden=True)
                hidden = np.stack([runtime.hidden(i) for i in outputs])
                logits = [runtime.logits(i) for i in outputs]
            else:
                hidden = np.zeros((len(rows), runtime.hidden_size), dtype=np.float32)
                logits = runtime.evaluate(body + answers)
            scores = np.stack([row[self._firsts] for row in logits]).astype(np.float64)
            if self._continuations:
                scores += self._continuation_logprobs(rows, sequences)
        finally:
            for sequence in sequences:
                runtime.drop(sequence)
                self._sequences.give(sequence)
        if not np.isfinite(scores).all() or not np.isfinite(hidden).all():
            raise InvalidOutput()
        per_label = np.stack([_logsumexp(scores[:, self._spelling_label == i]) for i in range(len(self._spellings))],
                             axis=-1)
        return hidden, _log_softmax(per_label + self._label_bias)

    def _continuation_logprobs(self, rows: list[list[int]], sequences: list[int]) -> np.ndarray:
        """log p(t2..tn | suffix, t1) of every multi-token spelling: each spelling in turn is evaluated
        after every text, on the text's own sequence, and taken off it again."""
        extra = np.zeros((len(rows), len(self._firsts)))
        for k, spelling in self._continuations:
            entries = []
            for ids, sequence in zip(rows, sequences):
                position = self.prefix_len + len(ids)
                entries += [BatchEntry(token, position + j, sequence, True) for j, token in enumerate(spelling[:-1])]
            logits = iter(self.runtime.evaluate(entries))
            for r, (ids, sequence) in enumerate(zip(rows, sequences)):
                for target in spelling[1:]:
                    extra[r, k] += _log_softmax(next(logits).astype(np.float64))[target]
                self.runtime.drop(sequence, self.prefix_len + len(ids))
        return extra

    def score(self, texts: list[str], modes: list[ClassifyMode]) -> list[Scored]:
        by_head = np.array([mode is ClassifyMode.HEAD for mode in modes], dtype=bool)
        if by_head.any() and self.head is None:
            raise ConfigError(f"Task {self.task.name!r} has no head on this model.")  # admission prevents it
        if by_head.any() and self.head.layer is not None:  # early exit: the full pass only for prompt rows
            logprobs = np.empty((len(texts), len(self.task.labels)))
            truncated = [self._suffix_ids(t)[1] for t in texts]
            heads = [t for t, h in zip(texts, by_head) if h]
            logprobs[by_head] = self.head.log_probs(self.layer_features(heads, [self.head.layer])[self.head.layer])
            if not by_head.all():
                prompts = [t for t, h in zip(texts, by_head) if not h]
                logprobs[~by_head] = self.features(prompts, with_hidden=False)[1]
        else:
            hidden, logprobs, truncated = self.features(texts, with_hidden=bool(by_head.any()))
            if by_head.any():
                logprobs[by_head] = self.head.log_probs(hidden[by_head], logprobs[by_head])
        if not np.isfinite(logprobs).all():
            raise InvalidOutput()
        return scored_rows(self.task, np.exp(logprobs).tolist(), truncated, modes)
