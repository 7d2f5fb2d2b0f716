"""The torch backend's chat decoding: ``prefill`` and the ``DecodeBatch``.

A ``TorchSequence`` is one chat's state (its KV cache, its next logits). A ``DecodeBatch`` advances all
running sequences together, one token each per forward pass. The next token is chosen as on every
backend (``engine.sampling``): greedy by default, the same answer alone or in a batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np
import torch

from engine.errors import InvalidOutput
from engine.sampling import choose_token

__all__ = ["TorchSequence", "DecodeBatch", "prefill", "stop_token_ids"]


def stop_token_ids(model, tokenizer) -> frozenset[int]:
    """Every id that ends an answer: the tokenizer's and the generation config's EOS, ChatML's ends."""
    ids: set[int] = set()
    for value in (tokenizer.eos_token_id, getattr(model.generation_config, "eos_token_id", None)):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(v for v in value if isinstance(v, int))
    vocab = tokenizer.get_vocab()
    ids.update(vocab[t] for t in ("<|im_end|>", "<|endoftext|>") if t in vocab)
    return frozenset(ids)


def _check_finite(logits: torch.Tensor) -> torch.Tensor:
    if not torch.isfinite(logits).all():
        raise InvalidOutput()
    return logits


@torch.inference_mode()
def prefill(model, prompt_ids: list[int], cache=None):
    """Run (more of) a prompt after ``cache`` (none: from the start); return (cache, logits of the last
    position)."""
    out = model(input_ids=torch.tensor([prompt_ids], dtype=torch.long), cache=cache, use_cache=True,
                logits_to_keep=1)
    return out.cache, _check_finite(out.logits[0, -1].float())


@dataclass(eq=False)
class TorchSequence:
    """One chat's decoding state in the torch backend: its KV cache until a ``DecodeBatch``
    takes it over, the logits of its next token, and its own random generator."""

    temperature: float
    rng: np.random.Generator | None = None
    cache: object = None
    next_logits: torch.Tensor | None = None
    pending: list[int] | None = None  # prompt tokens not prefilled yet

    def next_token(self, bias: Mapping[int, float] | None = None) -> int:
        return choose_token(self.next_logits.numpy(force=True), self.temperature, self.rng, bias)

    def release(self) -> None:
        self.cache = None
        self.next_logits = None


class DecodeBatch:
    """The active streams' KV caches as one left-padded batch: one forward pass per token
    advances every stream.

    Decoding is bound by reading the weights, so feeding 8 tokens costs little
    more than feeding 1. Rows are aligned at the right: row ``i`` has
    ``pads[i]`` masked positions on the left, its own positions after them,
    and its next token goes at position ``width - pads[i]``, so RoPE and the
    mask see exactly what the stream would see alone (tested: the same greedy
    answer as decoding alone). Joining pads the shorter side; leaving drops
    the row and trims padding every row shares. Memory is bounded by
    ``max_active_chats`` x (context + max_new_tokens) positions.
    """

    def __init__(self, model) -> None:
        self.model = model
        self.streams: list[TorchSequence] = []
        self._layers: list[tuple[torch.Tensor, torch.Tensor]] = []  # per layer: keys, values [B, heads, width, dim]
        self._pads: list[int] = []
        self._width = 0

    def __len__(self) -> int:
        return len(self.streams)

    def add(self, stream: TorchSequence) -> None:
        """Take over a started stream's own cache."""
        layers = [(layer.keys, layer.values) for layer in stream.cache.layers]
        stream.cache = None
        width = layers[0][0].shape[2]
        if not self.streams:
            self._layers, self._pads, self._width = layers, [0], width
        else:
            grow = max(width - self._width, 0)
            if grow:  # the newcomer is longer: pad everyone already here
                self._layers = [(_pad_left(k, grow), _pad_left(v, grow)) for k, v in self._layers]
                self._pads = [p + grow for p in self._pads]
                self._width = width
            extra = self._width - width
            self._layers = [(torch.cat([k, _pad_left(nk, extra)]), torch.cat([v, _pad_left(nv, extra)]))
                            for (k, v), (nk, nv) in zip(self._layers, layers)]
            self._pads.append(extra)
        self.streams.append(stream)

    def remove(self, stream: TorchSequence) -> None:
        index = self.streams.index(stream)
        del self.streams[index]
        del self._pads[index]
        if not self.streams:
            self._layers, self._pads, self._width = [], [], 0
            return
        keep = torch.tensor([i for i in range(len(self.streams) + 1) if i != index])
        trim = min(self._pads)  # columns that are padding in every remaining row
        self._layers = [(k[keep, :, trim:], v[keep, :, trim:]) for k, v in self._layers]
        self._pads = [p - trim for p in self._pads]
        self._width -= trim

    @torch.inference_mode()
    def feed(self, tokens: list[int]) -> torch.Tensor:
        """Feed one token per stream (in ``streams`` order); return next-token logits [B, vocab]."""
        from transformers import DynamicCache

        pads = torch.tensor(self._pads)
        cache = DynamicCache(ddp_cache_data=self._layers, config=self.model.config)
        extra = {}
        if any(self._pads):  # without padding the mask is all ones: leave it out, as decoding alone does
            extra["attention_mask"] = (torch.arange(self._width + 1)[None, :] >= pads[:, None]).long()
        out = self.model(
            input_ids=torch.tensor(tokens, dtype=torch.long)[:, None],
            position_ids=(self._width - pads)[:, None],
            cache=cache, use_cache=True, logits_to_keep=1, **extra,
        )
        self._layers = [(layer.keys, layer.values) for layer in out.cache.layers]
        self._width += 1
        return _check_finite(out.logits[:, -1].float())


def _pad_left(tensor: torch.Tensor, columns: int) -> torch.Tensor:
    """Add ``columns`` zero positions before the sequence axis (dim 2) of a KV tensor."""
    return torch.nn.functional.pad(tensor, (0, 0, columns, 0)) if columns else tensor
