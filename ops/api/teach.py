"""Teaching a runtime classify task by example: its examples, the fit of its head, what GET shows. No torch.

``Teacher`` serves ``PUT /admin/tasks/{name}/examples``, ``POST .../fit`` and ``GET /admin/tasks/{name}``.
A fit (one at a time) holds out a fifth, reads features on the serving worker in low-priority rounds
(``engine.teach``), fits in a nice'd child (``engine.teach_fit``) and stores the head for this model.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path

import numpy as np
from loguru import logger

from engine.atomic_file import write_json_atomically
from engine.errors import AllInOneError, InvalidInput, ModelUnavailable
from engine.heads import LAST, LAYER_TOLERANCE, HeadFile, model_identity, read_head, task_fingerprint, write_head
from engine.tasks import ClassifyTask
from engine.teach import FeatureRequest, FeatureRows
from engine.teach_fit import FEATURES_LAYER_PREFIX
from ops.api.runtime_tasks import NotAClassifyTask, RuntimeTasks, TaskNotFound
from ops.api.teach_examples import check_examples, examples_jsonl, parse_examples
from ops.common.paths import REPO_ROOT
from ops.serving.service import ModelService

__all__ = ["FitBusy", "FitFailed", "FitStage", "NoExamples", "Teacher", "holdout_mask"]

HOLDOUT_SHARE = 0.2  # of each label's examples, held out to compare the prompt with the head
BATCH = 4  # texts per low-priority round: about as long as a user's classification batch
READ_SHARE = 0.8  # of the progress bar: reading the features; the rest is the fit
RETRIES = 3  # a batch lost to a recovery is sent again, to the same model version
FITS_DIR = "fits"  # reports, beside the heads: fits/<task>@<model id>.json
CODE_ROOT = str(REPO_ROOT)


class FitStage(str, Enum):
    READING = "reading"
    FITTING = "fitting"
    DONE = "done"
    FAILED = "failed"


class FitBusy(InvalidInput):
    """A fit is running already (one at a time: two cores are shared with the users)."""


class NoExamples(InvalidInput):
    """The task has no examples to fit on."""


class FitFailed(AllInOneError):
    """The fit stopped (the model changed, the child process failed); nothing was stored."""


@dataclass
class FitStatus:
    task: str
    model: str
    stage: FitStage = FitStage.READING
    fraction: float = 0.0
    started: str = field(default_factory=lambda: _now())
    finished: str | None = None
    error: str | None = None
    result: dict | None = None

    def to_api(self) -> dict:
        return {**asdict(self), "stage": self.stage.value, "fraction": round(self.fraction, 3)}


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def holdout_mask(labels: list[str], share: float = HOLDOUT_SHARE) -> np.ndarray:
    """True for the rows fitted on, False for the held-out ones: per label, ``share`` of its rows (at
    least one), evenly spread over its rows in order. Deterministic."""
    train = np.ones(len(labels), dtype=bool)
    for label in sorted(set(labels)):
        rows = [i for i, x in enumerate(labels) if x == label]
        held = max(1, round(share * len(rows)))
        for j in range(held):
            train[rows[int((j + 0.5) * len(rows) / held)]] = False
    return train


class Teacher:
    """The teach-by-example actions (module doc); ``AdminActions`` checks the token first."""

    def __init__(self, service: ModelService, tasks: RuntimeTasks, python: str = sys.executable) -> None:
        self.service, self.tasks, self._python = service, tasks, python
        self._lock = threading.Lock()
        self._fits: dict[str, FitStatus] = {}  # the latest fit of each task since the app started
        self._running: str | None = None
        self._model_ids: dict[Path, str] = {}

    # ----- the actions ----------------------------------------------------------------------

    def put_examples(self, name: str, data: bytes, content_type: str | None = None) -> dict:
        rows, kind = parse_examples(data, content_type)
        task = self.tasks.put_examples(name, lambda task: check_examples(rows, task), examples_jsonl,
                                       self.service.update_tasks)
        examples = task.head_examples.examples
        logger.info("task {}: {} examples", name, len(examples))
        return {"task": name, "format": kind.value, "examples": len(examples),
                "per_label": {label: sum(e.label == label for e in examples) for label in task.labels}}

    def start_fit(self, name: str) -> dict:
        task = self._taught(name)
        worker = self.service.supervisor.serving
        if worker is None or worker.model_path is None or not self.service.readiness.snapshot().ready:
            raise ModelUnavailable()
        with self._lock:
            if self._running is not None:
                raise FitBusy(f"A fit of task {self._running!r} is running; one fit at a time. Try again when "
                              "it is done.")
            status = self._fits[name] = FitStatus(name, worker.model_label or "?")
            self._running = name
        model = (Path(worker.model_path), (worker.precision or ("?", ""))[0])
        threading.Thread(target=self._fit, args=(task, model, status), name=f"fit-{name}", daemon=True).start()
        return {"task": name, "fit": status.to_api()}

    def describe(self, name: str) -> dict:
        """The task, its examples, its head per model version, and its fit (running, or the last one)."""
        task = self._task(name)
        runtime = self.tasks.runtime_tables().get(name)
        out = {"task": name, "kind": task.kind, "source": "shipped" if runtime is None else "runtime",
               "definition": runtime}
        if not isinstance(task, ClassifyTask):
            return out
        source = task.head_examples
        out["labels"] = list(task.labels)
        out["examples"] = None if source is None else {
            "count": len(source.examples),
            "per_label": {label: sum(e.label == label for e in source.examples) for label in task.labels}}
        out["heads"] = self._heads(task)
        serving = self.service.supervisor.serving
        model_id = self._model_id(serving.model_path) if serving is not None and serving.model_path else None
        ready = [h for h in out["heads"] if h["status"] == "ready" and h["model_id"] == (model_id or "")[:16]]
        out["serving"] = {"model": serving.model_label if serving is not None else None,
                          "mode": "head" if ready else "prompt"}
        with self._lock:
            fit = self._fits.get(name)
        out["fit"] = fit.to_api() if fit is not None else self._report(name, model_id)
        return out

    def forget(self, name: str) -> None:
        """The task was removed: its reports go too (``RuntimeTasks.remove`` took its examples and heads)."""
        with self._lock:
            self._fits.pop(name, None)
        for report in (self.tasks.heads_dir.parent / FITS_DIR).glob(f"{name}@*.json"):
            report.unlink(missing_ok=True)

    # ----- the fit ------------------------------------------------------------------------

    def _task(self, name: str):
        task = self.tasks.registry().tasks.get(name)
        if task is None:
            raise TaskNotFound(f"There is no task {name!r}.")
        return task

    def _taught(self, name: str) -> ClassifyTask:
        task = self._task(name)
        if not isinstance(task, ClassifyTask):
            raise NotAClassifyTask(f"Task {name!r} is a {task.kind} task; only classify tasks have heads.")
        if name not in self.tasks.runtime_tables():
            raise NotAClassifyTask(f"Task {name!r} is a shipped task: fit its head with "
                                   f"`python -m ops.heads fit --task {name}`.")
        if task.head_examples is None:
            raise NoExamples(f"Task {name!r} has no examples yet: PUT /admin/tasks/{name}/examples first.")
        return task

    def _fit(self, task: ClassifyTask, model: tuple[Path, str], status: FitStatus) -> None:
        try:
            result = self._fit_steps(task, *model, status)
            status.result, status.stage = result, FitStage.DONE
            logger.info("task {}: head fitted on {} in {:.0f} s", task.name, result["reads"], result["seconds"])
        except Exception as exc:  # the report says why; nothing was stored
            if not isinstance(exc, AllInOneError):
                logger.opt(exception=exc).error("the fit of task {} failed", task.name)
            status.error, status.stage = str(exc), FitStage.FAILED
            logger.warning("task {}: the fit failed: {}", task.name, exc)
        finally:
            status.finished = _now()
            with self._lock:
                self._running = None

    def _fit_steps(self, task: ClassifyTask, model_path: Path, precision: str, status: FitStatus) -> dict:
        started = time.monotonic()
        examples = task.head_examples.examples
        labels = [e.label for e in examples]
        train = holdout_mask(labels)
        rows = self._read([e.text for e in examples], task.name, model_path, status)
        read_s = time.monotonic() - started
        status.stage = FitStage.FITTING
        fitted = self._run_fit(rows, np.array([task.labels.index(x) for x in labels]), train, len(task.labels),
                               status)
        if self.tasks.registry().tasks.get(task.name) != task:
            raise FitFailed(f"Task {task.name!r} or its examples changed during the fit; fit it again.")
        model_id = self._model_id(model_path)
        head = HeadFile(task.name, task_fingerprint(task), status.model, model_id, precision,
                        list(task.labels), int(train.sum()), fitted["l2"], fitted["tuning_accuracy"],
                        fitted["cv"][fitted["chosen"]], _now(), fitted["weight"], fitted["bias"],
                        layer=None if fitted["chosen"] == LAST else int(fitted["chosen"]), layer_cv=fitted["cv"])
        write_head(task, head)
        self.tasks.refresh(self.service.update_tasks)  # the worker finds the new head: ``head`` mode now
        report = _report(task, head, fitted, rows, train, np.array([task.labels.index(x) for x in labels]))
        report["seconds"] = round(time.monotonic() - started, 1)
        report["read_seconds"] = round(read_s, 1)
        write_json_atomically(task.head_examples.heads_dir.parent / FITS_DIR / f"{task.name}@{model_id[:16]}.json",
                              report)
        return report

    def _read(self, texts: list[str], name: str, model_path: Path, status: FitStatus) -> FeatureRows:
        """Every text's features from the serving worker, ``BATCH`` at a time (module doc)."""
        parts: list[FeatureRows] = []
        for start in range(0, len(texts), BATCH):
            for attempt in range(RETRIES):
                try:
                    [rows] = list(self.service.submit(name, FeatureRequest(texts[start : start + BATCH])))
                    break
                except ModelUnavailable:
                    if attempt == RETRIES - 1:
                        raise
                    self.service.readiness.wait_ready(30.0)
            worker = self.service.supervisor.serving
            if worker is None or Path(worker.model_path or "") != model_path:
                raise FitFailed("The serving model changed during the fit; fit again on the new one.")
            parts.append(rows)
            status.fraction = READ_SHARE * min(start + BATCH, len(texts)) / len(texts)
        return FeatureRows({k: np.concatenate([p.layers[k] for p in parts]) for k in parts[0].layers},
                           np.concatenate([p.hidden for p in parts]), np.concatenate([p.logprobs for p in parts]),
                           tuple(t for p in parts for t in p.truncated))

    def _run_fit(self, rows: FeatureRows, targets: np.ndarray, train: np.ndarray, classes: int,
                 status: FitStatus) -> dict:
        """``engine.teach_fit`` in a child process at a low priority; its result."""
        with tempfile.TemporaryDirectory(prefix="allinone-fit-") as folder:
            features, result = Path(folder) / "features.npz", Path(folder) / "result.json"
            np.savez(features, hidden=rows.hidden, logprobs=rows.logprobs, targets=targets, train=train,
                     classes=classes, tolerance=LAYER_TOLERANCE,
                     **{f"{FEATURES_LAYER_PREFIX}{k}": v for k, v in rows.layers.items()})
            errors = Path(folder) / "stderr.txt"
            with open(errors, "w") as stderr:
                child = subprocess.Popen([self._python, "-m", "engine.teach_fit", str(features), str(result)],
                                         cwd=CODE_ROOT, stdout=subprocess.PIPE, stderr=stderr, text=True)
                for line in child.stdout:
                    if line.startswith("progress "):
                        _, done, total = line.split()
                        status.fraction = READ_SHARE + (1 - READ_SHARE) * int(done) / int(total)
            if child.wait() != 0:
                logger.error("the fit process failed: {}", errors.read_text()[-2000:])
                raise FitFailed(f"The fit process failed (exit code {child.returncode}); see the log.")
            return json.loads(result.read_text(encoding="utf-8"))

    # ----- what GET shows ---------------------------------------------------------------

    def _model_id(self, path: Path) -> str:
        path = Path(path)
        if path not in self._model_ids:
            self._model_ids[path] = model_identity(path)
        return self._model_ids[path]

    def _heads(self, task: ClassifyTask) -> list[dict]:
        heads_dir = task.head_examples.heads_dir if task.head_examples is not None else self.tasks.heads_dir
        out = []
        for path in sorted(heads_dir.glob(f"{task.name}@*.json")):
            try:
                head = read_head(path)
            except AllInOneError as exc:
                out.append({"file": path.name, "status": "broken", "detail": str(exc)})
                continue
            fresh = task.head_examples is not None and head.task_sha256 == task_fingerprint(task)
            out.append({"model": head.model, "model_id": head.model_id[:16], "status": "ready" if fresh else "stale",
                        "layer": head.layer, "cv_accuracy": head.cv_accuracy, "examples": head.examples,
                        "fitted": head.fitted})
        return out

    def _report(self, name: str, model_id: str | None) -> dict | None:
        if model_id is None:
            return None
        path = self.tasks.heads_dir.parent / FITS_DIR / f"{name}@{model_id[:16]}.json"
        try:
            return {"stage": FitStage.DONE.value, "fraction": 1.0, "result": json.loads(path.read_text("utf-8"))}
        except (OSError, ValueError):
            return None


def _report(task: ClassifyTask, head: HeadFile, fitted: dict, rows: FeatureRows, train: np.ndarray,
            targets: np.ndarray) -> dict:
    """What a teacher sees: the layer and its cross-validated accuracy, the confusion matrix of the
    cross-validated answers (rows: the true label), and prompt against head on the held-out rows."""
    labels = list(task.labels)
    confusion = np.zeros((len(labels), len(labels)), dtype=int)
    for truth, guess in zip(targets[train], fitted["cv_predictions"]):
        confusion[truth, guess] += 1
    held = targets[~train]
    prompt = rows.logprobs[~train].argmax(-1)
    return {"model": head.model, "layer": head.layer, "reads": head.reads, "cv_accuracy": head.cv_accuracy,
            "layer_cv": head.layer_cv, "tuning_accuracy": head.tuning_accuracy, "labels": labels,
            "confusion": confusion.tolist(), "train_examples": int(train.sum()),
            "held_out": {"examples": int(len(held)),
                         "prompt_accuracy": round(float((prompt == held).mean()), 4),
                         "head_accuracy": round(float((np.array(fitted["held_predictions"]) == held).mean()), 4)},
            "fitted": head.fitted}
