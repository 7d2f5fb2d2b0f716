"""Fault drills as a backend wrapper: the scheduler's loop knows nothing of them.

``FaultyBackend`` passes every call through until a drill is armed (``POST /admin/fault/{kind}`` with
``--fault-injection``); then the model calls behave as a sick model would. The drills are listed on
``FaultyBackend``; ``exit`` and ``exit-app`` end a process and are the worker's and the web process's.
"""

from __future__ import annotations

import threading
import time

from engine.backend import Backend
from engine.errors import InferenceFailed, InferenceTimeout, InvalidInput, InvalidOutput
from engine.types import Fault

__all__ = ["BACKEND_FAULTS", "FaultyBackend"]

BACKEND_FAULTS = (Fault.NAN_WEIGHTS, Fault.HANG, Fault.ERROR, Fault.SLOW)
INJECTED_ERRORS = 3
SLOW_STEP_S = 4.0  # the ``slow`` drill's step: twice the drill app's hang limit, under its request timeout


class FaultyBackend:
    """A ``Backend`` that can be made sick on purpose. Once a drill is armed (the worker process arms
    it), the model calls (``score``, ``start``, ``step``) behave as a sick model would:

    - ``nan-weights``: every call from then on fails with ``InvalidOutput``, as a model whose weights
      turned to NaN does (its outputs are never finite);
    - ``hang``: the next call blocks until the process is replaced (or ``release_hang`` in a test),
      then fails with ``InferenceTimeout``;
    - ``error``: the next three calls raise ``InferenceFailed``;
    - ``slow``: the next call computes for ``SLOW_STEP_S`` first (a busy loop: the process uses the CPU
      while its loop does not turn), then goes on, as a step on an overloaded machine does. The
      watchdog must not take it for a hang.
    """

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self._lock = threading.Lock()
        self._poisoned = False
        self._hang = False
        self._slow = False
        self._errors = 0
        self._hang_released = threading.Event()

    def __getattr__(self, name: str):  # everything the drills leave alone
        return getattr(self.inner, name)

    def arm(self, kind: Fault | str) -> None:
        """Arm a drill from any thread; the model thread meets it on its next model call."""
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

    def _before_model_call(self) -> None:
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

    def score(self, task, texts, modes):
        self._before_model_call()
        return self.inner.score(task, texts, modes)

    def start(self, prompt_ids, temperature, seed):
        self._before_model_call()
        return self.inner.start(prompt_ids, temperature, seed)

    def begin(self, prompt_ids, temperature, seed):
        return self.inner.begin(prompt_ids, temperature, seed)

    def prefill(self, sequence, max_tokens):
        self._before_model_call()
        return self.inner.prefill(sequence, max_tokens)

    def step(self, tokens):
        self._before_model_call()
        return self.inner.step(tokens)
