"""The llamacpp backend: the version's GGUF served by llama.cpp behind the seam in ``engine.backend``.

No torch. Its parts share the runtime's one context (``llamacpp_runtime``): ``LlamaCppDecoder``'s chats are
sequence ids in it; ``LlamaCppClassifier`` scores with ``llamacpp_scoring`` and reads early-exit heads
through ``llamacpp_layers``; ``LlamaCppText`` uses the GGUF's own vocabulary and chat template, so a
version holding only a GGUF serves. docs/internals.md, "Weights and runtimes".
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
from loguru import logger

from engine.backend import BackendInfo
from engine.backends.llamacpp_layers import LayerTap
from engine.backends.llamacpp_runtime import BatchEntry, LlamaRuntime, SequenceIds
from engine.backends.llamacpp_scoring import SCORE_ROWS, TASK_PREFIXES, GgufLabelScorer
from engine.errors import ConfigError, ModelUnavailable
from engine.heads import HeadState, ModelHeads
from engine.label_scoring import MAX_TOKENS_PER_FORWARD, TaskScorers
from engine.loader import describe_model_dir, gguf_file
from engine.prompts import Message
from engine.sampling import choose_token, sampling_rng
from engine.kinds.classify import ClassifyTask
from engine.types import EngineConfig

__all__ = ["GgufSequence", "LlamaCppBackend", "LlamaCppClassifier", "LlamaCppDecoder", "LlamaCppText", "context_size",
           "sequence_count"]

PREFIX_TOKENS = 2048  # room for the classify tasks' cached prefixes (the shipped sentiment task's: about 150)
CONTINUATION_TOKENS = 256  # room for multi-token label spellings after a batch's texts
_STOP_WORDS = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<end_of_turn>")


def context_size(limits: EngineConfig) -> int:
    """KV cells the context needs: every chat at its longest, a scoring batch (with its label
    continuations), and the tasks' prefixes. Each cell holds a token's keys and values (12 kB for
    the default model), allocated when the context is made."""
    chats = limits.max_active_chats * (limits.context_tokens + limits.max_new_tokens + 1)
    return chats + MAX_TOKENS_PER_FORWARD + CONTINUATION_TOKENS + PREFIX_TOKENS


def sequence_count(limits: EngineConfig) -> int:
    """Sequence ids: one per chat, per task prefix and per text of a scoring batch."""
    return limits.max_active_chats + TASK_PREFIXES + SCORE_ROWS


class _ChatTemplate:
    """The GGUF's chat template, rendered as transformers renders a tokenizer's (sandboxed Jinja,
    trimmed blocks), so both backends build the same prompt from the same messages."""

    def __init__(self, source: str, bos_token: str, eos_token: str) -> None:
        from jinja2.ext import loopcontrols
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        def raise_exception(message):
            raise ValueError(message)

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
        env.globals["raise_exception"] = raise_exception
        env.filters["tojson"] = lambda value, **kw: json.dumps(value, ensure_ascii=False, **kw)
        self._template = env.from_string(source)
        self._tokens = {"bos_token": bos_token, "eos_token": eos_token}

    def render(self, messages: list[Message], add_generation_prompt: bool) -> str:
        return self._template.render(messages=messages, add_generation_prompt=add_generation_prompt, **self._tokens)


@dataclass(eq=False)
class GgufSequence:
    """One chat here: its sequence id, the position its next token goes to, its next logits."""

    sequence: int
    temperature: float
    rng: np.random.Generator | None
    position: int = 0
    next_logits: np.ndarray | None = None
    pending: list[int] | None = None  # prompt tokens not prefilled yet

    def next_token(self, bias: Mapping[int, float] | None = None) -> int:
        return choose_token(self.next_logits, self.temperature, self.rng, bias)


class LlamaCppText:
    """The ``TextCodec`` of the GGUF's own vocabulary and chat template."""

    def __init__(self, runtime: LlamaRuntime, template: _ChatTemplate) -> None:
        self._vocab, self._template = runtime.vocab, template
        self.stop_ids = runtime.vocab.end_tokens(_STOP_WORDS)  # as the torch backend's: EOS and ChatML's ends

    def encode(self, text: str) -> list[int]:
        return self._vocab.tokenize(text)

    def render(self, messages: list[Message], add_generation_prompt: bool) -> str:
        return self._template.render(messages, add_generation_prompt)

    def decode(self, ids: Sequence[int]) -> str:
        return self._vocab.detokenize(list(ids))


class LlamaCppClassifier(TaskScorers):
    """The ``Classifier``: a ``GgufLabelScorer`` per classify task, each with its prompt prefix in a
    sequence of its own, and the early-exit context its heads share."""

    def __init__(self, runtime: LlamaRuntime, sequences: SequenceIds, text: LlamaCppText, path: Path) -> None:
        super().__init__()
        self._runtime, self._sequences, self._text = runtime, sequences, text
        self._head_files = ModelHeads(path)
        self._tap: LayerTap | None = None  # the early-exit context, made for the first head on a layer

    def prepare(self, classify_tasks: Iterable[ClassifyTask], max_input_tokens: int) -> None:
        classify_tasks = list(classify_tasks)
        if len(classify_tasks) > TASK_PREFIXES:  # each keeps its prompt prefix in a sequence of its own
            raise ConfigError(f"The llamacpp backend holds the prompts of at most {TASK_PREFIXES} classify tasks "
                              f"({len(classify_tasks)} given); remove one first.")
        scorers: dict[str, GgufLabelScorer] = {}
        heads: dict[str, HeadState] = {}
        built: list[GgufLabelScorer] = []
        try:
            for task in classify_tasks:
                old = self._scorers.get(task.name)
                if old is not None and old.task == task and old.max_input_tokens == max_input_tokens:
                    changed, head, heads[task.name] = self._head_files.refind(task)  # fitted since (ops.api.teach)?
                    if changed:
                        old.attach_head(head)
                    scorers[task.name] = old
                    continue
                scorer = GgufLabelScorer(self._runtime, self._sequences, task, self._text.render, max_input_tokens,
                                         self.early_exit)
                built.append(scorer)
                head, heads[task.name] = self._head_files.find(task)
                scorer.attach_head(head)
                scorers[task.name] = scorer
        except BaseException:
            for scorer in built:  # all or nothing: the old scorers keep serving
                scorer.close()
            raise
        for name, scorer in self._scorers.items():
            if scorers.get(name) is not scorer:
                scorer.close()
        self._scorers, self._heads = scorers, heads

    def early_exit(self) -> LayerTap:
        """The early-exit context (``llamacpp_layers``): room for every task's prefix and a scoring batch."""
        if self._tap is None:
            self._tap = LayerTap(self._runtime, PREFIX_TOKENS + MAX_TOKENS_PER_FORWARD, MAX_TOKENS_PER_FORWARD,
                                 TASK_PREFIXES + SCORE_ROWS)
        return self._tap

    def close(self) -> None:
        for scorer in self._scorers.values():
            scorer.close()
        self._scorers = {}


class LlamaCppDecoder:
    """The ``Decoder``: each chat a sequence id in the runtime's one context; a step decodes them all."""

    def __init__(self, runtime: LlamaRuntime, sequences: SequenceIds) -> None:
        self._runtime, self._sequences = runtime, sequences
        self._chats: list[GgufSequence] = []  # decoding, one token a step
        self._starting: list[GgufSequence] = []  # their prompts still being prefilled

    def start(self, prompt_ids: list[int], temperature: float, seed: int) -> GgufSequence:
        chat = self.begin(prompt_ids, temperature, seed)
        self.prefill(chat, len(prompt_ids))
        return chat

    def begin(self, prompt_ids: list[int], temperature: float, seed: int) -> GgufSequence:
        chat = GgufSequence(self._sequences.take(), temperature, sampling_rng(temperature, seed),
                            pending=list(prompt_ids))
        self._starting.append(chat)
        return chat

    def prefill(self, chat: GgufSequence, max_tokens: int) -> bool:
        chunk, rest = chat.pending[:max_tokens], chat.pending[max_tokens:]
        try:
            outputs = self._runtime.evaluate([BatchEntry(t, chat.position + i, chat.sequence,
                                                         not rest and i == len(chunk) - 1)
                                              for i, t in enumerate(chunk)])
        except BaseException:
            self.release(chat)
            raise
        chat.position += len(chunk)
        chat.pending = rest
        if rest:
            return False
        (chat.next_logits,) = outputs
        self._starting.remove(chat)
        self._chats.append(chat)
        return True

    def next_token(self, sequence: GgufSequence, bias: Mapping[int, float] | None = None) -> int:
        return sequence.next_token(bias)

    def step(self, tokens: dict[GgufSequence, int]) -> None:
        chats = self._chats
        outputs = self._runtime.decode([BatchEntry(tokens[chat], chat.position, chat.sequence, True)
                                        for chat in chats])
        rows = [self._runtime.logits(i) for i in outputs]
        for chat, row in zip(chats, rows):
            chat.position += 1
            chat.next_logits = row

    def release(self, sequence: GgufSequence) -> None:
        for group in (self._chats, self._starting):
            if sequence in group:
                group.remove(sequence)
                self._free(sequence)

    def _free(self, chat: GgufSequence) -> None:
        self._runtime.drop(chat.sequence)
        self._sequences.give(chat.sequence)
        chat.next_logits = None

    def reset(self) -> None:
        for chat in self._chats + self._starting:
            self._free(chat)
        self._chats, self._starting = [], []


class LlamaCppBackend:
    """A ``Backend`` on a GGUF through llama.cpp; ``reason`` says why this backend was chosen."""

    def __init__(self, model_dir: Path, limits: EngineConfig, reason: str) -> None:
        started = time.monotonic()
        path = Path(model_dir).resolve()
        gguf = gguf_file(path)
        if gguf is None:
            raise ModelUnavailable(f"{path} has no GGUF file for the llamacpp backend; serve it with "
                                   "--backend torch, or install a version that has one.")
        self._runtime = LlamaRuntime(gguf, context_size(limits), batch_tokens=MAX_TOKENS_PER_FORWARD,
                                     sequences=sequence_count(limits),
                                     outputs=max(SCORE_ROWS, limits.max_active_chats))
        template = self._runtime.vocab.metadata("tokenizer.chat_template")
        if not template:
            self._runtime.close()
            raise ModelUnavailable(f"{gguf} carries no chat template; a chat model is needed.")
        self._sequences = SequenceIds(self._runtime.sequences)  # the parts share them: chats, prefixes, texts
        self.text = LlamaCppText(self._runtime, _ChatTemplate(template, *self._runtime.vocab.special_texts()))
        self.classifier = LlamaCppClassifier(self._runtime, self._sequences, self.text, path)
        self.decoder = LlamaCppDecoder(self._runtime, self._sequences)
        name, version = describe_model_dir(path)
        description = self._runtime.vocab.description()  # e.g. "qwen2 1B Q4_K - Medium"
        file_type = description.split(" ", 2)[2] if description.count(" ") >= 2 else "gguf"
        self.info = BackendInfo(name, version, path, file_type,
                                f"the GGUF's own format ({gguf.name}: {description})", "cpu",
                                time.monotonic() - started, backend="llamacpp", backend_reason=reason,
                                blocks=self._runtime.layers)
        logger.info("llama.cpp: {} in a context of {} tokens, {} threads", gguf.name, self._runtime.context_tokens,
                    self._runtime.threads)

    def on_ready(self) -> None:
        pass  # llama.cpp read the GGUF into the process's own memory at load: nothing to copy later

    def between_steps(self) -> None:
        pass

    def close(self) -> None:
        self.decoder.reset()
        self.classifier.close()
        self._runtime.close()
