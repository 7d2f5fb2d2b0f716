"""Tasks defined while the app runs: validated like ``engine/tasks.toml``, served at once, kept across restarts.

``RuntimeTasks`` serves the shipped tasks file (read-only) plus operators' tasks in
``<data dir>/tasks.json``; a change is validated, applied by the worker, written atomically, then
served, each step only if the last passed (``RuntimeTasks.put``). One lock serialises changes.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import replace
from enum import Enum
from pathlib import Path
from typing import Callable

from engine.atomic_file import write_bytes_atomically, write_json_atomically
from engine.errors import AllInOneError, ConfigError, InvalidInput
from engine.tasks import HEADS_DIR, ClassifyExample, ClassifyTask, HeadExamples, Task, TaskRegistry, parse_task
from engine.tasks import read_head_examples

__all__ = ["NotAClassifyTask", "RuntimeTasks", "TaskChange", "TaskConflict", "TaskNotFound", "TaskStoreError",
           "RUNTIME_TASKS_FILE"]

RUNTIME_TASKS_FILE = "tasks.json"
EXAMPLES_DIR = "examples"  # a taught task's examples: examples/<task>.jsonl
MAX_RUNTIME_TASKS = 32  # each classify task keeps a cached prompt prefix in the worker


class TaskChange(str, Enum):
    ADDED = "added"
    CHANGED = "changed"
    REMOVED = "removed"


class TaskConflict(InvalidInput):
    """The change is not allowed as asked (a shipped task, too many tasks)."""


class TaskNotFound(InvalidInput):
    """No runtime task of that name."""


class NotAClassifyTask(InvalidInput):
    """Examples and heads are for classify tasks only."""


class TaskStoreError(AllInOneError):
    """The runtime tasks file cannot be written (the change was undone)."""


class RuntimeTasks:
    """The served registry: shipped plus runtime tasks; see the module doc."""

    def __init__(self, shipped: TaskRegistry, data_dir: Path) -> None:
        self.shipped = shipped
        self.path = Path(data_dir) / RUNTIME_TASKS_FILE
        self.heads_dir = Path(data_dir) / HEADS_DIR
        self._lock = threading.Lock()
        self._tables = self._read()  # name -> its table, as stored
        self._registry = self._merge({name: self._parse(name, table) for name, table in self._tables.items()})

    def registry(self) -> TaskRegistry:
        return self._registry

    def runtime_tables(self) -> dict[str, dict]:
        """The runtime tasks as stored (for the admin panel and ``GET /admin/tasks``)."""
        return json.loads(json.dumps(self._tables))

    def put(self, name: str, table: object, apply: Callable[[TaskRegistry], None]) -> TaskChange:
        """Add or replace the runtime task ``name``; ``apply`` hands the new registry to the serving worker."""
        with self._lock:
            if name in self.shipped.tasks:
                raise TaskConflict(f"Task {name!r} is defined in the shipped tasks file, which is read-only; "
                                   "choose another name.")
            if name not in self._tables and len(self._tables) >= MAX_RUNTIME_TASKS:
                raise TaskConflict(f"There are already {MAX_RUNTIME_TASKS} runtime tasks; remove one first.")
            task = self._parse(name, table)
            change = TaskChange.CHANGED if name in self._tables else TaskChange.ADDED
            registry = self._registry.with_task(task)
            apply(registry)
            self._save({**self._tables, name: table}, apply)
            self._registry = registry
            return change

    def remove(self, name: str, apply: Callable[[TaskRegistry], None]) -> TaskChange:
        """Remove the runtime task ``name``, and with it its examples and heads."""
        with self._lock:
            self._runtime_task(name)
            registry = self._registry.without(name)
            apply(registry)
            self._save({k: v for k, v in self._tables.items() if k != name}, apply)
            self._registry = registry
            self.examples_path(name).unlink(missing_ok=True)
            for head in self.heads_dir.glob(f"{name}@*.json"):
                head.unlink(missing_ok=True)
            return TaskChange.REMOVED

    def examples_path(self, name: str) -> Path:
        return self.path.parent / EXAMPLES_DIR / f"{name}.jsonl"

    def put_examples(self, name: str, check: Callable[[ClassifyTask], tuple[ClassifyExample, ...]],
                     stored: Callable[[tuple[ClassifyExample, ...]], bytes],
                     apply: Callable[[TaskRegistry], None]) -> ClassifyTask:
        """Give the runtime classify task ``name`` the examples ``check(task)`` returns (it raises to refuse),
        stored as ``stored(examples)``; the worker serves the task with them (its head, if any, goes stale).
        Returns the task as now served."""
        with self._lock:
            task = self._runtime_task(name)
            if not isinstance(task, ClassifyTask):
                raise NotAClassifyTask(f"Task {name!r} is a {task.kind} task; examples are for classify tasks.")
            examples = check(task)
            data = stored(examples)
            path = self.examples_path(name)
            taught = replace(task, head_examples=HeadExamples(path, examples, hashlib.sha256(data).hexdigest(),
                                                               self.heads_dir))
            registry = self._registry.with_task(taught)
            apply(registry)
            try:
                write_bytes_atomically(path, data, mode=0o600)
            except OSError as exc:
                apply(self._registry)
                raise TaskStoreError(f"Cannot save the examples to {path}: {exc.strerror or exc}. "
                                     "Nothing changed; set a writable --data-dir.") from exc
            self._registry = registry
            return taught

    def refresh(self, apply: Callable[[TaskRegistry], None]) -> None:
        """Hand the served registry to the worker again: it looks for heads fitted since (``ops.api.teach``)."""
        with self._lock:
            apply(self._registry)

    def _runtime_task(self, name: str) -> Task:
        if name in self.shipped.tasks:
            raise TaskConflict(f"Task {name!r} is defined in the shipped tasks file, which is read-only.")
        if name not in self._tables:
            raise TaskNotFound(f"There is no runtime task {name!r}.")
        return self._registry.tasks[name]

    # ----- the file ---------------------------------------------------------------------

    def _parse(self, name: str, table: object) -> Task:
        """The task, with its examples where it has been taught (a change that no longer fits them is refused)."""
        task = parse_task(name, table, f"task {name!r}")
        path = self.examples_path(name)
        if isinstance(task, ClassifyTask) and path.exists():
            task = replace(task, head_examples=read_head_examples(path, task.labels, self.heads_dir))
        return task

    def _merge(self, runtime: dict[str, Task]) -> TaskRegistry:
        clash = sorted(set(runtime) & set(self.shipped.tasks))
        if clash:
            raise ConfigError(f"{self.path}: {clash[0]!r} is also a shipped task; rename or remove it there.")
        return TaskRegistry({**self.shipped.tasks, **runtime})

    def _read(self) -> dict[str, dict]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise ConfigError(f"Cannot read the runtime tasks file {self.path}: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{self.path}: expected a JSON object of tasks.")
        return data

    def _save(self, tables: dict[str, dict], apply: Callable[[TaskRegistry], None]) -> None:
        """Keep ``tables``; when the file cannot be written, the worker goes back to the old tasks, so
        what is served is always what a restart would serve."""
        try:
            write_json_atomically(self.path, tables, mode=0o600, indent=2)  # the operator's own: private
        except OSError as exc:
            apply(self._registry)
            raise TaskStoreError(f"Cannot save the runtime tasks to {self.path}: {exc.strerror or exc}. "
                                 "Nothing changed; set a writable --data-dir.") from exc
        self._tables = tables
