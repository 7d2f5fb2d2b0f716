"""Prompt building and fitting are pure functions: tested without a model."""

import pytest

from engine.prompts import fit_conversation, safe_stream_text, split_classify_prompt, validate_history
from engine.tasks import ClassifyExample, ClassifyTask


def render(messages, add_generation_prompt):
    text = "".join(f"<{m['role']}>{m['content']}</{m['role']}>" for m in messages)
    return text + ("<assistant>" if add_generation_prompt else "")


TASK = ClassifyTask(
    name="topic", title="Topic", labels=("sport", "science"), instruction="Pick one of: {labels}.",
    examples=(ClassifyExample("The match ended 2-1.", "sport"),), input_template="Q: {text}",
)


def test_classify_prompt_splits_into_fixed_prefix_and_input_suffix():
    prefix, suffix = split_classify_prompt(TASK, render)
    assert prefix == (
        "<system>Pick one of: sport, science.</system>"
        "<user>Q: The match ended 2-1.</user><assistant>sport</assistant><user>Q: "
    )
    assert suffix == "{text}</user><assistant>"


def count_words(messages):
    return sum(len(m["content"].split()) + 1 for m in messages)


def truncate_words(text, n):
    return " ".join(text.split()[:n])


def words_of(message):
    """One message's share of ``count_words``."""
    return count_words([message])


def test_fit_keeps_everything_that_fits():
    history = [{"role": "user", "content": "a b"}, {"role": "assistant", "content": "c d"}]
    fitted = fit_conversation("sys", history, "e f", 100, count_words, truncate_words, words_of)
    assert [m["content"] for m in fitted.messages] == ["sys", "a b", "c d", "e f"]
    assert fitted.dropped_messages == 0 and not fitted.truncated


def test_fit_drops_oldest_turns_first_and_never_starts_with_a_reply():
    history = [
        {"role": "user", "content": "one one one"},
        {"role": "assistant", "content": "two two two"},
        {"role": "user", "content": "three"},
        {"role": "assistant", "content": "four"},
    ]
    fitted = fit_conversation("sys", history, "five", 8, count_words, truncate_words, words_of)
    contents = [m["content"] for m in fitted.messages]
    assert contents == ["sys", "three", "four", "five"]
    assert fitted.dropped_messages == 2
    assert fitted.messages[1]["role"] == "user"


def test_fit_truncates_an_overlong_message_instead_of_failing():
    fitted = fit_conversation("sys", [], "w " * 50, 10, count_words, truncate_words, words_of)
    assert fitted.truncated
    assert count_words(fitted.messages) <= 10
    assert fitted.messages[-1]["content"].startswith("w w")


def test_fitting_a_long_history_is_linear_in_its_length():
    """400 messages: each message is sized once and the whole chat counted a few times, not once per
    dropped turn (that quadratic re-counting stalled the worker for a minute)."""
    history = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"message {i} " * 20} for i in range(400)]
    calls = {"count": 0, "sized": 0}

    def counting(messages):
        calls["count"] += 1
        return count_words(messages)

    def sizing(message):
        calls["sized"] += 1
        return words_of(message)

    fitted = fit_conversation("sys", history, "now?", 100, counting, truncate_words, sizing)
    assert count_words(fitted.messages) <= 100 and fitted.messages[-1]["content"] == "now?"
    assert fitted.dropped_messages >= 396 and fitted.messages[1]["role"] == "user"
    assert calls["sized"] <= len(history) and calls["count"] <= 5
    # The same answer as dropping one turn at a time and counting everything again each time.
    turns, system, new = list(history), {"role": "system", "content": "sys"}, {"role": "user", "content": "now?"}
    while turns and count_words([system, *turns, new]) > 100:
        turns.pop(0)
    while turns and turns[0]["role"] == "assistant":
        turns.pop(0)
    assert fitted.messages[1:-1] == turns


def test_history_validation():
    assert validate_history(None) == []
    parts = [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]
    assert validate_history(parts) == [{"role": "user", "content": "hi"}]
    for bad in ("text", [{"role": "system", "content": "x"}], [{"role": "user", "content": 3}]):
        with pytest.raises(ValueError):
            validate_history(bad)


def test_partial_utf8_character_is_held_back():
    assert safe_stream_text("你\ufffd") == "你"
    assert safe_stream_text("ok") == "ok"
