"""A GGUF model's vocabulary and metadata through llama.cpp's C API: tokens to text and back.

Read-only, so safe from any thread (admission encodes and renders on the receiving thread, as
llama.cpp's own server does from its HTTP threads). ``LlamaRuntime.vocab`` is one.
"""

from __future__ import annotations

import ctypes
from typing import Sequence

from engine.errors import InferenceFailed

__all__ = ["GgufVocab"]


class GgufVocab:
    """The vocabulary and metadata of one loaded llama.cpp model (``ll``: the ``llama_capi`` bindings)."""

    def __init__(self, ll, model) -> None:
        self._ll = ll
        self._model = model
        self._vocab = ll.llama_model_get_vocab(model)

    def tokenize(self, text: str, special: bool = True) -> list[int]:
        """Token ids of ``text``; special tokens written in it (``<|im_start|>``) are parsed as such,
        as the transformers tokenizer does. No BOS is added."""
        data = text.encode("utf-8")
        buffer = (self._ll.llama_token * (len(data) + 8))()
        count = self._ll.llama_tokenize(self._vocab, data, len(data), buffer, len(buffer), False, special)
        if count < 0:  # the buffer was short: -count is what it needs
            buffer = (self._ll.llama_token * -count)()
            count = self._ll.llama_tokenize(self._vocab, data, len(data), buffer, len(buffer), False, special)
        return list(buffer[:count])

    def detokenize(self, ids: Sequence[int]) -> str:
        """Text of ``ids``, special tokens left out."""
        if not ids:
            return ""
        tokens = (self._ll.llama_token * len(ids))(*ids)
        size = 8 * len(ids) + 16
        for _ in range(2):
            buffer = ctypes.create_string_buffer(size)
            count = self._ll.llama_detokenize(self._vocab, tokens, len(ids), buffer, size, False, False)
            if count >= 0:
                return buffer.raw[:count].decode("utf-8", "replace")
            size = -count
        raise InferenceFailed("llama.cpp could not turn the tokens into text.")

    def special_texts(self) -> tuple[str, str]:
        """The texts of the BOS and EOS tokens ("" where the vocabulary has none), for chat templates."""
        texts = []
        for token in (self._ll.llama_vocab_bos(self._vocab), self._ll.llama_vocab_eos(self._vocab)):
            text = self._ll.llama_vocab_get_text(self._vocab, token) if token >= 0 else b""
            texts.append((text or b"").decode("utf-8", "replace"))
        return texts[0], texts[1]

    def end_tokens(self, words: Sequence[str]) -> frozenset[int]:
        """The tokens that end a generation: the vocabulary's EOS and EOT, and each of ``words`` that is
        one end-of-generation token in this vocabulary (ChatML's ``<|im_end|>``)."""
        ll, vocab = self._ll, self._vocab
        ids = {t for t in (ll.llama_vocab_eos(vocab), ll.llama_vocab_eot(vocab)) if t >= 0}
        for word in words:
            tokens = self.tokenize(word)
            if len(tokens) == 1 and ll.llama_vocab_is_eog(vocab, tokens[0]):
                ids.add(tokens[0])
        return frozenset(ids)

    def metadata(self, key: str) -> str | None:
        """A GGUF metadata value as text (the chat template, the file type), ``None`` when absent."""
        size = 1 << 16
        while True:
            buffer = ctypes.create_string_buffer(size)
            count = self._ll.llama_model_meta_val_str(self._model, key.encode(), buffer, size)
            if count < 0:
                return None
            if count < size:
                return buffer.value.decode("utf-8", "replace")
            size = count + 1

    def description(self) -> str:
        buffer = ctypes.create_string_buffer(256)
        self._ll.llama_model_desc(self._model, buffer, 256)
        return buffer.value.decode("utf-8", "replace")
