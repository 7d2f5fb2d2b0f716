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


@pytest.mark.parametrize(
    "body, fragment",
    [
        ('[x]\nkind = "classify"\nlabels = ["a"]\ninstruction = "i"', "two distinct labels"),
        ('[x]\nkind = "classify"\nlabels = ["a", "b"]', "'instruction' is required"),
        ('[x]\nkind = "generate"', "'system_prompt' is required"),
        ('[x]\nkind = "generate"\nsystem_prompt = "s"\ntemperature = 9', "temperature"),
        ('[x]\nkind = "summarize"', "'kind' must be"),
        ('[Bad-Name]\nkind = "generate"\nsystem_prompt = "s"', "lower-case"),
        ('[x]\nkind = "classify"\nlabels = ["a", "b"]\ninstruction = "i"\n[[x.examples]]\ntext = "t"\nlabel = "c"',
         "examples[0]"),
        ('[x]\nkind = "classify"\nlabels = ["a", "b"]\ninstruction = "i"\n[x.label_bias]\nc = 1.0',
         "'label_bias' keys must be labels"),
        ('[x]\nkind = "classify"\nlabels = ["a", "b"]\ninstruction = "i"\n[x.label_bias]\na = 99',
         "'label_bias' values must be numbers"),
        ("not toml [", "Cannot read"),
    ],
)
def test_bad_registries_are_refused_with_the_place_named(tmp_path, body, fragment):
    path = tmp_path / "tasks.toml"
    path.write_text(body)
    with pytest.raises(ConfigError) as err:
        load_tasks(path)
    assert fragment in str(err.value)
