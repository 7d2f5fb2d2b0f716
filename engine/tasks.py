"""The task registry: one model, many jobs, each described by data. Pure: no torch.

Tasks live in a TOML file (``engine/tasks.toml``) of two kinds: ``classify`` (labels scored at the
answer position; optional examples file for a head, and probes) and ``generate`` (a system prompt and
settings). ``parse_task`` also validates tasks defined at run time (``ops.api.runtime_tasks``). The
fields: README.md, "Adding a task".
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from engine.errors import ConfigError
from engine.types import ClassifyMode, TaskInfo, TaskKind

__all__ = [
    "ClassifyExample",
    "ClassifyTask",
    "GenerateTask",
    "HeadExamples",
    "Task",
    "TaskRegistry",
    "DEFAULT_TASKS_FILE",
    "load_tasks",
    "parse_task",
]

DEFAULT_TASKS_FILE = Path(__file__).with_name("tasks.toml")
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_LANGUAGE = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})?$")  # BCP 47, as the browser names it
RESERVED_NAMES = (*TaskKind, "status", "tasks")  # ui.tasks_tab's endpoints, the UI's tab ids
_COMMON_FIELDS = {"kind", "title", "ui_examples"}
_FIELDS = {
    TaskKind.CLASSIFY: _COMMON_FIELDS | {"labels", "instruction", "input_template", "examples", "aliases", "label_bias",
                                  "examples_file", "probes", "display"},
    TaskKind.GENERATE: _COMMON_FIELDS | {"system_prompt", "temperature", "max_new_tokens"},
}
HEADS_DIR = "heads"  # a task's fitted heads (engine.heads), beside its tasks file
MAX_HEAD_EXAMPLES = 5000  # fitting reads every example through the model: bound its time
MAX_LABEL_BIAS = 10.0  # a log-score offset past this would decide every answer on its own


@dataclass(frozen=True)
class ClassifyExample:
    text: str
    label: str


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
    head_examples: "HeadExamples | None" = None  # what a linear head is fitted on (engine.heads)
    probes: tuple[ClassifyExample, ...] = ()  # known answers the self-test checks
    display: dict[str, tuple[str, ...]] = field(default_factory=dict)  # language -> the labels' names in the UI
    kind: TaskKind = TaskKind.CLASSIFY


@dataclass(frozen=True)
class HeadExamples:
    """A classify task's labelled examples file, read and checked at load, and where its heads are kept."""

    path: Path
    examples: tuple[ClassifyExample, ...]
    sha256: str  # of the file's bytes: a head records it, so an edited file makes the head stale
    heads_dir: Path  # ``heads/`` beside the tasks file (engine.heads)


@dataclass(frozen=True)
class GenerateTask:
    name: str
    title: str
    system_prompt: str
    temperature: float = 0.0
    max_new_tokens: int = 256
    ui_examples: tuple[str, ...] = ()
    kind: TaskKind = TaskKind.GENERATE


Task = ClassifyTask | GenerateTask


@dataclass(frozen=True)
class TaskRegistry:
    tasks: dict[str, Task]

    def get(self, name: str) -> Task:
        try:
            return self.tasks[name]
        except KeyError:
            from engine.errors import InvalidInput

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
        return [TaskInfo(t.name, t.kind, t.title, getattr(t, "labels", ()), t.ui_examples,
                         tuple(m.value for m in ClassifyMode) if getattr(t, "head_examples", None) else (),
                         getattr(t, "display", {}))
                for t in self]


def _str_list(table: dict, key: str, where: str) -> tuple[str, ...]:
    value = table.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ConfigError(f"{where}: '{key}' must be a list of non-empty strings.")
    return tuple(value)


def _parse_classify(name: str, table: dict, where: str, base_dir: Path | None) -> ClassifyTask:
    labels = _str_list(table, "labels", where)
    if len(labels) < 2 or len(set(labels)) != len(labels):
        raise ConfigError(f"{where}: a classify task needs at least two distinct labels.")
    instruction = table.get("instruction")
    if not isinstance(instruction, str) or not instruction.strip():
        raise ConfigError(f"{where}: 'instruction' is required.")
    examples = _labelled(table, "examples", labels, where)
    probes = _labelled(table, "probes", labels, where)
    aliases_table = table.get("aliases", {})
    if not isinstance(aliases_table, dict) or any(k not in labels for k in aliases_table):
        raise ConfigError(f"{where}: 'aliases' keys must be labels.")
    aliases = {k: _str_list(aliases_table, k, f"{where}.aliases") for k in aliases_table}
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
    return ClassifyTask(
        name=name,
        title=table.get("title", name.title()),
        labels=labels,
        instruction=instruction.strip(),
        examples=tuple(examples),
        aliases=aliases,
        input_template=input_template,
        ui_examples=_str_list(table, "ui_examples", where),
        label_bias={k: float(v) for k, v in bias_table.items()},
        head_examples=None if examples_file is None else read_head_examples(base_dir / examples_file, labels,
                                                                            base_dir / HEADS_DIR),
        probes=probes,
        display=_display(table, labels, where),
    )


def _display(table: dict, labels: tuple[str, ...], where: str) -> dict[str, tuple[str, ...]]:
    """``display``: per language (``zh``, ``en``, ``zh-TW``...), the labels' names in label order."""
    display = table.get("display", {})
    if not isinstance(display, dict) or not all(isinstance(k, str) and _LANGUAGE.match(k) for k in display):
        raise ConfigError(f"{where}: 'display' must map language codes (such as 'zh') to lists of label names.")
    names = {lang: _str_list(display, lang, f"{where}.display") for lang in display}
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


def _parse_generate(name: str, table: dict, where: str) -> GenerateTask:
    system_prompt = table.get("system_prompt")
    if not isinstance(system_prompt, str) or not system_prompt.strip():
        raise ConfigError(f"{where}: 'system_prompt' is required.")
    temperature = table.get("temperature", 0.0)
    max_new_tokens = table.get("max_new_tokens", 256)
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0.0 <= temperature <= 2.0:
        raise ConfigError(f"{where}: 'temperature' must be between 0 and 2.")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or not 1 <= max_new_tokens <= 4096:
        raise ConfigError(f"{where}: 'max_new_tokens' must be an integer from 1 to 4096.")
    return GenerateTask(
        name=name,
        title=table.get("title", name.title()),
        system_prompt=system_prompt.strip(),
        temperature=float(temperature),
        max_new_tokens=max_new_tokens,
        ui_examples=_str_list(table, "ui_examples", where),
    )


def parse_task(name: str, table: object, where: str, base_dir: Path | None = None) -> Task:
    """One task from its table (a TOML table, or the same fields as JSON); ``ConfigError`` names the field.
    ``base_dir``: where its files are (the tasks file's folder); ``None`` for a task defined at run time."""
    if not isinstance(name, str) or not _NAME.match(name) or not isinstance(table, dict):
        raise ConfigError(f"{where}: task names are lower-case identifiers with a table of settings.")
    if name in RESERVED_NAMES:
        raise ConfigError(f"{where}: {name!r} is reserved (the UI's own API endpoints); choose another name.")
    kind = table.get("kind")
    if not isinstance(kind, str) or kind not in _FIELDS:
        raise ConfigError(f"{where}: 'kind' must be {' or '.join(repr(k.value) for k in TaskKind)}, not {kind!r}.")
    kind = TaskKind(kind)
    unknown = sorted(set(table) - _FIELDS[kind])
    if unknown:
        raise ConfigError(f"{where}: unknown field {unknown[0]!r} for a {kind} task; the fields are: "
                          f"{', '.join(sorted(_FIELDS[kind]))}.")
    title = table.get("title", name.title())
    if not isinstance(title, str) or not title.strip():
        raise ConfigError(f"{where}: 'title' must be a non-empty string.")
    if kind is TaskKind.CLASSIFY:
        return _parse_classify(name, table, where, base_dir)
    return _parse_generate(name, table, where)


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
