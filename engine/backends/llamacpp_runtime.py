"""llama.cpp through its C API (``llama_capi``): one GGUF, one context, many sequences.

One context whose KV cache is *unified*, shared by every sequence id: a task's prompt prefix is shared
by ``seq_cp`` (no copy), and several chats decode in one ``llama_decode``. ``LlamaRuntime`` is the thin
typed layer (load, tokenize, decode, logits, hidden states, sequences); ``SequenceIds`` hands out ids.
Every struct starts from its defaults (the library is pinned). docs/internals.md has the why.
"""

from __future__ import annotations

import ctypes
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from loguru import logger

from engine.backends.llama_capi import load_api
from engine.backends.llamacpp_vocab import GgufVocab
from engine.errors import InferenceFailed, InvalidOutput, ModelUnavailable

__all__ = ["BatchEntry", "LlamaRuntime", "SequenceIds", "check_status", "fill_batch"]

_log_callback = None  # kept alive for as long as llama.cpp may call it


def _route_logs(api) -> None:
    """llama.cpp's own log lines: warnings and errors to our log, the load chatter nowhere."""
    global _log_callback
    if _log_callback is not None:
        return

    def forward(level, text, _user_data):
        if level in (3, 4):  # GGML_LOG_LEVEL_WARN and ERROR (5 continues the line before: the load's dots)
            message = text.decode("utf-8", "replace").rstrip()
            if message:
                logger.log("WARNING" if level == 3 else "ERROR", "llama.cpp: {}", message)

    _log_callback = api.log_callback(forward)
    api.llama_log_set(_log_callback, ctypes.c_void_p(0))


@dataclass(frozen=True)
class BatchEntry:
    """One token to evaluate: where it goes (sequence, position) and whether its output is read."""

    token: int
    position: int
    sequence: int
    output: bool = False


def fill_batch(batch, entries: Sequence[BatchEntry], all_outputs: bool = False) -> None:
    """Write ``entries`` into a ``llama_batch`` (one sequence each); outputs where marked, or all."""
    for i, entry in enumerate(entries):
        batch.token[i] = entry.token
        batch.pos[i] = entry.position
        batch.n_seq_id[i] = 1
        batch.seq_id[i][0] = entry.sequence
        batch.logits[i] = entry.output or all_outputs
    batch.n_tokens = len(entries)


def read_sequence_state(api, ctx, sequence: int):
    """``llama_state_seq_get_data`` of one sequence, as a ctypes byte buffer."""
    size = api.llama_state_seq_get_size(ctx, sequence)
    buffer = (ctypes.c_uint8 * size)()
    if api.llama_state_seq_get_data(ctx, buffer, size, sequence) != size:
        raise InferenceFailed("llama.cpp could not copy a sequence's state.")
    return buffer


def check_status(status: int, context: str) -> None:
    """``llama_decode``'s status as our errors: 1 is a full context, anything else but 0 a failure."""
    if status == 1:
        raise InferenceFailed(f"The llama.cpp {context} is full.")
    if status != 0:
        raise InferenceFailed(f"llama.cpp failed to evaluate a batch (status {status}).")


class SequenceIds:
    """The context's sequence ids, handed out and taken back (model thread only)."""

    def __init__(self, count: int) -> None:
        self._free = list(range(count - 1, -1, -1))

    def take(self) -> int:
        if not self._free:
            raise InferenceFailed("The llama.cpp context has no free sequence left.")
        return self._free.pop()

    def give(self, sequence: int) -> None:
        self._free.append(sequence)

    @property
    def free(self) -> int:
        return len(self._free)


def cpu_threads() -> int:
    """Threads for llama.cpp: the CPUs this process may run on."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except (AttributeError, OSError):
        return max(os.cpu_count() or 1, 1)


class LlamaRuntime:
    """A GGUF model and one llama.cpp context over it; not thread-safe except ``vocab`` (read-only use
    of the vocabulary, as llama.cpp's own server does from its HTTP threads)."""

    def __init__(self, gguf: Path, context_tokens: int, batch_tokens: int, sequences: int, outputs: int,
                 threads: int | None = None) -> None:
        ll = self._ll = load_api()
        _route_logs(ll)
        ll.llama_backend_init()
        model_params = ll.llama_model_default_params()
        model_params.n_gpu_layers = 0
        # Read into the process's own memory, not mapped: a model file changed on disk must not change
        # the running model (the torch backend copies its weights off the files for the same reason).
        model_params.load_mode = ll.LLAMA_LOAD_MODE_NONE
        self._model = ll.llama_model_load_from_file(str(gguf).encode(), model_params)
        if not self._model:
            raise ModelUnavailable(f"llama.cpp could not load {gguf} (see the log for its reason).")
        threads = threads or cpu_threads()
        params = self.context_params(context_tokens, batch_tokens, sequences, threads)
        # The logits read from one decode: llama.cpp reserves n_outputs_max x vocabulary floats for them
        # (0.6 MB a row here; its default, the batch size, reserved 0.3 GB), and asserts that no decode
        # asks for more: ``decode`` refuses to, and ``evaluate`` splits to fit.
        params.n_outputs_max = max(outputs, params.n_seq_max)
        self._taps: list = []  # contexts of ``llamacpp_layers.LayerTap`` over this model, closed before it
        self._ctx = ll.llama_init_from_model(self._model, params)
        if not self._ctx:
            ll.llama_model_free(self._model)
            raise ModelUnavailable(f"llama.cpp could not make a context of {context_tokens} tokens for {gguf}.")
        self._memory = ll.llama_get_memory(self._ctx)
        self._vocab = ll.llama_model_get_vocab(self._model)
        self.vocab = GgufVocab(ll, self._model)  # tokens, text and metadata: safe from any thread
        self.vocab_size = ll.llama_vocab_n_tokens(self._vocab)
        self.hidden_size = ll.llama_model_n_embd(self._model)
        self.layers = ll.llama_model_n_layer(self._model)
        self.sequences = params.n_seq_max
        self.context_tokens = context_tokens
        self.batch_tokens = batch_tokens
        self.outputs = params.n_outputs_max
        self.threads = threads
        self._batch = ll.llama_batch_init(batch_tokens, 0, 1)
        self._closed = threading.Event()

    def context_params(self, context_tokens: int, batch_tokens: int, sequences: int, threads: int):
        """Parameters for a context over this model: a unified KV cache, logits only (module doc)."""
        ll = self._ll
        params = ll.llama_context_default_params()
        params.n_ctx = context_tokens
        params.n_batch = batch_tokens
        params.n_ubatch = min(batch_tokens, 512)
        params.n_seq_max = min(sequences, ll.LLAMA_MAX_SEQ)
        params.n_threads = params.n_threads_batch = threads
        params.kv_unified = True  # one cache for every sequence: seq_cp shares cells (module doc)
        # Hidden states (for classify heads) only while ``with_hidden`` is on: in that mode llama.cpp makes
        # every token of a batch an output, so it is switched on for batches of answer positions alone.
        params.embeddings = False
        params.pooling_type = ll.LLAMA_POOLING_TYPE_NONE
        params.no_perf = True
        return params

    def new_context(self, params):
        """A further context over this model (``llamacpp_layers``); closed with the runtime."""
        return self._ll.llama_init_from_model(self._model, params)

    @property
    def api(self):
        return self._ll

    def adopt(self, tap) -> None:
        """Close ``tap`` (anything with ``close()``) before the model it computes with."""
        self._taps.append(tap)

    # -- evaluation -------------------------------------------------------------------------------

    def decode(self, entries: Sequence[BatchEntry], with_hidden: bool = False) -> list[int]:
        """Evaluate ``entries`` (at most ``batch_tokens``) in one ``llama_decode``; return the batch
        indices whose outputs can be read (``logits``, and ``hidden`` when ``with_hidden``), in the
        entries' order. With ``with_hidden`` every entry is an output (llama.cpp's rule)."""
        wanted = len(entries) if with_hidden else sum(entry.output for entry in entries)
        if not 0 < len(entries) <= self.batch_tokens or wanted > self.outputs:  # llama.cpp would abort
            raise ValueError(f"a batch of {len(entries)} tokens with {wanted} outputs; the context takes "
                             f"{self.batch_tokens} tokens and {self.outputs} outputs")
        self._ll.llama_set_embeddings(self._ctx, with_hidden)
        fill_batch(self._batch, entries, with_hidden)
        check_status(self._ll.llama_decode(self._ctx, self._batch), f"context ({self.context_tokens} tokens)")
        return [i for i, entry in enumerate(entries) if entry.output or with_hidden]

    def evaluate(self, entries: Sequence[BatchEntry]) -> list[np.ndarray]:
        """Evaluate ``entries`` in as many decodes as the batch and output limits need (a sequence's
        tokens stay in order); return the logits of every entry marked ``output``, in order."""
        rows: list[np.ndarray] = []
        start = 0
        while start < len(entries):
            end, outputs = start, 0
            while end < len(entries) and end - start < self.batch_tokens:
                if entries[end].output:
                    if outputs == self.outputs:
                        break
                    outputs += 1
                end += 1
            rows += [self.logits(i) for i in self.decode(entries[start:end])]
            start = end
        return rows

    def logits(self, index: int) -> np.ndarray:
        """A copy of the logits [vocab] of batch index ``index`` of the last ``decode``; finite, or
        ``InvalidOutput``."""
        pointer = self._ll.llama_get_logits_ith(self._ctx, index)
        if not pointer:
            raise InferenceFailed(f"llama.cpp has no logits for batch index {index}.")
        row = np.ctypeslib.as_array(pointer, shape=(self.vocab_size,)).copy()
        if not np.isfinite(row).all():
            raise InvalidOutput()
        return row

    def hidden(self, index: int) -> np.ndarray:
        """A copy of the final hidden state [hidden size] (after the last norm) of batch index ``index``."""
        pointer = self._ll.llama_get_embeddings_ith(self._ctx, index)
        if not pointer:
            raise InferenceFailed(f"llama.cpp has no hidden state for batch index {index}.")
        return np.ctypeslib.as_array(pointer, shape=(self.hidden_size,)).copy()

    def sequence_state(self, sequence: int):
        """A copy of ``sequence``'s cells (its keys and values), for another context over this model."""
        return read_sequence_state(self._ll, self._ctx, sequence)

    def drop(self, sequence: int, start: int = -1) -> None:
        """Free the cells of ``sequence`` from position ``start`` on (all of them by default)."""
        self._ll.llama_memory_seq_rm(self._memory, sequence, start, -1)

    def share(self, source: int, target: int) -> None:
        """Make ``target`` see all of ``source``'s cells (metadata only, in a unified cache)."""
        self._ll.llama_memory_seq_cp(self._memory, source, target, -1, -1)

    def clear(self) -> None:
        self._ll.llama_memory_clear(self._memory, False)

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        for tap in self._taps:
            tap.close()
        self._ll.llama_batch_free(self._batch)
        self._ll.llama_free(self._ctx)
        self._ll.llama_model_free(self._model)
