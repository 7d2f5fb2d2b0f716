"""Chat decoding primitives: ``prefill``, ``decode_one_token``, ``sample``.

A ``ChatStream`` is one request's decoding state (its KV cache, the tokens so
far, its limits). The engine's worker advances streams one token at a time,
so several chats and the classification batches can take turns on the model
(see the scheduling rule in ``engine.engine``). Greedy by default: the same
request always gets the same answer.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field

import torch

from engine.errors import InferenceFailed
from engine.prompts import safe_stream_text
from engine.types import FINISH_LENGTH, FINISH_STOP, FINISH_TIME_LIMIT, ChatUpdate

__all__ = ["ChatStream", "prefill", "decode_one_token", "sample", "stop_token_ids"]


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
        raise InferenceFailed("The model produced invalid numbers (NaN/inf); it will be reloaded.")
    return logits


@torch.inference_mode()
def prefill(model, prompt_ids: list[int]):
    """Run the prompt; return (cache, logits of the last position)."""
    out = model(input_ids=torch.tensor([prompt_ids], dtype=torch.long), use_cache=True, logits_to_keep=1)
    return out.cache, _check_finite(out.logits[0, -1].float())


@torch.inference_mode()
def decode_one_token(model, cache, token: int) -> torch.Tensor:
    """Feed one token; return the next position's logits (the cache grows in place)."""
    out = model(input_ids=torch.tensor([[token]], dtype=torch.long), cache=cache, use_cache=True, logits_to_keep=1)
    return _check_finite(out.logits[0, -1].float())


def sample(logits: torch.Tensor, temperature: float, generator: torch.Generator | None) -> int:
    """Greedy at temperature 0, else a draw from softmax(logits / temperature)."""
    if temperature <= 0.0:
        return int(logits.argmax())
    probs = torch.softmax(logits / temperature, dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator))


@dataclass(eq=False)
class ChatStream:
    """One chat request being decoded. The worker writes, the caller reads ``updates``."""

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
    cache: object = None
    next_logits: torch.Tensor | None = None
    generator: torch.Generator | None = None

    def start(self, model) -> None:
        if self.temperature > 0:
            self.generator = torch.Generator().manual_seed(self.seed)
        self.cache, self.next_logits = prefill(model, self.prompt_ids)

    def step(self, model, tokenizer, stop_ids: frozenset[int]) -> bool:
        """Pick the next token, publish the new text, feed it back. True when finished."""
        token = sample(self.next_logits, self.temperature, self.generator)
        finish = None
        if token in stop_ids:
            finish = FINISH_STOP
        else:
            self.generated.append(token)
            if len(self.generated) >= self.max_new_tokens:
                finish = FINISH_LENGTH
            elif time.monotonic() >= self.deadline:
                finish = FINISH_TIME_LIMIT
        text = tokenizer.decode(self.generated, skip_special_tokens=True)
        if finish is None:
            text = safe_stream_text(text)
        delta, self.text = text[len(self.text):], text
        self.publish(ChatUpdate(text, delta, finish is not None, finish, self.notices, len(self.generated)))
        if finish is None:
            self.next_logits = decode_one_token(model, self.cache, token)
            return False
        self.release()
        return True

    def publish(self, update: ChatUpdate | BaseException) -> None:
        self.updates.put(update)

    def release(self) -> None:
        """Drop the KV cache as soon as the stream ends, not when the caller lets go."""
        self.cache = None
        self.next_logits = None
