"""The seam between the scheduler and a model runtime: what a backend must do.

The scheduler (``engine.engine``) never imports torch; it drives one ``Backend``, which owns everything
model-shaped, in three parts by role: its ``TextCodec`` (tokens and the chat template), its
``Classifier`` (label scorers and heads) and its ``Decoder`` (the running chats). Backends:
``engine.backends`` (torch, llama.cpp) and test doubles. Who calls what, and when: each part's docstring.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Protocol, Sequence

from engine.heads import HeadState
from engine.prompts import Message
from engine.kinds.classify import ClassifyTask
from engine.types import ClassifyMode

__all__ = ["Backend", "BackendInfo", "Classifier", "Decoder", "FeatureReader", "Scored", "TextCodec"]


@dataclass(frozen=True)
class BackendInfo:
    """What a loaded backend is: the model version, its weight format and why that one."""

    name: str
    version: str
    path: Path
    precision: str  # fp32, bf16 or int8: the weights' format in memory
    precision_reason: str  # why this format (the flag, or what ``auto`` measured)
    device: str
    load_seconds: float
    backend: str = "torch"  # the runtime serving it: torch or llamacpp (engine.backends)
    backend_reason: str = "--backend torch"  # why this runtime (the flag, or what ``auto`` found)
    blocks: int = 0  # the model's transformer blocks (a head on layer k < blocks exits early)

    @property
    def label(self) -> str:
        return f"{self.name}@{self.version}"


@dataclass(frozen=True)
class Scored:
    """One text's classification: the best label, its probability and every label's."""

    label: str
    confidence: float
    scores: dict[str, float]
    truncated: bool
    mode: ClassifyMode = ClassifyMode.PROMPT  # what answered: the label words or the task's head


class TextCodec(Protocol):
    """Text to token ids and back, and the chat template. Safe from any thread: admission uses it on the
    thread that receives requests while the model thread decodes."""

    stop_ids: frozenset[int]  # token ids that end an answer

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``, no special tokens added."""

    def render(self, messages: list[Message], add_generation_prompt: bool) -> str:
        """The chat template applied to ``messages``."""

    def decode(self, ids: Sequence[int]) -> str:
        """Text of generated ids, special tokens left out."""


class FeatureReader(Protocol):
    """One classify task's scorer as a head's fit reads it (``engine.teach``, ``torch_head``)."""

    def all_features(self, texts: list[str], layers: list[int]) -> tuple[object, object, list[bool], dict]:
        """(last hidden state [n, hidden], label log-probabilities [n, labels], truncated per text,
        {layer: hidden state [n, hidden]}), as tensors or arrays."""


class Classifier(Protocol):
    """The classify tasks' scorers: label scoring and heads (docs/internals.md, "Classification").
    The model thread's, except ``head_states`` (a snapshot: admission reads it on its own thread)."""

    def prepare(self, classify_tasks: Iterable[ClassifyTask], max_input_tokens: int) -> None:
        """Warm up, and again whenever the tasks change: build the scorer (its prompt prefix cached, its
        head loaded) of every classify task that is new or changed, and drop those no longer given.
        All or nothing: when one fails, the scorers stay as they were."""

    def head_states(self) -> dict[str, HeadState]:
        """Per classify task, whether its linear head answers on this model (``engine.heads``). After ``prepare``."""

    def score(self, task: str, texts: list[str], modes: Sequence[ClassifyMode]) -> list[Scored]:
        """Classify ``texts`` with ``task``'s labels, one forward pass per length group; each text in
        its mode (``PROMPT`` or ``HEAD``, resolved at admission: ``HEAD`` only where the head is ready)."""

    def scorer(self, task: str) -> FeatureReader:
        """The task's scorer, to read features for fitting its head."""


class Decoder(Protocol):
    """The running chats and their caches. ``start`` runs a prompt (the prefill; or ``begin`` then
    ``prefill`` in chunks) and adds the sequence to the decode batch; each round the scheduler asks every
    running sequence for its ``next_token`` and feeds them all back in one ``step``; ``release`` takes a
    sequence out and frees its cache. Sequences are the decoder's own, opaque to the scheduler."""

    def start(self, prompt_ids: list[int], temperature: float, seed: int) -> object:
        """Prefill a whole prompt; the returned sequence joins the decode batch (``begin`` + ``prefill``)."""

    def begin(self, prompt_ids: list[int], temperature: float, seed: int) -> object:
        """A sequence for a prompt, nothing evaluated yet: ``prefill`` feeds it in chunks."""

    def prefill(self, sequence: object, max_tokens: int) -> bool:
        """Evaluate up to ``max_tokens`` more of the sequence's prompt; once all of it is in, the sequence
        joins the decode batch and this returns True. The scheduler bounds a round's work this way."""

    def next_token(self, sequence: object, bias: Mapping[int, float] | None = None) -> int:
        """The sequence's next token by ``engine.sampling.choose_token`` on its logits plus ``bias`` (the
        repetition guard's bans): greedy at temperature 0, else sampled with its own seed."""

    def step(self, tokens: dict[object, int]) -> None:
        """Feed one token to every running sequence in ONE forward pass (all of them, no other)."""

    def release(self, sequence: object) -> None:
        """Take a finished sequence out of the batch and free its cache (idempotent)."""

    def reset(self) -> None:
        """Drop every running sequence at once (after a failed step, or on close)."""


class Backend(Protocol):
    """A loaded model as the scheduler sees it: what it is, and its three parts, one job each.

    ``text`` is safe from any thread; ``classifier`` and ``decoder`` are the model thread's (the engine's
    worker thread), as are the calls below.
    """

    info: BackendInfo
    text: TextCodec
    classifier: Classifier
    decoder: Decoder

    def on_ready(self) -> None:
        """Called once when the engine starts serving (the torch backend copies its weights then)."""

    def between_steps(self) -> None:
        """Called by the model thread between steps: the only safe moment to change the weights."""

    def close(self) -> None:
        """Free what the model holds (its chats, scorers and runtime); the backend is unusable after."""
