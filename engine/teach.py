"""Teaching a task by example, the model's side: hidden-state features read as low-priority rounds. No torch.

A fit (``ops.api.teach``) sends ``FeatureRequest``s; ``BackgroundRounds`` runs one batch only when the
foreground is idle and has been for ``YIELD`` x the last batch (at most a third of the model's time),
or after ``MAX_WAIT_S``. A request waits behind at most one batch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from loguru import logger

from engine.errors import AllInOneError, InferenceFailed, InvalidInput
from engine.heads import candidate_layers
from engine.tasks import ClassifyTask, TaskRegistry

__all__ = ["BackgroundRounds", "FeatureJob", "FeatureRequest", "FeatureRows", "MAX_FEATURE_TEXTS", "read_features",
           "teach_layers"]

MAX_FEATURE_TEXTS = 16  # one background round: a fit sends a few texts at a time
TEACH_LAYER_STRIDE = 3  # every third candidate layer: the cross-validation's cost grows with each candidate
YIELD = 2.0  # after a batch of c seconds, the model is the foreground's for at least YIELD x c
JUST_S = 0.05  # a request answered this recently: its sender is reading the answer, a batch fits in
RECENT_S = 5.0  # the foreground used the model this recently: yield to it (else: full speed)
MAX_WAIT_S = 2.0  # a batch runs after this long even while the foreground never idles


def teach_layers(blocks: int) -> list[int]:
    """The layers a taught head may read (``engine.heads.candidate_layers``, thinned), deepest kept."""
    return sorted(candidate_layers(blocks)[::-1][::TEACH_LAYER_STRIDE])


@dataclass(frozen=True)
class FeatureRequest:
    """Read ``texts``' features for the task's head: each chosen layer's hidden state at the answer
    position, and the last one with the label log-probabilities. ``layers`` None: ``teach_layers``."""

    texts: Sequence[str]
    layers: tuple[int, ...] | None = None
    request_id: str = ""

    @property
    def weight(self) -> int:
        return len(self.texts) if isinstance(self.texts, (list, tuple)) else 1


@dataclass(frozen=True)
class FeatureRows:
    """Per text: ``layers[k]`` [n, hidden], ``hidden`` [n, hidden] (the last layer), ``logprobs``
    [n, labels] (the prompt's own answer) and whether it was truncated."""

    layers: dict[int, np.ndarray]
    hidden: np.ndarray
    logprobs: np.ndarray
    truncated: tuple[bool, ...]


def read_features(scorer, texts: list[str], layers: Sequence[int]) -> FeatureRows:
    """A scorer's features of ``texts`` (either backend's ``all_features``: tensors or arrays), as numpy."""
    hidden, logprobs, truncated, by_layer = scorer.all_features(texts, list(layers))
    return FeatureRows({k: np.asarray(v, dtype=np.float32) for k, v in by_layer.items()},
                       np.asarray(hidden, dtype=np.float32), np.asarray(logprobs, dtype=np.float64), tuple(truncated))


@dataclass(eq=False)
class FeatureJob:
    task: ClassifyTask
    request: FeatureRequest
    sink: object  # engine.kinds.base.Sink
    cancelled: object = field(default=None)  # a threading.Event, set by the caller going away


class BackgroundRounds:
    """Feature batches waiting for a quiet moment; the model thread's only (see the module doc)."""

    def __init__(self, clock=time.monotonic) -> None:
        self.pending: list[FeatureJob] = []
        self._clock = clock
        self._last_end = float("-inf")
        self._last_cost = 0.0
        self._waiting_since = 0.0  # when the oldest pending batch arrived
        self._last_foreground = float("-inf")  # when the foreground last used the model

    @staticmethod
    def job(tasks: TaskRegistry, task: str, request: FeatureRequest, sink, cancelled) -> FeatureJob:
        """Check a request on the caller's thread: a classify task, a few non-empty texts."""
        spec = tasks.get(task)
        if not isinstance(spec, ClassifyTask):
            raise InvalidInput(f"Task {task!r} is a {spec.kind} task; only classify tasks have features.")
        texts = request.texts
        if (not isinstance(texts, (list, tuple)) or not 0 < len(texts) <= MAX_FEATURE_TEXTS
                or any(not isinstance(t, str) or not t.strip() for t in texts)):
            raise InvalidInput(f"Features are read for 1 to {MAX_FEATURE_TEXTS} non-empty texts at a time.")
        return FeatureJob(spec, FeatureRequest([t.strip() for t in texts], request.layers, request.request_id),
                          sink, cancelled)

    def add(self, job: FeatureJob) -> None:
        if not self.pending:
            self._waiting_since = self._clock()
        self.pending.append(job)

    def foreground_ran(self) -> None:
        """The model thread has just run others' work: batches yield to them for a while (module doc)."""
        self._last_foreground = self._clock()

    def wait_s(self) -> float | None:
        """Seconds until a batch is due while the foreground is idle (None: nothing waits)."""
        if not self.pending:
            return None
        now = self._clock()
        if now - self._last_foreground >= RECENT_S:
            return 0.0
        window = self._last_end + YIELD * self._last_cost
        return max(window - now if now < window else window + self._last_cost - now, 0.0)

    def due(self, foreground_idle: bool) -> bool:
        if not self.pending:
            return False
        now = self._clock()
        if foreground_idle:
            if now - self._last_foreground >= RECENT_S:
                return True  # nobody else lately: full speed
            waited = now - self._last_end
            if waited < YIELD * self._last_cost:
                return False
            return now - self._last_foreground <= JUST_S or waited >= (YIELD + 1) * self._last_cost
        return now - max(self._last_end, self._waiting_since) >= max(MAX_WAIT_S, (YIELD + 1) * self._last_cost)

    def run(self, backend, tasks: TaskRegistry) -> None:
        """One batch: the oldest job, answered on its sink."""
        job = self.pending.pop(0)
        if job.cancelled is not None and job.cancelled.is_set():
            return
        started = self._clock()
        try:
            if job.task.name not in tasks.tasks:
                raise InvalidInput(f"Task {job.task.name!r} was removed.")
            layers = job.request.layers
            layers = teach_layers(backend.info.blocks) if layers is None else layers
            job.sink.put([read_features(backend.classifier.scorer(job.task.name), list(job.request.texts), layers)])
        except Exception as exc:
            if not isinstance(exc, AllInOneError):
                logger.opt(exception=exc).error("reading features for task {} failed", job.task.name)
                exc = InferenceFailed()
            job.sink.put(exc)
        finally:
            self._last_end = self._clock()
            self._last_cost = self._last_end - started

    def fail_all(self, error: Exception) -> None:
        jobs, self.pending = self.pending, []
        for job in jobs:
            job.sink.put(error)
