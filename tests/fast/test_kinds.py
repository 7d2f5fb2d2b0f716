"""A task kind is one module and one registry line (issue "Architecture"): a toy kind, written here as its
module would be and registered with one line, is parsed from a tasks file, checked at the edge, admitted,
answered by the engine's loop beside the built-in kinds, and listed for the UI."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from engine.engine import Engine
from engine.errors import Busy, ConfigError, InvalidInput
from engine.kinds.base import Kind, LimitExceeded, RequestLimits, str_list
from engine.kinds.registry import KINDS, check_request
from engine.tasks import load_tasks
from engine.types import EngineConfig, TaskInfo
from tests.fake_backend import FakeBackend

# ----- the toy kind's module: "count" answers how many tokens (or characters) a text has -------------


@dataclass(frozen=True)
class CountTask:
    name: str
    title: str
    unit: str = "tokens"
    ui_examples: tuple[str, ...] = ()
    kind: str = "count"


def parse(name: str, table: dict, where: str, base_dir: Path | None) -> CountTask:
    unit = table.get("unit", "tokens")
    if unit not in ("tokens", "characters"):
        raise ConfigError(f"{where}: 'unit' must be 'tokens' or 'characters'.")
    return CountTask(name, table.get("title", name.title()), unit, str_list(table, "ui_examples", where))


@dataclass(frozen=True)
class CountRequest:
    text: str
    request_id: str = ""


@dataclass(frozen=True)
class Counted:
    task: str
    count: int


def check(request: CountRequest, limits: RequestLimits) -> CountRequest:
    if not isinstance(request.text, str) or not request.text.strip():
        raise InvalidInput("Nothing to count.")
    if len(request.text) > limits.max_message_chars:
        raise LimitExceeded(f"Too long: {len(request.text)} characters.")
    return CountRequest(request.text.strip(), request.request_id)


@dataclass(eq=False)
class CountJob:
    task: CountTask
    text: str
    sink: object
    cancelled: threading.Event = field(default_factory=threading.Event)
    kind = "count"


class CountGate:
    def __init__(self, backend, config: EngineConfig) -> None:
        self.queued = 0

    def admit(self, task: CountTask, request: CountRequest, sink) -> CountJob:
        if self.queued >= 2:
            raise Busy()
        self.queued += 1
        return CountJob(task, request.text, sink)

    def release(self, job: CountJob) -> None:
        self.queued -= 1

    def load(self) -> int:
        return self.queued


class CountRounds:
    def __init__(self, backend, gate: CountGate, config: EngineConfig) -> None:
        self.backend, self.gate, self.pending = backend, gate, []

    def __bool__(self) -> bool:
        return bool(self.pending)

    def add(self, job: CountJob) -> None:
        self.pending.append(job)

    def prepare(self, tasks: list) -> None:
        self.prepared = [t.name for t in tasks]

    def run(self, tasks) -> None:
        job = self.pending.pop(0)
        self.gate.release(job)
        count = len(self.backend.text.encode(job.text)) if job.task.unit == "tokens" else len(job.text)
        job.sink.put([Counted(job.task.name, count)])

    def drain(self, tasks) -> None:
        """Nothing: a count job carries its task (as a chat does)."""

    def fail_all(self, error: Exception) -> None:
        for job in self.pending:
            self.gate.release(job)
            job.sink.put(error)
        self.pending = []


COUNT = Kind(name="count", task_type=CountTask, request_type=CountRequest, fields=frozenset({"unit"}), parse=parse,
             info=lambda task: TaskInfo(task.name, task.kind, task.title, ui_examples=task.ui_examples),
             check=check, gate=CountGate, rounds=CountRounds)

# ----- the tests ----------------------------------------------------------------------------------------


@pytest.fixture()
def registered(monkeypatch):
    monkeypatch.setitem(KINDS, "count", COUNT)  # the registry line


@pytest.fixture()
def tasks_file(tmp_path) -> Path:
    path = tmp_path / "tasks.toml"
    path.write_text('[words]\nkind = "count"\nunit = "characters"\ntitle = "Count"\n\n'
                    '[chat]\nkind = "generate"\nsystem_prompt = "Be brief."\n', encoding="utf-8")
    return path


def test_an_unregistered_kind_is_refused_by_name(tasks_file):
    with pytest.raises(ConfigError, match="'kind' must be 'classify' or 'generate', not 'count'"):
        load_tasks(tasks_file)


def test_a_registered_kind_is_parsed_checked_and_answered_beside_the_others(registered, tasks_file):
    tasks = load_tasks(tasks_file)
    assert tasks.get("words") == CountTask("words", "Count", "characters")
    assert [info.kind for info in tasks.infos()] == ["count", "generate"]

    limits = RequestLimits(max_message_chars=10)
    assert check_request(CountRequest("  hello "), limits) == CountRequest("hello")
    with pytest.raises(LimitExceeded):
        check_request(CountRequest("x" * 11), limits)
    with pytest.raises(InvalidInput, match="Nothing to count"):
        check_request(CountRequest(" "), limits)

    engine = Engine(FakeBackend(), tasks, EngineConfig(max_new_tokens=4)).start()
    try:
        assert list(engine.submit("words", CountRequest("hello"))) == [Counted("words", 5)]
        assert engine.chat("chat", "hi").done  # the built-in kinds still answer in the same loop
        with pytest.raises(InvalidInput, match="is a count task"):
            engine.classify("words", ["hello"])
        assert engine.load() == 0
    finally:
        engine.close()


def test_a_bad_field_of_a_registered_kind_is_refused_by_its_module(registered, tmp_path):
    path = tmp_path / "tasks.toml"
    path.write_text('[words]\nkind = "count"\nunit = "lines"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="'unit' must be 'tokens' or 'characters'"):
        load_tasks(path)
    path.write_text('[words]\nkind = "count"\nlabels = ["a", "b"]\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="unknown field 'labels' for a count task"):
        load_tasks(path)
