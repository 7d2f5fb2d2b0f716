"""Early exit on llama.cpp: a second context over the same model that stops after layer k.

``LayerTap`` shares the runtime's weights (its own small KV cache) and has an eval callback that copies
block k's output (``l_out-{k-1}``) at the answer positions and then answers "stop", ending the graph
there: a head on layer 12 of 24 costs half a pass. The callback runs in Python per graph node, so it
lives on this context only; it also takes several layers at once (choosing a head's layer).
"""

from __future__ import annotations

import ctypes
from typing import Sequence

import numpy as np

from engine.backends.llamacpp_runtime import BatchEntry, LlamaRuntime, SequenceIds, check_status, fill_batch
from engine.errors import InferenceFailed, InvalidOutput

__all__ = ["LayerTap", "TapPrefix", "block_output_name"]

GGML_TYPE_F32 = 0


def block_output_name(layer: int) -> bytes:
    """llama.cpp's name for the hidden state after ``layer`` blocks (its blocks count from 0)."""
    return f"l_out-{layer - 1}".encode()


class LayerTap:
    """A context over ``runtime``'s model whose decodes hand back chosen layers' hidden states at chosen
    batch indices and stop after the deepest (module doc). Model thread only."""

    def __init__(self, runtime: LlamaRuntime, context_tokens: int, batch_tokens: int, sequences: int) -> None:
        self.runtime = runtime
        self.layers = runtime.layers
        api = self._api = runtime.api
        # One ubatch per decode, so that the callback's rows are the batch's own indices.
        params = runtime.context_params(context_tokens, batch_tokens, sequences, runtime.threads)
        params.n_ubatch = batch_tokens
        params.n_outputs_max = params.n_seq_max
        self._callback = api.eval_callback(self._on_tensor)  # kept alive as long as the context
        params.cb_eval = self._callback
        self._ctx = runtime.new_context(params)
        if not self._ctx:
            raise InferenceFailed(f"llama.cpp could not make an early-exit context of {context_tokens} tokens.")
        runtime.adopt(self)
        self._memory = api.llama_get_memory(self._ctx)
        self._batch = api.llama_batch_init(batch_tokens, 0, 1)
        self.batch_tokens = batch_tokens
        self.sequences = SequenceIds(params.n_seq_max)
        self._wanted: dict[bytes, int] = {}  # tensor name -> layer, for the decode under way
        self._stop = b""
        self._rows: list[int] = []
        self._captured: dict[int, np.ndarray] = {}
        self._error = ""

    def _on_tensor(self, tensor: int, ask: bool, _user_data) -> bool:
        t = self._api.ggml_tensor.from_address(tensor)
        if ask:
            return t.name in self._wanted
        layer = self._wanted[t.name]
        width, tokens = t.ne[0], t.ne[1]
        if t.type != GGML_TYPE_F32 or t.nb[1] != 4 * width:  # llama.cpp keeps the residual stream in f32
            self._error = f"llama.cpp's {t.name.decode()} is not a plain f32 matrix."
            return False  # no exception may cross back into C: ``run`` raises it
        values = np.ctypeslib.as_array((ctypes.c_float * (width * tokens)).from_address(t.data))
        self._captured[layer] = values.reshape(tokens, width)[self._rows].copy()
        return t.name != self._stop  # False: the graph stops here

    def run(self, entries: Sequence[BatchEntry], layers: Sequence[int], rows: Sequence[int] = ()
            ) -> dict[int, np.ndarray]:
        """Evaluate ``entries`` (at most ``batch_tokens``) in one decode through the deepest of ``layers``
        (each 1 .. layers-1); per layer, the hidden states [len(rows), hidden] at batch indices ``rows``."""
        if not 0 < len(entries) <= self.batch_tokens:
            raise ValueError(f"a batch of {len(entries)} tokens; the early-exit context takes {self.batch_tokens}")
        if not layers or not all(0 < k < self.layers for k in layers):
            raise ValueError(f"layers {list(layers)}: each must be 1 .. {self.layers - 1}")
        # Outputs only where marked (none, from TapPrefix): the end of the graph is never reached.
        fill_batch(self._batch, entries)
        self._wanted = {block_output_name(k): k for k in layers}
        self._stop, self._rows, self._captured, self._error = block_output_name(max(layers)), list(rows), {}, ""
        try:
            status = self._api.llama_decode(self._ctx, self._batch)
        finally:
            self._wanted = {}
        check_status(status, "early-exit context")
        if self._error:
            raise InferenceFailed(self._error)
        for k in layers:
            found = self._captured.get(k)
            if found is None:
                raise InferenceFailed(f"llama.cpp computed no layer {k} (is the model's graph named as expected?)")
            if not np.isfinite(found).all():
                raise InvalidOutput()
        return self._captured

    def adopt_state(self, state, sequence: int) -> None:
        """Put a sequence's cells copied from another context over the same model
        (``LlamaRuntime.sequence_state``) into ``sequence`` here."""
        if self._api.llama_state_seq_set_data(self._ctx, state, len(state), sequence) == 0:
            raise InferenceFailed("llama.cpp could not load a sequence's state into the early-exit context.")

    def drop(self, sequence: int, start: int = -1) -> None:
        self._api.llama_memory_seq_rm(self._memory, sequence, start, -1)

    def share(self, source: int, target: int) -> None:
        self._api.llama_memory_seq_cp(self._memory, source, target, -1, -1)

    def close(self) -> None:
        if self._ctx:
            self._api.llama_batch_free(self._batch)
            self._api.llama_free(self._ctx)
            self._ctx = None


class TapPrefix:
    """One classify task's prompt prefix on a ``LayerTap``, and the hidden states after it of batches of
    texts: the early-exit half of ``llamacpp_scoring.GgufLabelScorer``. The prefix's cells are copied
    from the main context, which holds them already (every layer's keys and values, so a head on any
    layer, and the layer choice, can read them): no second evaluation, a second less at each start."""

    def __init__(self, tap: LayerTap, prefix_len: int, state) -> None:
        self.tap = tap
        self.prefix_len = prefix_len
        self._sequence: int | None = tap.sequences.take()
        try:
            tap.adopt_state(state, self._sequence)
        except BaseException:
            self.close()
            raise

    def hidden(self, rows: list[list[int]], layers: Sequence[int]) -> dict[int, np.ndarray]:
        """Per layer, the hidden state [len(rows), hidden] at each row's answer position (its last token),
        the rows being suffixes after the prefix; one decode for all (the caller sizes the group)."""
        tap, sequences, entries, answers = self.tap, [], [], []
        try:
            for ids in rows:
                sequence = tap.sequences.take()
                sequences.append(sequence)
                tap.share(self._sequence, sequence)
                entries += [BatchEntry(t, self.prefix_len + i, sequence) for i, t in enumerate(ids)]
                answers.append(len(entries) - 1)
            return tap.run(entries, layers, answers)
        finally:
            for sequence in sequences:
                tap.drop(sequence)
                tap.sequences.give(sequence)

    def close(self) -> None:
        if self._sequence is not None:
            self.tap.drop(self._sequence)
            self.tap.sequences.give(self._sequence)
            self._sequence = None
