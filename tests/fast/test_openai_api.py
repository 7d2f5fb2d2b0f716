"""The /v1 API (ops/api/openai_api.py): driven by the official `openai` package and by `curl` against the live
app on the tiny model, and its error statuses, keys and stop strings against a fake service."""

from __future__ import annotations

import json
import subprocess

import httpx
import openai
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from engine.errors import Busy, InferenceTimeout, InvalidInput, ModelUnavailable
from engine.sampling import BREAK_GUARD
from engine.chat import ChatUpdate
from engine.kinds.classify import ClassifyResult
from engine.kinds.registry import InferenceCalls
from engine.types import TaskInfo
from tests.fakes import replies
from ops.api.openai_api import ApiKeys, StopText, add_openai_routes
from tests.conftest import LiveApp

# ----- the live app, as its users call it ----------------------------------------------------


@pytest.fixture(scope="module")
def client(live_app):
    return openai.OpenAI(base_url=live_app.url + "/v1", api_key="unused-on-a-local-host", max_retries=0)


def test_the_openai_client_lists_the_chat_task_as_a_model(client):
    assert [m.id for m in client.models.list().data] == ["chat"]
    assert client.models.retrieve("chat").owned_by == "qwen-all-in-one"


def test_the_openai_client_gets_a_whole_answer_and_the_same_one_streamed(client):
    messages = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "How are you?"}]
    whole = client.chat.completions.create(model="chat", messages=messages, max_tokens=8, temperature=0)
    answer = whole.choices[0].message.content
    assert whole.object == "chat.completion" and whole.choices[0].message.role == "assistant"
    assert answer and whole.choices[0].finish_reason in ("stop", "length")
    assert whole.usage.completion_tokens >= 1 and whole.usage.prompt_tokens > 5
    assert whole.usage.total_tokens == whole.usage.prompt_tokens + whole.usage.completion_tokens
    chunks = list(client.chat.completions.create(model="chat", messages=messages, max_tokens=8, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == answer  # greedy: the same answer, streamed
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == whole.choices[0].finish_reason
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) >= 2  # really streamed


def test_a_system_message_replaces_the_task_prompt(client):
    def answer(system: str) -> str:
        reply = client.chat.completions.create(model="chat", max_tokens=8, messages=[
            {"role": "system", "content": system}, {"role": "user", "content": "Hi"}])
        return reply.usage.prompt_tokens

    assert answer("Be brief.") < answer("Be brief. " * 20)


def test_openai_errors_have_the_right_class_status_and_message(client):
    with pytest.raises(openai.NotFoundError, match="The model 'gpt-4' does not exist"):
        client.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "Hi"}])
    with pytest.raises(openai.BadRequestError, match="The last message must be the user's"):
        client.chat.completions.create(model="chat", messages=[{"role": "assistant", "content": "Hi"}])
    with pytest.raises(openai.BadRequestError, match="'temperature' must be a number from 0 to 2"):
        client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "Hi"}], temperature=5)
    with pytest.raises(openai.BadRequestError, match="Message too long"):  # the same limits as every door
        client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "x" * 5000}])


def test_curl_classifies_a_list_of_texts_in_one_call(live_app):
    body = json.dumps({"task": "sentiment", "input": ["Lovely staff.", "Cold soup.", "很好"]})
    out = subprocess.run(["curl", "-sS", "-H", "Content-Type: application/json", "-d", body,
                          live_app.url + "/v1/classify"], capture_output=True, text=True, check=True, timeout=60)
    reply = json.loads(out.stdout)
    assert reply["task"] == "sentiment" and [r["index"] for r in reply["data"]] == [0, 1, 2]
    for row in reply["data"]:
        assert row["label"] in ("positive", "negative") and set(row["scores"]) == {"positive", "negative"}
        assert row["mode"] == "prompt"


def test_classify_errors_name_the_field(live_app):
    url = live_app.url + "/v1/classify"
    unknown = httpx.post(url, json={"task": "topics", "input": "x"})
    assert unknown.status_code == 404 and unknown.json()["error"]["param"] == "task"
    empty = httpx.post(url, json={"task": "sentiment", "input": []})
    assert empty.status_code == 400 and "'input' must be" in empty.json()["error"]["message"]
    blank = httpx.post(url, json={"task": "sentiment", "input": ["  "]})
    assert blank.status_code == 400 and blank.json()["error"]["message"] == "Please enter some text."
    not_json = httpx.post(url, content=b"{", headers={"Content-Type": "application/json"})
    assert not_json.status_code == 400 and not_json.json()["error"]["type"] == "invalid_request_error"


def test_an_api_key_is_required_once_set(tiny_app_args, tmp_path, live_app):
    key_file = tmp_path / "key"
    key_file.write_text("s3cret\n")
    app = LiveApp([*tiny_app_args, "--log-dir", str(tmp_path), "--api-key-file", str(key_file)],
                  tmp_path / "console.log")
    try:
        for key in ("wrong", None):
            headers = {} if key is None else {"Authorization": f"Bearer {key}"}
            refused = httpx.get(app.url + "/v1/models", headers=headers)
            assert refused.status_code == 401 and refused.json()["error"]["type"] == "authentication_error"
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=app.url + "/v1", api_key="wrong", max_retries=0).models.list()
        good = openai.OpenAI(base_url=app.url + "/v1", api_key="s3cret", max_retries=0)
        assert [m.id for m in good.models.list().data] == ["chat"]
        assert "s3cret" not in " ".join(app.proc.args)  # never on the command line, so never in ps
    finally:
        app.stop()


# ----- statuses and stop strings, on a fake service ------------------------------------------


class FakeService(InferenceCalls):
    def __init__(self, error: Exception | None = None, text: str = "Hello there. STOP and more") -> None:
        self.error, self.text, self.seen = error, text, []

    def task_infos(self):
        return [TaskInfo("chat", "generate", "Chat"), TaskInfo("sentiment", "classify", "Sentiment",
                                                                ("positive", "negative"))]

    def submit(self, task, request):
        self.seen.append(request)
        if self.error is not None:
            raise self.error
        if hasattr(request, "texts"):
            return replies([ClassifyResult(task, "positive", 1.0, {"positive": 1.0, "negative": 0.0}, False)
                            for _ in request.texts])
        return replies([ChatUpdate(self.text[:n], self.text[n - 3:n], n == len(self.text),
                                   "stop" if n == len(self.text) else None, (), n // 3, 7)
                        for n in range(3, len(self.text) + 1, 3)] if len(self.text) % 3 == 0 else [
            ChatUpdate(self.text, self.text, True, "stop", (), 1, 7)])


def fake_client(service, keys=ApiKeys(None)) -> TestClient:
    app = FastAPI()
    add_openai_routes(app, service, keys)
    return TestClient(app)


CHAT = {"model": "chat", "messages": [{"role": "user", "content": "Hi"}]}


@pytest.mark.parametrize("error, status, kind, retry_after", [
    (InvalidInput("Please type a message."), 400, "invalid_request_error", None),
    (Busy(), 429, "rate_limit_error", "2"),
    (ModelUnavailable(), 503, "server_error", "5"),
    (InferenceTimeout(), 504, "server_error", None),
])
def test_engine_errors_become_openai_statuses(error, status, kind, retry_after):
    for stream in (False, True):  # refused before the stream starts: a status, not an event
        reply = fake_client(FakeService(error)).post("/v1/chat/completions", json={**CHAT, "stream": stream})
        assert reply.status_code == status and reply.json()["error"]["type"] == kind
        assert reply.json()["error"]["message"] == str(error)
        assert reply.headers.get("retry-after") == retry_after
    assert fake_client(FakeService(error)).post("/v1/classify", json={"task": "sentiment", "input": "x"}
                                                ).status_code == status


def test_a_switched_off_api_says_how_to_switch_it_on():
    reply = fake_client(FakeService(), ApiKeys(None, "The /v1 API is off: set a key.")).get("/v1/models")
    assert reply.status_code == 403 and reply.json()["error"]["message"] == "The /v1 API is off: set a key."


def test_stop_strings_cut_the_answer_whole_and_streamed():
    service = FakeService(text="Hello there. STOP and more")  # 26 characters: one update
    whole = fake_client(service).post("/v1/chat/completions", json={**CHAT, "stop": ["STOP"]}).json()
    assert whole["choices"][0]["message"]["content"] == "Hello there. "
    assert whole["choices"][0]["finish_reason"] == "stop"
    service = FakeService(text="Hello there. STOP and mor")  # 25: updates of 3 characters
    with fake_client(service).stream("POST", "/v1/chat/completions",
                                     json={**CHAT, "stop": "STOP", "stream": True}) as reply:
        events = [line[6:] for line in reply.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == "Hello there. "
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_stop_text_holds_back_what_may_begin_a_stop_string():
    stop = StopText(["</end>"])
    assert stop.feed("abc<") == "abc"  # "<" may begin "</end>"
    assert stop.feed("abc</e") == ""
    assert stop.feed("abc</x") == "</x"  # it did not
    assert stop.feed("abc</x</end> tail") == "" and stop.stopped
    assert StopText(["zz"]).feed("abz", final=True) == "abz"  # the end releases what was held


def test_chat_fields_reach_the_engine():
    service = FakeService()
    fake_client(service).post("/v1/chat/completions", json={
        "model": "chat", "max_tokens": 5, "temperature": 0.5, "seed": 42, "top_p": 0.9,
        "messages": [{"role": "system", "content": "Terse."}, {"role": "user", "content": [
            {"type": "text", "text": "Hi "}, {"type": "text", "text": "there"}]}]})
    request = service.seen[-1]
    assert request.message == "Hi there" and request.history == []
    assert (request.options.max_new_tokens, request.options.temperature, request.options.seed) == (5, 0.5, 42)
    assert request.options.system_prompt == "Terse."
    refused = fake_client(service).post("/v1/chat/completions", json={**CHAT, "n": 2})
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "n"


@pytest.mark.parametrize("fields, guard", [
    ({}, None),
    ({"frequency_penalty": 0, "presence_penalty": 0.0}, None),  # 0: the server's default
    ({"frequency_penalty": -2, "presence_penalty": -0.5}, None),  # more repetition is never encouraged
    ({"frequency_penalty": 0.1}, BREAK_GUARD),  # any positive value: less repetition, the break guard
    ({"presence_penalty": 2}, BREAK_GUARD),
    ({"frequency_penalty": -1, "presence_penalty": 1.5}, BREAK_GUARD),
], ids=["absent", "zero", "negative", "frequency", "presence", "either"])
def test_the_penalties_choose_the_repetition_guard(fields, guard):
    service = FakeService()
    assert fake_client(service).post("/v1/chat/completions", json={**CHAT, **fields}).status_code == 200
    assert service.seen[-1].options.repetition == guard


@pytest.mark.parametrize("name", ["frequency_penalty", "presence_penalty"])
@pytest.mark.parametrize("value", [2.5, -2.01, "1", True, [1]])
def test_a_penalty_out_of_openais_range_is_a_400(name, value):
    service = FakeService()
    for stream in (False, True):
        reply = fake_client(service).post("/v1/chat/completions", json={**CHAT, name: value, "stream": stream})
        assert reply.status_code == 400 and reply.json()["error"] == {
            "message": f"'{name}' must be a number from -2 to 2.", "type": "invalid_request_error",
            "param": name, "code": None}
    assert service.seen == []  # refused before the engine


def test_the_openai_client_sends_the_penalties_through_to_the_engine(client):
    reply = client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "abc"}],
                                           max_tokens=8, temperature=0, frequency_penalty=0.5)
    assert reply.choices[0].message.content and reply.choices[0].finish_reason in ("stop", "length")
    with pytest.raises(openai.BadRequestError, match="presence_penalty"):
        client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "abc"}],
                                       max_tokens=8, presence_penalty=3)
