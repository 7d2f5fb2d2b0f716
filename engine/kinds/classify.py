"""The ``classify`` kind: label each text with one of the task's labels. Pure: no torch.

Owns the kind's task (``ClassifyTask``, parsed from TOML or JSON), its request and result types, the edge's
check, the worker's admission (``ClassifyGate``: room in line, head or prompt) and its rounds (one batch of
one task's texts per round, ``ClassifyRounds``). The backend scores; ``engine.kinds`` registers the kind.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from loguru import logger

from engine.errors import AllInOneError, Busy, ConfigError, InferenceFailed, InvalidInput
from engine.kinds.base import Kind, RequestLimits, Sink, LimitExceeded, check_unicode, str_list
from engine.types import ClassifyMode, EngineConfig, TaskInfo, TaskKind

if TYPE_CHECKING:
    from engine.backend import Backend

__all__ = ["ClassifyExample", "ClassifyTask", "HeadExamples", "ClassifyRequest", "ClassifyResult", "ClassifyJob",
           "ClassifyGate", "ClassifyRounds", "KIND", "HEADS_DIR", "MAX_HEAD_EXAMPLES", "MAX_LABEL_BIAS",
           "read_head_examples"]

HEADS_DIR = "heads"  # a task's fitted heads (engine.heads), beside its tasks file
MAX_HEAD_EXAMPLES = 5000  # fitting reads every example through the model: bound its time
MAX_LABEL_BIAS = 10.0  # a log-score offset past this would decide every answer on its own
_LANGUAGE = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})?$")  # BCP 47, as the browser names it


# ----- the task ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClassifyExample:
    text: str
    label: str


@dataclass(frozen=True)
class HeadExamples:
    """A classify task's labelled examples file, read and checked at load, and where its heads are kept."""

    path: Path
    examples: tuple[ClassifyExample, ...]
    sha256: str  # of the file's bytes: a head records it, so an edited file makes the head stale
    heads_dir: Path  # ``heads/`` beside the tasks file (engine.heads)


@dataclass(frozen=True)
class ClassifyTask:
    name: str
    title: str
    labels: tuple[str, ...]
    instruction: str
    examples: tuple[ClassifyExample, ...] = ()
    aliases: dict[str, tuple[str, ...]] = field(default_factory=dict)
    input_template: str = "{text}"
    ui_examples: tuple[str, ...] = ()
    label_bias: dict[str, float] = field(default_factory=dict)  # label -> added to its log-score
    head_examples: HeadExamples | None = None  # what a linear head is fitted on (engine.heads)
    probes: tuple[ClassifyExample, ...] = ()  # known answers the self-test checks
    display: dict[str, tuple[str, ...]] = field(default_factory=dict)  # language -> the labels' names in the UI
    kind: TaskKind = TaskKind.CLASSIFY


def parse(name: str, table: dict, where: str, base_dir: Path | None) -> ClassifyTask:
    labels = str_list(table, "labels", where)
    if len(labels) < 2 or len(set(labels)) != len(labels):
        raise ConfigError(f"{where}: a classify task needs at least two distinct labels.")
    instruction = table.get("instruction")
    if not isinstance(instruction, str) or not instruction.strip():
        raise ConfigError(f"{where}: 'instruction' is required.")
    aliases_table = table.get("aliases", {})
    if not isinstance(aliases_table, dict) or any(k not in labels for k in aliases_table):
        raise ConfigError(f"{where}: 'aliases' keys must be labels.")
    bias_table = table.get("label_bias", {})
    if not isinstance(bias_table, dict) or any(k not in labels for k in bias_table):
        raise ConfigError(f"{where}: 'label_bias' keys must be labels.")
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) or not -MAX_LABEL_BIAS <= v <= MAX_LABEL_BIAS
           for v in bias_table.values()):
        raise ConfigError(f"{where}: 'label_bias' values must be numbers from {-MAX_LABEL_BIAS} to {MAX_LABEL_BIAS}.")
    input_template = table.get("input_template", "{text}")
    if not isinstance(input_template, str) or input_template.count("{text}") != 1:
        raise ConfigError(f"{where}: 'input_template' must contain '{{text}}' exactly once.")
    examples_file = table.get("examples_file")
    if examples_file is not None and base_dir is None:
        raise ConfigError(f"{where}: 'examples_file' is for tasks in a tasks file, not for tasks defined at run time.")
    if examples_file is not None and (not isinstance(examples_file, str) or not examples_file.strip()):
        raise ConfigError(f"{where}: 'examples_file' must be a file name (relative to the tasks file).")
    if examples_file is not None and not (base_dir / examples_file).is_file():
        raise ConfigError(f"{where}: 'examples_file' is {examples_file!r}, relative to the tasks file's folder. Cannot "
                          f"read the examples file {base_dir / examples_file}: "
                          f"{'a folder' if (base_dir / examples_file).is_dir() else 'no such file'}.")
    return ClassifyTask(
        name=name,
        title=table.get("title", name.title()),
        labels=labels,
        instruction=instruction.strip(),
        examples=_labelled(table, "examples", labels, where),
        aliases={k: str_list(aliases_table, k, f"{where}.aliases") for k in aliases_table},
        input_template=input_template,
        ui_examples=str_list(table, "ui_examples", where),
        label_bias={k: float(v) for k, v in bias_table.items()},
        head_examples=None if examples_file is None else read_head_examples(base_dir / examples_file, labels,
                                                                            base_dir / HEADS_DIR),
        probes=_labelled(table, "probes", labels, where),
        display=_display(table, labels, where),
    )


def _display(table: dict, labels: tuple[str, ...], where: str) -> dict[str, tuple[str, ...]]:
    """``display``: per language (``zh``, ``en``, ``zh-TW``...), the labels' names in label order."""
    display = table.get("display", {})
    if not isinstance(display, dict) or not all(isinstance(k, str) and _LANGUAGE.match(k) for k in display):
        raise ConfigError(f"{where}: 'display' must map language codes (such as 'zh') to lists of label names.")
    names = {lang: str_list(display, lang, f"{where}.display") for lang in display}
    for lang, shown in names.items():
        if len(shown) != len(labels):
            raise ConfigError(f"{where}: display.{lang} names {len(shown)} labels; the task has {len(labels)} "
                              f"({', '.join(labels)}), in that order.")
    return names


def _labelled(table: dict, key: str, labels: tuple[str, ...], where: str) -> tuple[ClassifyExample, ...]:
    """``examples`` or ``probes``: a list of ``{"text", "label"}`` with labels of the task."""
    items = table.get(key, [])
    if not isinstance(items, list):
        raise ConfigError(f"{where}: '{key}' must be a list of {{text, label}} tables.")
    out = []
    for i, item in enumerate(items):
        if (not isinstance(item, dict) or item.get("label") not in labels or not isinstance(item.get("text"), str)
                or not item["text"].strip() or set(item) != {"text", "label"}):
            raise ConfigError(f"{where}: {key}[{i}] needs a 'text' and a 'label' from {list(labels)}.")
        out.append(ClassifyExample(text=item["text"], label=item["label"]))
    return tuple(out)


def read_head_examples(path: Path, labels: tuple[str, ...], heads_dir: Path) -> HeadExamples:
    """The examples file of a classify task; every problem is a ``ConfigError`` naming the file and line."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"Cannot read the examples file {path}: {exc.strerror or exc}.") from exc
    examples = []
    for number, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line.decode("utf-8"))
        except UnicodeDecodeError:
            raise ConfigError(f"{path}:{number}: not UTF-8 text.") from None
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}:{number}: not a JSON object ({exc.msg}).") from None
        if not isinstance(row, dict) or not isinstance(row.get("text"), str) or not row["text"].strip():
            raise ConfigError(f"{path}:{number}: each line needs a non-empty 'text'.")
        if row.get("label") not in labels:
            raise ConfigError(f"{path}:{number}: 'label' must be one of {list(labels)}, not {row.get('label')!r}.")
        examples.append(ClassifyExample(text=row["text"].strip(), label=row["label"]))
    counts = {label: sum(e.label == label for e in examples) for label in labels}
    if min(counts.values()) < 2:
        raise ConfigError(f"{path}: a head needs at least two examples of every label; it has {counts}.")
    if len(examples) > MAX_HEAD_EXAMPLES:
        raise ConfigError(f"{path}: {len(examples)} examples, the limit is {MAX_HEAD_EXAMPLES}.")
    return HeadExamples(path, tuple(examples), hashlib.sha256(data).hexdigest(), heads_dir)


def info(task: ClassifyTask) -> TaskInfo:
    modes = tuple(m.value for m in ClassifyMode) if task.head_examples is not None else ()
    return TaskInfo(task.name, task.kind, task.title, task.labels, task.ui_examples, modes, task.display)


# ----- requests and results --------------------------------------------------------------------------


@dataclass(frozen=True)
class ClassifyRequest:
    """Label each of ``texts`` (checked at the edge: ``check``)."""

    texts: Sequence[str]
    request_id: str = ""  # for the logs of both processes (set by the metrics wrapper)
    mode: ClassifyMode | str = ClassifyMode.AUTO  # a ``ClassifyMode`` once checked

    @property
    def weight(self) -> int:
        """Queue depth this request adds: one per text."""
        return len(self.texts) if isinstance(self.texts, (list, tuple)) else 1


@dataclass(frozen=True)
class ClassifyResult:
    task: str
    label: str
    confidence: float
    scores: dict[str, float]
    truncated: bool
    mode: ClassifyMode = ClassifyMode.PROMPT  # the mode that answered: ``prompt`` or ``head``, never ``auto``

    def to_api(self) -> dict:
        """The ``/sentiment`` API shape (the public contract, ``../shared/DESIGN.md``)."""
        return {
            "label": self.label,
            "confidence": round(self.confidence, 4),
            "scores": {k: round(v, 4) for k, v in self.scores.items()},
            "truncated": self.truncated,
            "mode": self.mode.value,
        }


def check(request: ClassifyRequest, limits: RequestLimits) -> ClassifyRequest:
    """The edge's validation: a list of 1 to ``max_lines`` non-empty texts within the size limits, and a
    known mode. Returns the request as admitted (texts stripped, the mode a ``ClassifyMode``)."""
    texts = request.texts
    if isinstance(texts, str) or not isinstance(texts, (list, tuple)):
        raise InvalidInput("Expected a list of texts.")
    if len(texts) > limits.max_lines:
        raise LimitExceeded(f"Too many lines: {len(texts)}, the limit is {limits.max_lines} per request.")
    for i, text in enumerate(texts):
        if isinstance(text, str) and len(text) > limits.max_message_chars:
            raise LimitExceeded(f"Line {i + 1} too long: {len(text)} characters, the limit is "
                                f"{limits.max_message_chars}.")
        if isinstance(text, str):
            check_unicode(text, f"Line {i + 1}")
    if not texts or any(not isinstance(t, str) or not t.strip() for t in texts):
        raise InvalidInput("Please enter some text.")
    return ClassifyRequest([t.strip() for t in texts], request.request_id, ClassifyMode.parse(request.mode))


# ----- in the worker -------------------------------------------------------------------------------


@dataclass(eq=False)
class ClassifyJob:
    task: ClassifyTask
    texts: list[str]
    sink: Sink
    request_id: str = ""
    mode: ClassifyMode = ClassifyMode.PROMPT  # resolved: PROMPT or HEAD
    cancelled: threading.Event = field(default_factory=threading.Event)
    kind = TaskKind.CLASSIFY


class ClassifyGate:
    """Admits classifications while fewer than ``max_pending_classify`` texts wait, and resolves ``auto``."""

    def __init__(self, backend: "Backend", config: EngineConfig) -> None:
        self.backend, self.config = backend, config
        self._lock = threading.Lock()
        self._queued_texts = 0

    def admit(self, task: ClassifyTask, request: ClassifyRequest, sink: Sink) -> ClassifyJob:
        job = ClassifyJob(task, list(request.texts), sink, request.request_id, self._mode(task, request.mode))
        with self._lock:
            if self._queued_texts + len(job.texts) > self.config.max_pending_classify:
                raise Busy()
            self._queued_texts += len(job.texts)
        return job

    def release(self, job: ClassifyJob) -> None:
        with self._lock:
            self._queued_texts -= len(job.texts)

    def load(self) -> int:
        with self._lock:
            return self._queued_texts

    def _mode(self, task: ClassifyTask, asked: ClassifyMode) -> ClassifyMode:
        """``auto`` is the head where it is ready on this model (only the worker knows), else the prompt."""
        if asked == ClassifyMode.PROMPT:  # ``==``: a str enum, so a caller inside the worker may pass its value
            return ClassifyMode.PROMPT
        state = self.backend.classifier.head_states().get(task.name)
        if state is not None and state.ready:
            return ClassifyMode.HEAD
        if asked == ClassifyMode.HEAD:
            raise InvalidInput(f"Task {task.name!r} cannot answer in head mode on this model: "
                               f"{state.detail if state else 'no head'}.")
        return ClassifyMode.PROMPT


class ClassifyRounds:
    """Classifications waiting for the model, answered a batch per round."""

    def __init__(self, backend: "Backend", gate: ClassifyGate, config: EngineConfig) -> None:
        self.backend, self.gate, self.config = backend, gate, config
        self.pending: list[ClassifyJob] = []

    def __bool__(self) -> bool:
        return bool(self.pending)

    def add(self, job: ClassifyJob) -> None:
        self.pending.append(job)

    def prepare(self, tasks: list[ClassifyTask]) -> None:
        """Build the scorers (prompt prefix cached, head loaded) of the tasks served from now on."""
        self.backend.classifier.prepare(tasks, self.config.max_input_tokens)

    def run(self, tasks) -> None:
        """One batch: the oldest job's task, jobs of that task up to ``max_batch`` texts (``tasks``: those served)."""
        task = self.pending[0].task
        batch: list[ClassifyJob] = []
        size = 0
        for job in list(self.pending):
            if job.task is not task or (batch and size + len(job.texts) > self.config.max_batch):
                continue
            self.pending.remove(job)
            self.gate.release(job)
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
        self._answer(task, batch)

    def _answer(self, task: ClassifyTask, batch: list[ClassifyJob]) -> None:
        texts = [t for job in batch for t in job.texts]
        modes = [job.mode for job in batch for _ in job.texts]
        try:
            scored = []
            for start in range(0, len(texts), self.config.max_batch):
                end = start + self.config.max_batch
                scored.extend(self.backend.classifier.score(task.name, texts[start:end], modes[start:end]))
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

    def drain(self, tasks) -> None:
        """Answer everything pending (before a task change: on the definitions they were admitted with)."""
        while self.pending:
            self.run(tasks)

    def fail_all(self, error: AllInOneError) -> None:
        for job in self.pending:
            self.gate.release(job)
            if not job.cancelled.is_set():
                job.sink.put(error)
        self.pending = []


KIND = Kind(
    name=TaskKind.CLASSIFY,
    task_type=ClassifyTask,
    request_type=ClassifyRequest,
    fields=frozenset({"labels", "instruction", "input_template", "examples", "aliases", "label_bias",
                      "examples_file", "probes", "display"}),
    parse=parse,
    info=info,
    check=check,
    gate=ClassifyGate,
    rounds=ClassifyRounds,
)
