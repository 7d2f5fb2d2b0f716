"""Linear heads for classify tasks: how they are named, stored, found, checked and reported. No torch.

A task with an ``examples_file`` answers in ``prompt`` mode (label scores) or ``head`` mode (a linear
layer on a hidden state, fitted by ``python -m ops.heads fit``). A head file lives at
``heads/<task>@<model id>.json`` beside the tasks file and records its model's identity and its task's
fingerprint (the staleness key: prompt, labels, the examples file's bytes), and ``fitted_on`` what the
weights saw, which holds the examples file. One that does not match is not used; ``HeadState`` says why."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace
from enum import Enum
from pathlib import Path

from loguru import logger

from engine.atomic_file import write_json_atomically
from engine.errors import ConfigError
from engine.kinds.classify import ClassifyTask, HeadExamples

__all__ = [
    "FORMAT",
    "FORMATS",
    "FittedOn",
    "HeadFile",
    "HeadState",
    "HeadStatus",
    "LAST",
    "LAYER_TOLERANCE",
    "ModelHeads",
    "candidate_layers",
    "choose_layer",
    "find_head",
    "fitting_source",
    "head_path",
    "keyed_to_task",
    "model_identity",
    "read_head",
    "rekey",
    "task_fingerprint",
    "write_head",
]

FORMAT = "allinone-linear-head-v3"  # v3: ``fitted_on`` may record the examples the weights saw (HeadFile)
# v1: the last hidden state, then label log-probs (no ``layer``); v2: ``layer`` says what the weights read.
FORMATS = ("allinone-linear-head-v1", "allinone-linear-head-v2", FORMAT)
LAYER_TOLERANCE = 0.005  # a shallower layer within half a point of the best cross-validated accuracy wins
LAST = "last"  # the candidate that reads the last layer and the label scores (a v1 head)


class HeadStatus(str, Enum):
    READY = "ready"  # fitted for this task and this model: ``head`` mode answers
    NONE = "none"  # the task names no examples file: prompt mode only
    MISSING = "missing"  # examples, but no head fitted for this model yet
    STALE = "stale"  # the task or its examples changed since the head was fitted
    BROKEN = "broken"  # the head's file cannot be read


@dataclass(frozen=True)
class HeadState:
    """Whether a task's head answers on the loaded model, and why (for /ready, the Status tab, logs)."""

    task: str
    status: HeadStatus
    detail: str

    @property
    def ready(self) -> bool:
        return self.status is HeadStatus.READY

    def to_api(self) -> dict:
        return {"status": self.status.value, "detail": self.detail}


@dataclass(frozen=True)
class FittedOn:
    """The examples a head's weights were fitted on: provenance, not the staleness key. They may be a
    larger set than the task's examples file (``ops.heads fit --examples``), which they must contain."""

    file: str  # its name, for people (a path relative to the repository where it lies in it)
    sha256: str  # of its bytes
    rows: int
    task_sha256: str  # the task's fingerprint with this file as its examples file: what the weights depend on


@dataclass(frozen=True)
class HeadFile:
    """One fitted head, as stored: what it was fitted on, and its weights (labels x features)."""

    task: str
    task_sha256: str
    model: str  # name@version it was fitted on (for people; ``model_id`` is what is checked)
    model_id: str
    precision: str  # the weights' format while fitting (the head is used with any format)
    labels: list[str]
    examples: int
    l2: float
    tuning_accuracy: float  # on the examples themselves
    cv_accuracy: float  # 5-fold cross-validation on the examples: the honest estimate
    fitted: str  # UTC time
    weight: list[list[float]]  # [labels][features]: hidden size, plus the labels where ``layer`` is None
    bias: list[float]
    format: str = FORMAT
    # The hidden state read: after ``layer`` transformer blocks (early exit: classification runs no
    # further), or None for the last one (after the final norm) followed by the label log-probabilities.
    layer: int | None = None
    layer_cv: dict[str, float] | None = None  # cross-validated accuracy of each candidate ("last": None)
    # None: fitted on the task's examples file as ``task_sha256`` fingerprints it (heads before v3, and
    # heads fitted in the app). ``task_sha256`` is always the staleness key: the task's own examples file.
    fitted_on: FittedOn | None = None

    @property
    def reads(self) -> str:
        return "the last layer and the label scores" if self.layer is None else f"layer {self.layer}"

    def describe(self) -> str:
        return (f"linear head on {self.reads}, fitted {self.fitted[:10]} on {self.examples} examples with "
                f"{self.model} ({self.precision}); cross-validated accuracy {self.cv_accuracy:.3f}")


def candidate_layers(blocks: int) -> list[int]:
    """The layers a head may read: from a quarter of the way down to the last block but one (the
    early layers probe poorly: docs/benchmarks.md, "Early exit")."""
    return list(range(max(1, blocks // 4), blocks))


def choose_layer(cv: dict[str, float], tolerance: float = LAYER_TOLERANCE) -> str:
    """The candidate to keep, from each one's cross-validated accuracy: the shallowest within
    ``tolerance`` of the best (``LAST`` counts as the deepest). Deterministic."""
    best = max(cv.values())
    depth = {name: (float("inf") if name == LAST else int(name)) for name in cv}
    return min((name for name, accuracy in cv.items() if accuracy >= best - tolerance), key=depth.__getitem__)


def task_fingerprint(task: ClassifyTask) -> str:
    """SHA-256 of everything that shapes the head's inputs: the prompt, the labels, their spellings and
    biases, and the examples file's bytes. Titles and UI examples do not count."""
    source = task.head_examples
    body = {
        "labels": list(task.labels),
        "instruction": task.instruction,
        "examples": [[e.text, e.label] for e in task.examples],
        "aliases": {k: list(v) for k, v in sorted(task.aliases.items())},
        "input_template": task.input_template,
        "label_bias": dict(sorted(task.label_bias.items())),
        "head_examples_sha256": None if source is None else source.sha256,
    }
    return hashlib.sha256(json.dumps(body, ensure_ascii=False, sort_keys=True).encode("utf-8")).hexdigest()


def fitting_source(task: ClassifyTask, examples: HeadExamples, name: str) -> FittedOn:
    """What a head of ``task`` fitted on ``examples`` records (``name``: the file, for people). They must
    hold every row of the task's own examples file, which the staleness key stands for."""
    own = task.head_examples
    assert own is not None
    have = {(e.text, e.label) for e in examples.examples}
    missing = [e for e in own.examples if (e.text, e.label) not in have]
    if missing:
        raise ConfigError(f"{examples.path}: {len(missing)} of the {len(own.examples)} rows of the task's examples "
                          f"file {own.path.name} are not in it (the first: {missing[0].text[:60]!r}, "
                          f"{missing[0].label!r}); a head is fitted on that file or on a larger set holding it.")
    return FittedOn(name, examples.sha256, len(examples.examples),
                    task_fingerprint(replace(task, head_examples=examples)))


def keyed_to_task(task: ClassifyTask, head: HeadFile, source: FittedOn) -> HeadFile:
    """``head``, fitted on ``source``, stored as ``task``'s: ``task_sha256`` is the task's own fingerprint
    (editing its examples file or prompt makes the head stale), ``fitted_on`` what the weights saw."""
    return replace(head, task_sha256=task_fingerprint(task), fitted_on=source, format=FORMAT)


def rekey(task: ClassifyTask, head: HeadFile, examples: HeadExamples, name: str) -> HeadFile:
    """``head`` recorded again as fitted on ``examples`` (``name``), its weights untouched, for ``task``
    whose examples file is now a part of them: no refit. Refused unless the head's own record proves it
    was fitted on exactly those bytes with this task's prompt and labels."""
    source = fitting_source(task, examples, name)
    seen = head.fitted_on.task_sha256 if head.fitted_on is not None else head.task_sha256
    if seen != source.task_sha256 or head.examples != source.rows or head.labels != list(task.labels):
        raise ConfigError(f"The head {head.task}@{head.model_id[:16]} was not fitted on {name} with this task's "
                          f"prompt and labels (its record says otherwise): name the file it was fitted on, or fit "
                          f"it again (`python -m ops.heads fit --task {task.name} --examples FILE`).")
    return keyed_to_task(task, head, source)


def model_identity(model_dir: Path) -> str:
    """SHA-256 naming a model's weights: from the version's MANIFEST when it has one (cheap), else
    of the weight files' bytes (a local directory outside the store).

    The safetensors name the model where a version has them, the GGUF where it has only that: a
    version that keeps both (the default model: safetensors converted from its GGUF) is one model,
    and both backends find the same head for it (the llamacpp backend's answers are the torch
    backend's within the accuracy gate, docs/benchmarks.md)."""
    model_dir = Path(model_dir)
    digest = hashlib.sha256()
    try:
        manifest = json.loads((model_dir / "MANIFEST").read_text(encoding="utf-8"))["files"]
        top_level = {name: entry["sha256"] for name, entry in manifest.items() if "/" not in name}
        weights = sorted((name, sha) for name, sha in top_level.items() if name.endswith(".safetensors"))
        weights = weights or sorted((name, sha) for name, sha in top_level.items() if name.endswith(".gguf"))
    except (OSError, ValueError, KeyError, TypeError):
        weights = []
    if weights:
        for name, sha in weights:
            digest.update(f"{name}:{sha}\n".encode())
        return digest.hexdigest()
    files = sorted(model_dir.glob("*.safetensors")) or sorted(model_dir.glob("*.gguf"))
    for path in files:
        digest.update(f"{path.name}:".encode())
        with open(path, "rb") as file:
            while chunk := file.read(1 << 24):
                digest.update(chunk)
    return digest.hexdigest()


def head_path(task: ClassifyTask, model_id: str) -> Path:
    """Where ``task``'s head for the model ``model_id`` lives: ``heads/<task>@<id>.json`` beside the tasks file."""
    assert task.head_examples is not None
    return task.head_examples.heads_dir / f"{task.name}@{model_id[:16]}.json"


def find_head(task: ClassifyTask, model_id: str) -> tuple[HeadFile | None, HeadState]:
    """The task's head for this model if there is a usable one, and its state either way."""
    if task.head_examples is None:
        return None, HeadState(task.name, HeadStatus.NONE, "prompt mode only (the task names no examples file)")
    path = head_path(task, model_id)
    if not path.exists():
        return None, HeadState(task.name, HeadStatus.MISSING,
                               f"no head fitted for this model yet ({path.name}); fit one with "
                               f"`python -m ops.heads fit --task {task.name}`")
    try:
        head = read_head(path)
    except ConfigError as exc:
        return None, HeadState(task.name, HeadStatus.BROKEN, str(exc))
    if head.task_sha256 != task_fingerprint(task) or head.labels != list(task.labels):
        return None, HeadState(task.name, HeadStatus.STALE,
                               f"{path.name} was fitted before the task or its examples changed; refit it with "
                               f"`python -m ops.heads fit --task {task.name}`")
    return head, HeadState(task.name, HeadStatus.READY, head.describe())


class ModelHeads:
    """Finds classify tasks' heads for one loaded model, as a backend prepares its scorers: the model's
    identity is read once, when the first task with examples needs it, and each such task's state is
    logged."""

    def __init__(self, model_dir: Path) -> None:
        self._model_dir = Path(model_dir)
        self._model_id: str | None = None
        self._found: dict[str, HeadFile | None] = {}  # task -> the head last found for it

    def find(self, task: ClassifyTask) -> tuple[HeadFile | None, HeadState]:
        if task.head_examples is None:
            return find_head(task, "")
        if self._model_id is None:
            self._model_id = model_identity(self._model_dir)
        head, state = find_head(task, self._model_id)
        logger.info("task {}: {}", task.name, state.detail)
        self._found[task.name] = head
        return head, state

    def refind(self, task: ClassifyTask) -> tuple[bool, HeadFile | None, HeadState]:
        """Look again for the head of a task whose scorer is kept: (whether it changed since it was last
        found, the head, its state). A head fitted while the model serves (``ops.api.teach``) comes in so."""
        if self._model_id is None and task.head_examples is not None:
            self._model_id = model_identity(self._model_dir)
        head, state = find_head(task, self._model_id or "")
        changed = head != self._found.get(task.name)
        if changed:
            logger.info("task {}: {}", task.name, state.detail)
            self._found[task.name] = head
        return changed, head, state


def read_head(path: Path) -> HeadFile:
    """A stored head, checked; ``ConfigError`` names the file and what is wrong."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("format") not in FORMATS:
            raise ConfigError(f"{path}: format {data.get('format')!r}, this version reads {' or '.join(FORMATS)}.")
        if data.get("fitted_on") is not None:
            data["fitted_on"] = FittedOn(**data["fitted_on"])
        head = HeadFile(**data)
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        raise ConfigError(f"Cannot read the head {path}: {exc}") from exc
    width = len(head.weight[0]) if head.weight else 0
    if len(head.weight) != len(head.labels) or len(head.bias) != len(head.labels) or any(
            len(row) != width for row in head.weight):
        raise ConfigError(f"{path}: its weights do not match its {len(head.labels)} labels.")
    return head


def write_head(task: ClassifyTask, head: HeadFile) -> Path:
    """Store ``head`` atomically (``engine.atomic_file``), readable by whichever user serves the app."""
    path = head_path(task, head.model_id)
    write_json_atomically(path, asdict(head))
    return path
