"""The model thread's two kinds of work, one round at a time: classification batches and chat decoding.

``Engine`` calls, in its loop: ``ClassifyRounds.run`` (one batch of one task's texts), then
``ChatRounds.admit`` (no model work), ``ChatRounds.prefill`` (one chunk of at most
``PREFILL_CHUNK_TOKENS``) and ``ChatRounds.decode`` (one token for every chat, one pass). Only the model
thread calls them; each job goes back to ``Admission.release``. No torch.
"""

from __future__ import annotations

from loguru import logger

from engine.admission import Admission, ChatJob, ClassifyJob
from engine.backend import Backend
from engine.chat import ChatStream
from engine.errors import AllInOneError, InferenceFailed, InvalidInput
from engine.tasks import TaskRegistry
from engine.types import ClassifyResult, EngineConfig

__all__ = ["PREFILL_CHUNK_TOKENS", "ChatRounds", "ClassifyRounds"]

# Prompt tokens prefilled per round: a prefill is compute-bound (about 0.2 s for 64 tokens of the default
# model on two cores, docs/benchmarks.md), and a classification may wait behind one chunk.
PREFILL_CHUNK_TOKENS = 64


class ClassifyRounds:
    """Classifications waiting for the model, answered a batch per round."""

    def __init__(self, backend: Backend, admission: Admission, config: EngineConfig) -> None:
        self.backend, self.admission, self.config = backend, admission, config
        self.pending: list[ClassifyJob] = []

    def add(self, job: ClassifyJob) -> None:
        self.pending.append(job)

    def run(self, tasks: TaskRegistry) -> None:
        """One batch: the oldest job's task, jobs of that task up to ``max_batch`` texts (``tasks``: those served)."""
        task = self.pending[0].task
        batch: list[ClassifyJob] = []
        size = 0
        for job in list(self.pending):
            if job.task is not task or (batch and size + len(job.texts) > self.config.max_batch):
                continue
            self.pending.remove(job)
            self.admission.release(job)
            if job.cancelled.is_set():
                continue  # its caller timed out or went away
            batch.append(job)
            size += len(job.texts)
        if not batch:
            return
        if tasks.tasks.get(task.name) is None:  # removed after these were admitted
            for job in batch:
                job.sink.put(InvalidInput(f"Task {task.name!r} was removed."))
            return
        texts = [t for job in batch for t in job.texts]
        modes = [job.mode for job in batch for _ in job.texts]
        try:
            scored = []
            for start in range(0, len(texts), self.config.max_batch):
                end = start + self.config.max_batch
                scored.extend(self.backend.score(task.name, texts[start:end], modes[start:end]))
        except Exception as exc:
            error = exc if isinstance(exc, AllInOneError) else InferenceFailed()
            if not isinstance(exc, AllInOneError):
                logger.opt(exception=exc).error("classification failed (requests {})",
                                                ", ".join(job.request_id or "?" for job in batch))
            for job in batch:
                job.sink.put(error)
            return
        offset = 0
        for job in batch:
            part = scored[offset : offset + len(job.texts)]
            offset += len(job.texts)
            job.sink.put([ClassifyResult(task.name, s.label, s.confidence, s.scores, s.truncated, s.mode)
                          for s in part])

    def drain(self, tasks: TaskRegistry) -> None:
        """Answer everything pending (before a task change: on the definitions they were admitted with)."""
        while self.pending:
            self.run(tasks)

    def fail_all(self, error: AllInOneError) -> None:
        for job in self.pending:
            self.admission.release(job)
            if not job.cancelled.is_set():
                job.sink.put(error)
        self.pending = []


class ChatRounds:
    """Chats waiting for a slot, those whose prompts are being prefilled a chunk a round, and those
    decoding together one token a round."""

    def __init__(self, backend: Backend, admission: Admission, config: EngineConfig) -> None:
        self.backend, self.admission, self.config = backend, admission, config
        self.waiting: list[ChatJob] = []
        self.prefilling: list[ChatJob] = []
        self.active: list[ChatJob] = []

    def __bool__(self) -> bool:
        return bool(self.waiting or self.prefilling or self.active)

    def add(self, job: ChatJob) -> None:
        if job.priority:  # the watchdog's probes go first
            self.waiting.insert(0, job)
        else:
            self.waiting.append(job)

    def admit(self) -> None:
        """Give waiting chats a sequence while there are slots (a chat still prefilling holds one); a
        ``priority`` chat may take one slot past ``max_active_chats``, and is prefilled first."""
        while self.waiting:
            taken = len(self.active) + len(self.prefilling)
            if taken >= self.config.max_active_chats + (1 if self.waiting[0].priority else 0):
                break
            job = self.waiting.pop(0)
            if job.cancelled.is_set():
                self.admission.release(job)
                continue
            try:
                job.stream = self._start_stream(job)
            except Exception as exc:
                self.fail(job, exc)
                continue
            if job.priority:
                self.prefilling.insert(0, job)
            else:
                self.prefilling.append(job)

    def prefill(self) -> None:
        """One chunk (``PREFILL_CHUNK_TOKENS``) of the oldest prompt still going in; once it is all in,
        that chat decodes with the others."""
        if not self.prefilling:
            return
        job = self.prefilling[0]
        if job.cancelled.is_set():
            self.end(job)
            return
        try:
            done = job.stream.prefill(self.backend, PREFILL_CHUNK_TOKENS)
        except Exception as exc:
            self.fail(job, exc)
            return
        if done:
            self.prefilling.remove(job)
            self.active.append(job)

    def _start_stream(self, job: ChatJob) -> ChatStream:
        stream = ChatStream(
            prompt_ids=job.prompt_ids,
            max_new_tokens=job.max_new_tokens,
            temperature=job.temperature,
            deadline=job.deadline,
            notices=job.notices,
            seed=job.seed,
            updates=job.updates,
            cancelled=job.cancelled,
            repetition=job.repetition,
        )
        stream.start(self.backend)
        return stream

    def decode(self) -> None:
        """Each active chat picks its next token; then one forward pass feeds them all."""
        tokens: dict[object, int] = {}
        for job in list(self.active):
            try:
                token = None if job.cancelled.is_set() else job.stream.choose(self.backend)
            except Exception as exc:
                self.fail(job, exc)
                continue
            if token is None:
                self.end(job)
            else:
                tokens[job.stream.sequence] = token
        if not tokens:
            return
        try:
            self.backend.step(tokens)
        except Exception as exc:  # NaN/inf or a broken model: every chat in the step fails, none gets garbage
            for job in list(self.active):
                self.fail(job, exc)
            self.backend.reset()

    def end(self, job: ChatJob) -> None:
        """Take a chat out of the batch (or the prefill line) and free its cache and slot."""
        if job in self.active:
            self.active.remove(job)
        if job in self.prefilling:
            self.prefilling.remove(job)
        if job.stream is not None:
            job.stream.release(self.backend)
        self.admission.release(job)

    def fail(self, job: ChatJob, exc: Exception) -> None:
        if not isinstance(exc, AllInOneError):
            logger.opt(exception=exc).error("chat generation failed (request {})", job.request_id or "?")
            exc = InferenceFailed()
        job.updates.put(exc)
        self.end(job)

    def fail_all(self, error: AllInOneError) -> None:
        chats = self.waiting + self.prefilling + self.active
        self.waiting, self.prefilling, self.active = [], [], []
        self.backend.reset()  # dropped whole, not row by row: every chat in it fails
        for job in chats:
            self.fail(job, error)
