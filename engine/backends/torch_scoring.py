"""Classification by label scoring: one forward pass, no text generation.

For a classify task the prompt is split into a fixed prefix (instruction and
few-shot turns, see ``engine.prompts.split_classify_prompt``) and a per-request
suffix (the input and the answer cue). The prefix's KV cache is computed once
when the scorer is built; each batch reuses it, runs the model body on the
suffixes only (right-padded: under the causal mask a real token never sees the
padding after it) and applies the output layer to one hidden state per row and
only to the label tokens, not the 150k-word vocabulary.

Each label is scored by the log-sum-exp of its first tokens (the label and its
aliases, e.g. ``positive``/``Positive``); the answer is the arg-max of a
softmax over labels. It is always one of the labels and deterministic; the
input text can change the scores but not the set of possible answers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.errors import ConfigError, InvalidOutput
from engine.prompts import RenderChat, split_classify_prompt
from engine.tasks import ClassifyTask

__all__ = ["LabelScorer", "Scored"]

MAX_TOKENS_PER_FORWARD = 1024  # padded suffix tokens in one forward pass


def _length_groups(lengths: list[int], budget: int = MAX_TOKENS_PER_FORWARD) -> list[list[int]]:
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


@dataclass(frozen=True)
class Scored:
    label: str
    confidence: float
    scores: dict[str, float]
    truncated: bool


class LabelScorer:
    """Scores the labels of one classify task on one loaded model. Not thread-safe:
    only the engine's worker calls it (see ``engine.engine``)."""

    def __init__(self, model, tokenizer, task: ClassifyTask, render: RenderChat, max_input_tokens: int) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.task = task
        self.max_input_tokens = max_input_tokens
        prefix, suffix_template = split_classify_prompt(task, render)
        before, after = suffix_template.split("{text}")
        self._before_ids = self._encode(before)
        self._after_ids = self._encode(after)
        self._pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self._label_token_ids = self._label_tokens()
        flat = [tid for ids in self._label_token_ids for tid in ids]
        head = model.get_output_embeddings()
        self._head_rows = head.weight[flat].detach().to(torch.float32)
        self._head_bias = None if getattr(head, "bias", None) is None else head.bias[flat].detach().float()
        self._groups = [len(ids) for ids in self._label_token_ids]
        with torch.inference_mode():
            prefix_ids = torch.tensor([self._encode(prefix)], dtype=torch.long)
            out = model.base_model(input_ids=prefix_ids, use_cache=True)
        self.prefix_len = prefix_ids.shape[1]
        self._prefix_kv = [(layer.keys, layer.values) for layer in out.cache.layers]

    def _encode(self, text: str) -> list[int]:
        # The Rust tokenizer itself, as the engine's admission uses it from another thread: the
        # Python wrapper may change the tokenizer's settings on a call, which two threads must not do.
        return self.tokenizer.backend_tokenizer.encode(text, add_special_tokens=False).ids

    def _label_tokens(self) -> list[list[int]]:
        seen: dict[int, str] = {}
        groups = []
        for label in self.task.labels:
            ids = []
            for spelling in (label, *self.task.aliases.get(label, ())):
                first = self._encode(spelling)[0]
                if seen.get(first, label) != label:
                    raise ConfigError(
                        f"Task {self.task.name!r}: labels {seen[first]!r} and {label!r} start with the same token; "
                        "choose labels that differ in their first word."
                    )
                seen[first] = label
                if first not in ids:
                    ids.append(first)
            groups.append(ids)
        return groups

    def _suffix_ids(self, text: str) -> tuple[list[int], bool]:
        text_ids = self._encode(text)
        truncated = len(text_ids) > self.max_input_tokens
        if truncated:
            text_ids = text_ids[: self.max_input_tokens]
        return self._before_ids + text_ids + self._after_ids, truncated

    def _prefix_cache(self, batch: int):
        from transformers import DynamicCache

        data = [(k.expand(batch, -1, -1, -1), v.expand(batch, -1, -1, -1)) for k, v in self._prefix_kv]
        return DynamicCache(ddp_cache_data=data, config=self.model.config)

    @torch.inference_mode()
    def label_logprobs(self, texts: list[str]) -> tuple[torch.Tensor, list[bool]]:
        """Log-probabilities over labels, shape (len(texts), len(labels)).

        Rows are sorted by length and run in groups of at most
        ``MAX_TOKENS_PER_FORWARD`` padded tokens, so one long review does not
        make fifteen short ones pay for its padding.
        """
        encoded = [self._suffix_ids(t) for t in texts]
        out = torch.empty(len(texts), len(self.task.labels))
        for group in _length_groups([len(ids) for ids, _ in encoded]):
            out[group] = self._forward([encoded[i][0] for i in group])
        return out, [t for _, t in encoded]

    def _forward(self, rows: list[list[int]]) -> torch.Tensor:
        lengths = [len(ids) for ids in rows]
        width = max(lengths)
        input_ids = torch.tensor([ids + [self._pad_id] * (width - len(ids)) for ids in rows], dtype=torch.long)
        hidden = self.model.base_model(
            input_ids=input_ids, cache=self._prefix_cache(len(rows)), use_cache=True
        ).last_hidden_state
        last = hidden[torch.arange(len(rows)), torch.tensor(lengths) - 1].to(torch.float32)
        logits = last @ self._head_rows.T
        if self._head_bias is not None:
            logits = logits + self._head_bias
        if not torch.isfinite(logits).all():
            raise InvalidOutput()
        per_label = torch.stack([chunk.logsumexp(dim=-1) for chunk in logits.split(self._groups, dim=-1)], dim=-1)
        return per_label.log_softmax(dim=-1)

    def score(self, texts: list[str]) -> list[Scored]:
        logprobs, truncated = self.label_logprobs(texts)
        probs = logprobs.exp().tolist()
        results = []
        for row, was_truncated in zip(probs, truncated):
            best = max(range(len(row)), key=row.__getitem__)
            results.append(
                Scored(
                    label=self.task.labels[best],
                    confidence=row[best],
                    scores=dict(zip(self.task.labels, row)),
                    truncated=was_truncated,
                )
            )
        return results
