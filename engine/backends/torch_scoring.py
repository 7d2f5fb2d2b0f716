"""The torch backend's classification by label scoring: one forward pass, no text generation.

The prompt's fixed prefix is cached once per scorer; each batch runs the suffixes (right-padded) and
scores every label by its whole token sequence at the answer position, so the answer is always one of
the labels. A task's head answers in ``head`` mode, stopping at its layer (a forward hook: early exit).
The rule in full: docs/internals.md, "Classification".
"""

from __future__ import annotations

import contextlib
import copy

import torch

from engine.backend import Scored
from engine.backends.torch_head import LinearHead
from engine.errors import ConfigError, InvalidOutput
from engine.label_scoring import LabelPlan, length_groups, scored_rows
from engine.prompts import RenderChat
from engine.kinds.classify import ClassifyTask
from engine.types import ClassifyMode

__all__ = ["LabelScorer"]


class _Exit(Exception):
    """Raised by the hook on the deepest block a pass needs: nothing after it runs."""


def _output_rows(head, rows: list[int]) -> torch.Tensor:
    """fp32 rows of the output layer, whatever its weights' format: an int8 layer tied to the embedding
    table keeps the table as its ``weight`` (exact); an untied one gives its rows dequantized."""
    weight = getattr(head, "weight", None)
    if not isinstance(weight, torch.Tensor):
        return head.dequantized_rows(rows)  # engine.int8.Int8Linear
    return weight[rows].detach().to(torch.float32)


class LabelScorer:
    """Scores the labels of one classify task on one loaded model. Not thread-safe:
    only the engine's worker calls it (see ``engine.engine``)."""

    def __init__(self, model, tokenizer, task: ClassifyTask, render: RenderChat, max_input_tokens: int) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.task = task
        self.max_input_tokens = max_input_tokens
        # The text to classify is data: a special token written in it ("<|im_end|>") is read as plain text,
        # as the llamacpp scorer reads it, so it cannot close its turn of the prompt. A copy of the
        # tokenizer with that setting, for the prompt itself needs its special tokens.
        self._data_tokenizer = copy.deepcopy(tokenizer.backend_tokenizer)
        self._data_tokenizer.encode_special_tokens = True
        self._plan = plan = LabelPlan(task, render, self._encode, max_input_tokens)
        self._pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self._spellings, self._spelling_label = plan.spellings, plan.spelling_label
        self._firsts, self._continuations = plan.firsts, plan.continuations
        self._head = model.get_output_embeddings()
        self._label_bias = torch.tensor(plan.label_bias)
        # fp32 first-token rows whatever the weights' format
        self._head_rows = _output_rows(self._head, self._firsts)
        bias = getattr(self._head, "bias", None)
        self._head_bias = None if bias is None else bias[self._firsts].detach().float()
        with torch.inference_mode():
            prefix_ids = torch.tensor([plan.prefix_ids], dtype=torch.long)
            out = model.base_model(input_ids=prefix_ids, use_cache=True)
        self.prefix_len = prefix_ids.shape[1]
        self._prefix_kv = [(layer.keys, layer.values) for layer in out.cache.layers]
        self.head: LinearHead | None = None  # set by the backend when a head fitted for this model is found

    def _encode(self, text: str) -> list[int]:
        # The Rust tokenizer itself, as the engine's admission uses it from another thread: the
        # Python wrapper may change the tokenizer's settings on a call, which two threads must not do.
        return self.tokenizer.backend_tokenizer.encode(text, add_special_tokens=False).ids

    def _suffix_ids(self, text: str) -> tuple[list[int], bool]:
        return self._plan.suffix_ids(self._data_tokenizer.encode(text, add_special_tokens=False).ids)

    def _prefix_cache(self, batch: int):
        from transformers import DynamicCache

        data = [(k.expand(batch, -1, -1, -1), v.expand(batch, -1, -1, -1)) for k, v in self._prefix_kv]
        return DynamicCache(ddp_cache_data=data, config=self.model.config)

    @torch.inference_mode()
    def features(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor, list[bool]]:
        """What one forward pass gives per text: the hidden state at the answer position
        [len(texts), hidden size], the label log-probabilities [len(texts), len(labels)], and
        whether each input was truncated.

        Rows are sorted by length and run in groups of at most
        ``engine.label_scoring.MAX_TOKENS_PER_FORWARD`` padded tokens, so one long review does not
        make fifteen short ones pay for its padding.
        """
        encoded = [self._suffix_ids(t) for t in texts]
        hidden = torch.empty(len(texts), self.model.config.hidden_size)
        logprobs = torch.empty(len(texts), len(self.task.labels))
        for group in length_groups([len(ids) for ids, _ in encoded]):
            hidden[group], logprobs[group] = self._forward([encoded[i][0] for i in group])
        return hidden, logprobs, [t for _, t in encoded]

    def _hidden(self, rows: list[list[int]]) -> torch.Tensor:
        """The model body on right-padded rows after the cached prefix: hidden states [rows, width, dim]."""
        width = max(len(ids) for ids in rows)
        input_ids = torch.tensor([ids + [self._pad_id] * (width - len(ids)) for ids in rows], dtype=torch.long)
        return self.model.base_model(
            input_ids=input_ids, cache=self._prefix_cache(len(rows)), use_cache=True
        ).last_hidden_state

    @torch.inference_mode()
    def layer_features(self, texts: list[str], layers: list[int]) -> dict[int, torch.Tensor]:
        """Per layer of ``layers`` (each 1 .. layers-1), the hidden state after that many blocks at each
        text's answer position [n, hidden]; the passes stop after the deepest."""
        encoded = [self._suffix_ids(t)[0] for t in texts]
        found = {k: torch.empty(len(texts), self.model.config.hidden_size) for k in layers}
        for group in length_groups([len(ids) for ids in encoded]):
            rows = [encoded[i] for i in group]
            last = torch.tensor([len(ids) - 1 for ids in rows])
            for k, hidden in self._blocks(rows, layers).items():
                found[k][group] = hidden[torch.arange(len(rows)), last].to(torch.float32)
        return found

    def _blocks(self, rows: list[list[int]], layers: list[int]) -> dict[int, torch.Tensor]:
        """The outputs [rows, width, dim] of the blocks ``layers`` name, the pass ending after the deepest."""
        with self._tapped(layers, stop=True) as found:
            try:
                self._hidden(rows)
            except _Exit:
                pass
        return found

    @contextlib.contextmanager
    def _tapped(self, layers: list[int], stop: bool):
        """While inside, the first output [rows, width, dim] of each block of ``layers`` goes to the yielded
        dict; with ``stop``, the pass ends after the deepest (``_Exit``)."""
        blocks = self.model.base_model.layers
        if not layers or not all(0 < k < len(blocks) for k in layers):
            raise ValueError(f"layers {list(layers)}: each must be 1 .. {len(blocks) - 1}")
        found: dict[int, torch.Tensor] = {}
        deepest = max(layers)

        def hook(k):
            def keep(_module, _inputs, output):
                found.setdefault(k, output[0] if isinstance(output, tuple) else output)
                if stop and k == deepest:
                    raise _Exit

            return keep

        handles = [blocks[k - 1].register_forward_hook(hook(k)) for k in layers]
        try:
            yield found
        finally:
            for handle in handles:
                handle.remove()

    @torch.inference_mode()
    def all_features(self, texts: list[str], layers: list[int]
                     ) -> tuple[torch.Tensor, torch.Tensor, list[bool], dict[int, torch.Tensor]]:
        """``features`` and ``layer_features`` of ``texts`` from the same passes (a fit reads both)."""
        if not layers:
            return (*self.features(texts), {})
        encoded = [self._suffix_ids(t) for t in texts]
        hidden = torch.empty(len(texts), self.model.config.hidden_size)
        logprobs = torch.empty(len(texts), len(self.task.labels))
        found = {k: torch.empty(len(texts), self.model.config.hidden_size) for k in layers}
        for group in length_groups([len(ids) for ids, _ in encoded]):
            rows = [encoded[i][0] for i in group]
            with self._tapped(layers, stop=False) as blocks:
                hidden[group], logprobs[group] = self._forward(rows)
            last = torch.tensor([len(ids) - 1 for ids in rows])
            for k, values in blocks.items():
                found[k][group] = values[torch.arange(len(rows)), last].to(torch.float32)
        return hidden, logprobs, [t for _, t in encoded], found

    def _forward(self, rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """(hidden state at each row's answer position, label log-probabilities) of a group of rows."""
        lengths = torch.tensor([len(ids) for ids in rows])
        hidden = self._hidden(rows)
        last = hidden[torch.arange(len(rows)), lengths - 1].to(torch.float32)
        scores = last @ self._head_rows.T  # [rows, spellings]: each spelling's first-token logit
        if self._head_bias is not None:
            scores = scores + self._head_bias
        if self._continuations:
            scores = scores + self._continuation_logprobs(rows)
        if not torch.isfinite(scores).all():
            raise InvalidOutput()
        labels = torch.tensor(self._spelling_label)
        per_label = torch.stack([scores[:, labels == i].logsumexp(dim=-1) for i in range(len(self._spellings))],
                                dim=-1)
        return last, (per_label + self._label_bias).log_softmax(dim=-1)

    def _continuation_logprobs(self, rows: list[list[int]]) -> torch.Tensor:
        """log p(t2..tn | suffix, t1) of every multi-token spelling: one pass over each row followed by
        the spelling's tokens, the full output layer at the positions that predict t2..tn."""
        extra = torch.zeros(len(rows), len(self._firsts))
        pairs = [(r, k, ids) for r in range(len(rows)) for k, ids in self._continuations]
        hidden = self._hidden([rows[r] + list(ids[:-1]) for r, _, ids in pairs])
        for row, (r, k, ids) in enumerate(pairs):
            start = len(rows[r])  # the position after t1: it predicts t2
            logprobs = self._head(hidden[row, start : start + len(ids) - 1]).float().log_softmax(dim=-1)
            extra[r, k] = logprobs[torch.arange(len(ids) - 1), torch.tensor(ids[1:])].sum()
        return extra

    @torch.inference_mode()
    def score(self, texts: list[str], modes: list[ClassifyMode]) -> list[Scored]:
        by_head = torch.tensor([mode is ClassifyMode.HEAD for mode in modes], dtype=torch.bool)
        if by_head.any() and self.head is None:
            raise ConfigError(f"Task {self.task.name!r} has no head on this model.")  # admission prevents it
        if by_head.any() and self.head.layer is not None:  # early exit: the full pass only for prompt rows
            logprobs = torch.empty(len(texts), len(self.task.labels))
            truncated = [self._suffix_ids(t)[1] for t in texts]
            heads = [t for t, h in zip(texts, by_head.tolist()) if h]
            logprobs[by_head] = self.head.log_probs(self.layer_features(heads, [self.head.layer])[self.head.layer])
            if not by_head.all():
                logprobs[~by_head] = self.features([t for t, h in zip(texts, by_head.tolist()) if not h])[1]
        else:
            hidden, logprobs, truncated = self.features(texts)
            if by_head.any():
                logprobs[by_head] = self.head.log_probs(hidden[by_head], logprobs[by_head])
        if not torch.isfinite(logprobs).all():
            raise InvalidOutput()
        return scored_rows(self.task, logprobs.exp().tolist(), truncated, modes)
