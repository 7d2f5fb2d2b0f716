"""The torch backend: a transformers causal LM behind the seam in ``engine.backend``.

Its parts: ``TorchText`` (the tokenizer and chat template), ``TorchClassifier`` (a ``LabelScorer`` per
classify task, ``torch_scoring``) and ``TorchDecoder`` (the ``DecodeBatch`` of running chats,
``torch_decode``); the backend itself keeps the worker's own copy of the weights (``_OwnWeights``).
The weights' format was chosen by the loader (``engine.precision``).
"""

from __future__ import annotations

import mmap
import threading
from typing import Iterable, Mapping, Sequence

import torch
from loguru import logger

from engine.backend import BackendInfo
from engine.backends.torch_decode import DecodeBatch, TorchSequence, prefill, stop_token_ids
from engine.backends.torch_head import LinearHead
from engine.backends.torch_scoring import LabelScorer
from engine.heads import HeadState, ModelHeads
from engine.label_scoring import TaskScorers
from engine.loader import ModelHandle
from engine.prompts import Message
from engine.sampling import sampling_rng
from engine.kinds.classify import ClassifyTask

__all__ = ["TorchBackend", "TorchClassifier", "TorchDecoder", "TorchText"]


class _OwnWeights:
    """Copies the weights off the model files into one region of the worker's own memory.

    transformers maps safetensors files into memory, so the loaded weights *are*
    the store's file pages: a file overwritten in place would change the running
    model under its requests (NaN at best, quietly wrong answers at worst), and a
    truncated one would crash it. A thread copies them (reading file pages while
    the model reads them too is safe) once the engine is ready, so the start
    does not wait the second or two it takes; the engine's own thread then swaps
    every tensor to its copy at once, between two steps (``swap_when_copied``).
    One region, swapped at once: copying and swapping tensor by tensor while
    serving left the process 0.5 GB larger under traffic. The price: the whole
    embedding table is resident, where only the rows of tokens seen were (about
    0.5 GB more for the fp32 default model).
    """

    def __init__(self, model) -> None:
        self._tensors = list(model.parameters()) + [b for b in model.buffers() if b.numel() > 1024]
        self._copies: list | None = None
        self._copied = threading.Event()

    def start_copying(self) -> None:
        threading.Thread(target=self._copy, name="own-weights", daemon=True).start()

    def _copy(self) -> None:
        try:
            # Private: the worker's own pages (counted as anonymous memory, as the memory rule expects).
            region = mmap.mmap(-1, sum(t.numel() * t.element_size() for t in self._tensors),
                               flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
            copies, offset = [], 0
            for tensor in self._tensors:
                own = torch.frombuffer(region, dtype=tensor.dtype, count=tensor.numel(), offset=offset)
                copies.append(own.view(tensor.shape).copy_(tensor.data))  # the region lives while a view does
                offset += tensor.numel() * tensor.element_size()
            self._copies = copies
        except Exception:  # the model still works from the files: say so, and serve from them
            logger.opt(exception=True).error("copying the weights off the model files failed; serving from them")
        self._copied.set()

    def swap_when_copied(self) -> None:
        """Called by the engine's thread between steps: point every tensor at its copy, once."""
        if self._copies is None or not self._copied.is_set():
            return
        for tensor, own in zip(self._tensors, self._copies):
            tensor.data = own
        self._copies = None
        self._tensors = []
        logger.info("the weights are in the worker's own memory now, off the model files")


class TorchText:
    """The ``TextCodec`` of a transformers tokenizer and its chat template."""

    def __init__(self, handle: ModelHandle) -> None:
        self._tokenizer = handle.tokenizer
        self.stop_ids = stop_token_ids(handle.model, handle.tokenizer)

    def encode(self, text: str) -> list[int]:
        # The Rust tokenizer itself: thread-safe (admission tokenizes on the receiving thread while
        # the model thread decodes), and without the Python wrapper's per-call bookkeeping.
        return self._tokenizer.backend_tokenizer.encode(text, add_special_tokens=False).ids

    def render(self, messages: list[Message], add_generation_prompt: bool) -> str:
        return self._tokenizer.apply_chat_template(messages, tokenize=False,
                                                   add_generation_prompt=add_generation_prompt)

    def decode(self, ids: Sequence[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=True)


class TorchClassifier(TaskScorers):
    """The ``Classifier``: a ``LabelScorer`` per classify task, with its head where one was fitted."""

    def __init__(self, handle: ModelHandle, text: TorchText) -> None:
        super().__init__()
        self._model, self._tokenizer, self._text = handle.model, handle.tokenizer, text
        self._head_files = ModelHeads(handle.path)

    def prepare(self, classify_tasks: Iterable[ClassifyTask], max_input_tokens: int) -> None:
        scorers: dict[str, LabelScorer] = {}
        heads: dict[str, HeadState] = {}
        refitted = []  # (kept scorer, its head found anew)
        for task in classify_tasks:
            old = self._scorers.get(task.name)
            if old is not None and old.task == task and old.max_input_tokens == max_input_tokens:
                changed, head, heads[task.name] = self._head_files.refind(task)  # fitted since (ops.api.teach)?
                scorers[task.name] = old
                if changed:
                    refitted.append((old, head))
                continue
            scorer = LabelScorer(self._model, self._tokenizer, task, self._text.render, max_input_tokens)
            head, heads[task.name] = self._head_files.find(task)
            if head is not None:
                scorer.head = LinearHead(head)
            scorers[task.name] = scorer
        for scorer, head in refitted:
            scorer.head = None if head is None else LinearHead(head)
        self._scorers, self._heads = scorers, heads


class TorchDecoder:
    """The ``Decoder``: running chats in one ``DecodeBatch``, each with its own KV cache."""

    def __init__(self, model) -> None:
        self._model = model
        self._batch = DecodeBatch(model)

    def start(self, prompt_ids: list[int], temperature: float, seed: int) -> TorchSequence:
        sequence = self.begin(prompt_ids, temperature, seed)
        self.prefill(sequence, len(prompt_ids))
        return sequence

    def begin(self, prompt_ids: list[int], temperature: float, seed: int) -> TorchSequence:
        return TorchSequence(temperature, sampling_rng(temperature, seed), pending=list(prompt_ids))

    def prefill(self, sequence: TorchSequence, max_tokens: int) -> bool:
        chunk, sequence.pending = sequence.pending[:max_tokens], sequence.pending[max_tokens:]
        sequence.cache, sequence.next_logits = prefill(self._model, chunk, sequence.cache)
        if sequence.pending:
            return False
        self._batch.add(sequence)
        return True

    def next_token(self, sequence: TorchSequence, bias: Mapping[int, float] | None = None) -> int:
        return sequence.next_token(bias)

    def step(self, tokens: dict[TorchSequence, int]) -> None:
        logits = self._batch.feed([tokens[sequence] for sequence in self._batch.streams])
        for sequence, row in zip(self._batch.streams, logits):
            sequence.next_logits = row

    def release(self, sequence: TorchSequence) -> None:
        if sequence in self._batch.streams:
            self._batch.remove(sequence)
        sequence.release()

    def reset(self) -> None:
        for sequence in self._batch.streams:
            sequence.release()
        self._batch = DecodeBatch(self._model)


class TorchBackend:
    """A ``Backend`` on a transformers model loaded by ``engine.loader``."""

    def __init__(self, handle: ModelHandle, reason: str = "--backend torch") -> None:
        self.handle = handle
        self.info = BackendInfo(handle.name, handle.version, handle.path, handle.precision,
                                handle.precision_reason, handle.device, handle.load_seconds,
                                backend="torch", backend_reason=reason,
                                blocks=handle.model.config.num_hidden_layers)
        self.text = TorchText(handle)
        self.classifier = TorchClassifier(handle, self.text)
        self.decoder = TorchDecoder(handle.model)
        # Weights the loader converted (bf16 from fp32 files, int8 linears) are the process's own already;
        # what is still mapped from the files (all of fp32, int8's embedding table and norms) is copied.
        self._weights = _OwnWeights(handle.model) if handle.weights_in_files else None

    def on_ready(self) -> None:
        if self._weights is not None:
            self._weights.start_copying()

    def between_steps(self) -> None:
        if self._weights is not None:
            self._weights.swap_when_copied()

    def close(self) -> None:
        self.decoder.reset()  # the rest is freed with the objects
