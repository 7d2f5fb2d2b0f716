"""The embedded default model, end to end: store, sentiment, chat, the app."""

from __future__ import annotations

import subprocess
import sys

import pytest
from gradio_client import Client

from ops.common.paths import REPO_ROOT
from tests.conftest import LiveApp

# Clear cases written for this test (not from the development sets).
CASES = [
    ("The pizza was delicious and the waiter was very friendly.", "positive"),
    ("Terrible experience, the room smelled and nobody helped us.", "negative"),
    ("I would happily recommend this place to my friends.", "positive"),
    ("The battery died after two days. Waste of money.", "negative"),
    ("房间干净整洁，前台服务热情，下次还会入住。", "positive"),
    ("快递太慢了，包装也破了，非常失望。", "negative"),
    ("这本书写得很精彩，值得一读。", "positive"),
    ("手机发热严重，客服也不理人。", "negative"),
]


def test_install_default_is_idempotent_and_verified(default_model_dir):
    again = subprocess.run([sys.executable, "-m", "ops.models", "install-default"], cwd=REPO_ROOT,
                           capture_output=True, text=True)
    assert again.returncode == 0 and "already installed" in again.stdout
    verify = subprocess.run([sys.executable, "-m", "ops.models", "verify"], cwd=REPO_ROOT,
                            capture_output=True, text=True)
    assert verify.returncode == 0 and "OK" in verify.stdout


@pytest.mark.parametrize("text, expected", CASES)
def test_sentiment_on_clear_english_and_chinese_cases(real_engine, text, expected):
    (result,) = real_engine.classify("sentiment", [text])
    assert result.label == expected
    assert result.confidence > 0.7


@pytest.mark.parametrize("runtime", ["torch", "llamacpp"])
def test_the_shipped_head_exits_early_and_answers_the_clear_cases_on_both_runtimes(default_model_dir, tasks, runtime):
    """The sentiment head reads an early layer (engine/heads): classification stops there on either runtime,
    whichever ``auto`` picks on this machine."""
    from engine.backends import open_backend
    from engine.engine import Engine
    from engine.types import ClassifyMode, EngineConfig

    backend = open_backend(runtime, default_model_dir, "auto", limits=EngineConfig())
    engine = Engine(backend, tasks, EngineConfig()).start()
    try:
        state = backend.classifier.head_states()["sentiment"]
        assert state.ready and "layer" in state.detail, state.detail
        results = engine.classify("sentiment", [text for text, _ in CASES], ClassifyMode.HEAD)
        assert [r.label for r in results] == [label for _, label in CASES]
        assert {r.mode for r in results} == {ClassifyMode.HEAD}
    finally:
        engine.close()


def test_one_chat_turn(real_engine):
    last = real_engine.chat("chat", "What is 2 + 3? Answer with just the number.")
    assert last.done and "5" in last.text


def test_the_app_serves_the_default_model(tmp_path):
    app = LiveApp(["--log-dir", str(tmp_path), "--max-new-tokens", "24"], tmp_path / "console.log")
    try:
        client = Client(app.url, verbose=False)
        assert client.predict("What a wonderful day, I loved it!", api_name="/sentiment")["label"] == "positive"
        assert client.predict("这个产品太差了，我很生气。", api_name="/sentiment")["label"] == "negative"
        reply = client.predict("Name the capital of France in one word.", api_name="/chat")
        assert "Paris" in reply
        # The shipped sentiment head is fitted for this model: auto answers by it, the prompt stays selectable.
        import httpx
        import openai

        assert httpx.get(app.url + "/ready").json()["heads"]["sentiment"]["status"] == "ready"
        text = "The staff were lovely and the room was spotless."
        assert client.predict(text, api_name="/sentiment")["mode"] == "head"
        by_prompt = client.predict(text, "prompt", api_name="/sentiment")
        assert by_prompt["mode"] == "prompt" and by_prompt["label"] == "positive"
        rows = httpx.post(app.url + "/v1/classify", json={"task": "sentiment", "input": [
            text, "房间又脏又吵，再也不会来了。"]}).json()["data"]
        assert [(r["label"], r["mode"]) for r in rows] == [("positive", "head"), ("negative", "head")]
        # The official OpenAI client against the real model: a whole answer, and the same one streamed.
        chat = openai.OpenAI(base_url=app.url + "/v1", api_key="local", max_retries=0)
        question = [{"role": "user", "content": "Name the capital of France in one word."}]
        whole = chat.chat.completions.create(model="chat", messages=question, max_tokens=16, temperature=0)
        assert "Paris" in whole.choices[0].message.content and whole.usage.completion_tokens > 0
        streamed = "".join(c.choices[0].delta.content or "" for c in chat.chat.completions.create(
            model="chat", messages=question, max_tokens=16, temperature=0, stream=True) if c.choices)
        assert streamed == whole.choices[0].message.content
    finally:
        app.stop()


def test_nan_weights_drill_heals_with_no_wrong_answer(tmp_path):
    import httpx

    from tests.fast.test_watchdog import recoveries, run_drill

    app = LiveApp(["--log-dir", str(tmp_path), "--admin-token", "drill", "--fault-injection"],
                  tmp_path / "console.log")
    try:
        expected, seen, states = run_drill(app, "nan-weights")
        assert recoveries(app) >= 1 and states[-1] == "ready", states
        assert [a for outcome, a in seen if outcome == "ok" and a != expected] == []
        assert all("Traceback" not in text for outcome, text in seen if outcome == "error")
        assert httpx.get(app.url + "/ready").json()["last_self_test"]["passed"] is True
    finally:
        app.stop()
