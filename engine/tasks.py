"""The task registry: one model, many jobs, each described by data. Pure: no torch.

Tasks live in a TOML file (``engine/tasks.toml``); each names its ``kind``, whose module
(``engine.kinds``) parses and checks the rest. ``parse_task`` also validates tasks defined at run time
(``ops.api.runtime_tasks``). The fields: README.md, "Adding a task".
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from engine.errors import ConfigError, InvalidInput
from engine.kinds.registry import KINDS
from engine.kinds.classify import (
    HEADS_DIR,
    MAX_HEAD_EXAMPLES,
    MAX_LABEL_BIAS,
    ClassifyExample,
    ClassifyTask,
    HeadExamples,
    read_head_examples,
)
from engine.kinds.generate import GenerateTask
from engine.types import TaskInfo, TaskKind

__all__ = [
    "ClassifyExample",
    "ClassifyTask",
    "GenerateTask",
    "HeadExamples",
    "Task",
    "TaskRegistry",
    "DEFAULT_TASKS_FILE",
    "HEADS_DIR",
    "MAX_HEAD_EXAMPLES",
    "MAX_LABEL_BIAS",
    "load_tasks",
    "parse_task",
    "read_head_examples",
]

DEFAULT_TASKS_FILE = Path(__file__).with_name("tasks.toml")
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
RESERVED_NAMES = (*TaskKind, "status", "tasks")  # ui.tasks_tab's endpoints, the UI's tab ids
_COMMON_FIELDS = frozenset({"kind", "title", "ui_examples"})

Task = ClassifyTask | GenerateTask  # the built-in kinds' tasks; a registered kind adds its own


@dataclass(frozen=True)
class TaskRegistry:
    tasks: dict[str, Task]

    def get(self, name: str) -> Task:
        try:
            return self.tasks[name]
        except KeyError:
            raise InvalidInput(f"Unknown task {name!r}. Known tasks: {', '.join(self.tasks)}.") from None

    def of_kind(self, kind: TaskKind) -> list[Task]:
        return [t for t in self.tasks.values() if t.kind == kind]

    def with_task(self, task: Task) -> "TaskRegistry":
        """A new registry with ``task`` added, or in place of the one of its name."""
        return TaskRegistry({**self.tasks, task.name: task})

    def without(self, name: str) -> "TaskRegistry":
        return TaskRegistry({k: v for k, v in self.tasks.items() if k != name})

    def __iter__(self):
        return iter(self.tasks.values())

    def infos(self) -> list[TaskInfo]:
        """What the UI needs to build a tab per task."""
        return [KINDS[t.kind].info(t) for t in self]


def parse_task(name: str, table: object, where: str, base_dir: Path | None = None) -> Task:
    """One task from its table (a TOML table, or the same fields as JSON); ``ConfigError`` names the field.
    ``base_dir``: where its files are (the tasks file's folder); ``None`` for a task defined at run time."""
    if not isinstance(name, str) or not _NAME.match(name) or not isinstance(table, dict):
        raise ConfigError(f"{where}: task names are lower-case identifiers with a table of settings.")
    if name in RESERVED_NAMES:
        raise ConfigError(f"{where}: {name!r} is reserved (the UI's own API endpoints); choose another name.")
    kind = KINDS.get(table.get("kind")) if isinstance(table.get("kind"), str) else None
    if kind is None:
        raise ConfigError(f"{where}: 'kind' must be {' or '.join(repr(str(k)) for k in KINDS)}, "
                          f"not {table.get('kind')!r}.")
    fields = _COMMON_FIELDS | kind.fields
    unknown = sorted(set(table) - fields)
    if unknown:
        raise ConfigError(f"{where}: unknown field {unknown[0]!r} for a {kind.name} task; the fields are: "
                          f"{', '.join(sorted(fields))}.")
    title = table.get("title", name.title())
    if not isinstance(title, str) or not title.strip():
        raise ConfigError(f"{where}: 'title' must be a non-empty string.")
    return kind.parse(name, table, where, base_dir)


def load_tasks(path: Path = DEFAULT_TASKS_FILE) -> TaskRegistry:
    """Read and validate the registry; every problem is a ``ConfigError`` naming the place."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"Cannot read the task registry {path}: {exc}") from exc
    tasks = {name: parse_task(name, table, f"{path} [{name}]", Path(path).parent) for name, table in data.items()}
    if not tasks:
        raise ConfigError(f"{path} defines no tasks.")
    return TaskRegistry(tasks)
