"""Fault drills as a backend wrapper: the scheduler's loop knows nothing of them.

``FaultyBackend`` wraps the backend's classifier and decoder and passes every call through until a drill
is armed (``POST /admin/fault/{kind}`` with ``--fault-injection``); then the model calls behave as a
sick model would. The drills are listed on ``FaultyBackend``; ``exit`` and ``exit-app`` end a process
and are the worker's and the web process's.
"""

from __future__ import annotations

import threading
import time
from typing import Iterable, Mapping, Sequence

from engine.backend import Backend, Classifier, Decoder, FeatureReader, Scored
from engine.errors import InferenceFailed, InferenceTimeout, InvalidInput, InvalidOutput
from engine.heads import HeadState
from engine.kinds.classify import ClassifyTask
from engine.types import ClassifyMode, Fault

__all__ = ["BACKEND_FAULTS", "FaultyBackend", "FaultyClassifier", "FaultyDecoder"]

BACKEND_FAULTS = (Fault.NAN_WEIGHTS, Fault.HANG, Fault.ERROR, Fault.SLOW)
INJECTED_ERRORS = 3
SLOW_STEP_S = 4.0  # the ``slow`` drill's step: twice the drill app's hang limit, under its request timeout


class _Drills:
    """The armed drills; the wrapped parts meet them on the model thread's next model call."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._poisoned = False
        self._hang = False
        self._slow = False
        self._errors = 0
        self._hang_released = threading.Event()

    def arm(self, kind: Fault | str) -> None:
        if kind not in BACKEND_FAULTS:
            raise InvalidInput(f"Unknown fault {kind!r}; the backend applies: {', '.join(BACKEND_FAULTS)}.")
        with self._lock:
            if kind == Fault.NAN_WEIGHTS:
                self._poisoned = True
            elif kind == Fault.HANG:
                self._hang = True
            elif kind == Fault.SLOW:
                self._slow = True
            else:
                self._errors = INJECTED_ERRORS

    def release_hang(self) -> None:
        self._hang_released.set()

    def before_model_call(self) -> None:
        with self._lock:
            hang, self._hang = self._hang, False
            slow, self._slow = self._slow, False
            fail = self._errors > 0
            self._errors = max(self._errors - 1, 0)
            poisoned = self._poisoned
        if slow:
            end = time.monotonic() + SLOW_STEP_S
            while time.monotonic() < end:
                pass  # computing: CPU used, the loop not turning
        if hang:
            self._hang_released.wait()  # the watchdog sees the model thread stuck, and replaces the process
            raise InferenceTimeout()  # the hung work is abandoned with a timeout, never served late
        if poisoned:
            raise InvalidOutput()
        if fail:
            raise InferenceFailed("Injected fault: this inference failed.")


class FaultyClassifier:
    """A ``Classifier`` whose ``score`` meets the drills first; the rest passes through."""

    def __init__(self, inner: Classifier, drills: _Drills) -> None:
        self.inner, self._drills = inner, drills

    def prepare(self, classify_tasks: Iterable[ClassifyTask], max_input_tokens: int) -> None:
        self.inner.prepare(classify_tasks, max_input_tokens)

    def head_states(self) -> dict[str, HeadState]:
        return self.inner.head_states()

    def score(self, task: str, texts: list[str], modes: Sequence[ClassifyMode]) -> list[Scored]:
        self._drills.before_model_call()
        return self.inner.score(task, texts, modes)

    def scorer(self, task: str) -> FeatureReader:
        return self.inner.scorer(task)


class FaultyDecoder:
    """A ``Decoder`` whose model calls (``start``, ``prefill``, ``step``) meet the drills first."""

    def __init__(self, inner: Decoder, drills: _Drills) -> None:
        self.inner, self._drills = inner, drills

    def start(self, prompt_ids: list[int], temperature: float, seed: int) -> object:
        self._drills.before_model_call()
        return self.inner.start(prompt_ids, temperature, seed)

    def begin(self, prompt_ids: list[int], temperature: float, seed: int) -> object:
        return self.inner.begin(prompt_ids, temperature, seed)

    def prefill(self, sequence: object, max_tokens: int) -> bool:
        self._drills.before_model_call()
        return self.inner.prefill(sequence, max_tokens)

    def next_token(self, sequence: object, bias: Mapping[int, float] | None = None) -> int:
        return self.inner.next_token(sequence, bias)

    def step(self, tokens: dict[object, int]) -> None:
        self._drills.before_model_call()
        self.inner.step(tokens)

    def release(self, sequence: object) -> None:
        self.inner.release(sequence)

    def reset(self) -> None:
        self.inner.reset()


class FaultyBackend:
    """A ``Backend`` that can be made sick on purpose. Once a drill is armed (the worker process arms
    it), the model calls (the classifier's ``score``, the decoder's ``start``, ``prefill`` and ``step``)
    behave as a sick model would:

    - ``nan-weights``: every call from then on fails with ``InvalidOutput``, as a model whose weights
      turned to NaN does (its outputs are never finite);
    - ``hang``: the next call blocks until the process is replaced (or ``release_hang`` in a test),
      then fails with ``InferenceTimeout``;
    - ``error``: the next three calls raise ``InferenceFailed``;
    - ``slow``: the next call computes for ``SLOW_STEP_S`` first (a busy loop: the process uses the CPU
      while its loop does not turn), then goes on, as a step on an overloaded machine does. The
      watchdog must not take it for a hang.

    The text side is the inner backend's own: no drill touches it.
    """

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self._drills = _Drills()
        self.info = inner.info
        self.text = inner.text
        self.classifier = FaultyClassifier(inner.classifier, self._drills)
        self.decoder = FaultyDecoder(inner.decoder, self._drills)

    def arm(self, kind: Fault | str) -> None:
        """Arm a drill from any thread; the model thread meets it on its next model call."""
        self._drills.arm(kind)

    def release_hang(self) -> None:
        self._drills.release_hang()

    def on_ready(self) -> None:
        self.inner.on_ready()

    def between_steps(self) -> None:
        self.inner.between_steps()

    def close(self) -> None:
        self.inner.close()
