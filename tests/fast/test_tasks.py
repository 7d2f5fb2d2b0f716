"""The task registry: data, validated, with clear errors."""

import pytest

from engine.errors import ConfigError, InvalidInput
from engine.tasks import ClassifyTask, GenerateTask, load_tasks


def test_default_registry_has_sentiment_and_chat():
    tasks = load_tasks()
    sentiment, chat = tasks.get("sentiment"), tasks.get("chat")
    assert isinstance(sentiment, ClassifyTask) and sentiment.labels == ("positive", "negative")
    assert isinstance(chat, GenerateTask) and chat.temperature == 0.0
    assert {i.name for i in tasks.infos()} == {"sentiment", "chat"}
    with pytest.raises(InvalidInput):
        tasks.get("nope")


CLASSIFY_AB = '[x]\nkind = "classify"\nlabels = ["a", "b"]\ninstruction = "i"\n'  # a valid task, to spoil


@pytest.mark.parametrize(
    "body, fragment",
    [
        ('[x]\nkind = "classify"\nlabels = ["a"]\ninstruction = "i"', "two distinct labels"),
        ('[x]\nkind = "classify"\nlabels = ["a", "b"]', "'instruction' is required"),
        ('[x]\nkind = "generate"', "'system_prompt' is required"),
        ('[x]\nkind = "generate"\nsystem_prompt = "s"\ntemperature = 9', "temperature"),
        ('[x]\nkind = "summarize"', "'kind' must be"),
        ('[Bad-Name]\nkind = "generate"\nsystem_prompt = "s"', "lower-case"),
        (CLASSIFY_AB + '[[x.examples]]\ntext = "t"\nlabel = "c"', "examples[0]"),
        (CLASSIFY_AB + '[x.label_bias]\nc = 1.0', "'label_bias' keys must be labels"),
        (CLASSIFY_AB + '[x.label_bias]\na = 99', "'label_bias' values must be numbers"),
        (CLASSIFY_AB + 'display = {zh = ["正面"]}', "display.zh names 1 labels; the task has 2 (a, b), in that order"),
        (CLASSIFY_AB + 'display = ["正面", "负面"]', "'display' must map language codes"),
        (CLASSIFY_AB + 'display = {Chinese = ["正面", "负面"]}', "'display' must map language codes"),
        (CLASSIFY_AB + 'display = {zh = ["正面", ""]}', "'zh' must be a list of non-empty strings"),
        ("not toml [", "Cannot read"),
    ],
)
def test_bad_registries_are_refused_with_the_place_named(tmp_path, body, fragment):
    path = tmp_path / "tasks.toml"
    path.write_text(body, encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_tasks(path)
    assert fragment in str(err.value)


def test_a_task_s_kind_is_a_task_kind_that_reads_as_its_name(tmp_path):
    """Kinds are an enum in the code and their plain names in files, JSON and the API."""
    import json

    from engine.tasks import RESERVED_NAMES, load_tasks
    from engine.types import TaskKind

    registry = load_tasks()
    kinds = {task.kind for task in registry.tasks.values()}
    assert kinds == set(TaskKind) and all(isinstance(kind, TaskKind) for kind in kinds)
    assert [t.name for t in registry.of_kind(TaskKind.GENERATE)] == [t.name for t in registry.of_kind("generate")]
    assert json.dumps([info.kind for info in registry.infos()]).count('"classify"') == len(
        registry.of_kind(TaskKind.CLASSIFY))
    assert set(TaskKind) <= set(RESERVED_NAMES)  # the UI's own endpoints bear the kinds' names
    (tmp_path / "tasks.toml").write_text('[odd]\nkind = ["classify"]\ntitle = "Odd"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="'kind' must be 'classify' or 'generate', not \\['classify'\\]"):
        load_tasks(tmp_path / "tasks.toml")
