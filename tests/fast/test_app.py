"""The running app, driven the way users drive it: HTTP routes and gradio_client."""

from __future__ import annotations

import time

import httpx
import pytest
from gradio_client import Client

from tests.conftest import TEST_BACKEND, LiveApp


@pytest.fixture(scope="module")
def client(live_app):
    return Client(live_app.url, verbose=False)


def test_health_and_ready(live_app):
    assert httpx.get(live_app.url + "/health").status_code == 200
    ready = httpx.get(live_app.url + "/ready")
    assert ready.status_code == 200
    body = ready.json()
    assert body["state"] == "ready" and body["model"] == "tiny-qwen2@test"
    assert body["last_self_test"]["passed"] is True
    # The runtime and the weights' format, each with why, as the run asked for them (ALLINONE_BACKEND and
    # ALLINONE_PRECISION, see tests/conftest.py): the llamacpp backend serves the GGUF's own format.
    assert body["backend"]["name"] == TEST_BACKEND and body["backend"]["reason"] == f"--backend {TEST_BACKEND}"
    formats = ("all F32",) if TEST_BACKEND == "llamacpp" else ("fp32", "bf16", "int8")
    assert body["precision"]["format"] in formats and body["precision"]["reason"]


def test_api_names_are_the_public_contract(client):
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    # A tab's endpoint per shipped task, and the Tasks tab's three for every task (runtime ones too).
    assert set(endpoints) == {"/sentiment", "/chat", "/classify", "/generate", "/classify_file"}
    params = [p["parameter_name"] for p in endpoints["/chat"]["parameters"]]
    assert params == ["message", "history"]
    assert [p["parameter_name"] for p in endpoints["/classify"]["parameters"]] == ["task", "text", "mode"]
    assert [p["parameter_name"] for p in endpoints["/generate"]["parameters"]] == ["task", "message", "history"]


def test_sentiment_api_returns_label_and_confidence(client):
    result = client.predict("The staff were lovely.", api_name="/sentiment")
    assert result["label"] in ("positive", "negative")
    assert 0.5 <= result["confidence"] <= 1.0
    assert set(result["scores"]) == {"positive", "negative"}
    assert client.predict("The staff were lovely.", api_name="/sentiment") == result


def test_sentiment_api_takes_a_mode_and_says_which_answered(client, live_app):
    """The shipped sentiment task names examples, but its head was fitted for the default model, not the
    tiny one: auto answers by prompt, /ready says why, and asking for the head is refused with that reason."""
    params = client.view_api(print_info=False, return_format="dict")["named_endpoints"]["/sentiment"]["parameters"]
    assert [p["parameter_name"] for p in params] == ["text", "mode"] and params[1]["parameter_has_default"]
    assert client.predict("The staff were lovely.", api_name="/sentiment")["mode"] == "prompt"
    assert client.predict("The staff were lovely.", "prompt", api_name="/sentiment")["mode"] == "prompt"
    with pytest.raises(Exception, match="cannot answer in head mode on this model: no head fitted"):
        client.predict("The staff were lovely.", "head", api_name="/sentiment")
    with pytest.raises(Exception, match="Unknown mode 'best'"):
        client.predict("The staff were lovely.", "best", api_name="/sentiment")
    heads = httpx.get(live_app.url + "/ready").json()["heads"]
    assert heads["sentiment"]["status"] == "missing" and "ops.heads fit" in heads["sentiment"]["detail"]


def test_chat_api_with_history_and_streaming(client):
    history = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    reply = client.predict("How are you?", history, api_name="/chat")
    assert isinstance(reply, str) and reply
    job = client.submit("How are you?", history, api_name="/chat")
    chunks = list(job)
    assert len(chunks) > 1 and chunks[-1] == reply
    assert all(b.startswith(a) for a, b in zip(chunks, chunks[1:]))


def test_errors_are_friendly_text_not_stack_traces(client):
    with pytest.raises(Exception) as err:
        client.predict("   ", api_name="/sentiment")
    assert "Please enter some text." in str(err.value)
    assert "Traceback" not in str(err.value)
    with pytest.raises(Exception, match="Invalid chat history"):
        client.predict("hi", "not a list", api_name="/chat")


def test_missing_model_dir_keeps_serving_health_and_explains(tmp_path):
    missing = tmp_path / "not-installed"
    app = LiveApp(["--model-dir", str(missing), "--log-dir", str(tmp_path)], tmp_path / "console.log",
                  wait_ready=False)
    try:
        assert httpx.get(app.url + "/health").status_code == 200
        ready = httpx.get(app.url + "/ready")
        for _ in range(50):
            if ready.json()["state"] == "failed":
                break
            ready = httpx.get(app.url + "/ready")
        assert ready.status_code == 503
        assert str(missing) in ready.json()["reason"]
        assert "python -m ops.models install-default" in ready.json()["reason"]
        with pytest.raises(Exception, match="not available") as err:
            Client(app.url, verbose=False).predict("hello", api_name="/sentiment")
        assert "Traceback" not in str(err.value)
    finally:
        app.stop()


def test_auth_protects_the_ui_and_api(tiny_app_args, tmp_path):
    app = LiveApp([*tiny_app_args, "--log-dir", str(tmp_path), "--auth", "teacher:secret"],
                  tmp_path / "console.log")
    try:
        assert httpx.get(app.url + "/health").status_code == 200  # probes need no password
        assert httpx.get(app.url + "/config").status_code == 401
        with pytest.raises(Exception):
            Client(app.url, verbose=False)
        authed = Client(app.url, auth=("teacher", "secret"), verbose=False)
        assert authed.predict("good", api_name="/sentiment")["label"] in ("positive", "negative")
    finally:
        app.stop()


def test_a_full_queue_answers_busy_instead_of_hanging(tiny_app_args, tmp_path):
    app = LiveApp([*tiny_app_args, "--log-dir", str(tmp_path), "--max-new-tokens", "200",
                   "--max-active-chats", "1", "--queue-max-size", "2"], tmp_path / "console.log")
    try:
        client = Client(app.url, verbose=False)
        jobs = [client.submit(f"Hello {i}", api_name="/chat") for i in range(6)]
        outcomes = []
        for job in jobs:
            try:
                outcomes.append(("ok", job.result(timeout=120)))
            except Exception as exc:  # gradio_client's QueueError
                outcomes.append(("busy", str(exc)))
        busy = [text for kind, text in outcomes if kind == "busy"]
        assert busy and all("try again" in text.lower() for text in busy)
        assert any(kind == "ok" for kind, _ in outcomes)
    finally:
        app.stop()


def test_chats_past_the_slots_wait_in_line_and_see_their_place(tiny_app_args, tmp_path):
    """Browser and API chats share the engine's slots; the rest wait in Gradio's queue, which
    tells each waiting client its place in line (the browser shows it on the chat)."""
    from gradio_client.utils import Status

    app = LiveApp([*tiny_app_args, "--log-dir", str(tmp_path), "--max-new-tokens", "60",
                   "--max-active-chats", "1"], tmp_path / "console.log")
    try:
        client = Client(app.url, verbose=False)
        client.predict("warm up", api_name="/chat")  # the first call pays one-off costs
        jobs = [client.submit(f"Hello {i}", api_name="/chat") for i in range(4)]
        ranks = set()
        while not jobs[-1].done():
            for job in jobs:
                status = job.status()
                if status.code == Status.IN_QUEUE and status.rank is not None:
                    ranks.add(status.rank)
            time.sleep(0.05)
        assert ranks and max(ranks) >= 1  # it was told it had others ahead of it
        assert all(isinstance(job.result(timeout=120), str) for job in jobs)  # and every chat was answered
    finally:
        app.stop()


def test_metrics_count_real_requests(live_app, client):
    client.predict("counted", api_name="/sentiment")
    text = httpx.get(live_app.url + "/metrics").text
    assert 'allinone_requests_total{outcome="ok",task="sentiment"}' in text
    assert 'allinone_model_state{state="ready"} 1.0' in text
    assert "process_resident_memory_bytes" in text


def test_operator_reload_under_traffic_fails_no_request(tiny_app_args, tmp_path):
    import threading

    app = LiveApp([*tiny_app_args, "--log-dir", str(tmp_path), "--admin-token", "t0ken"],
                  tmp_path / "console.log")
    try:
        client = Client(app.url, verbose=False)
        expected = client.predict("steady traffic", api_name="/sentiment")
        errors, answers, stop = [], [], threading.Event()

        def traffic():
            while not stop.is_set():
                try:
                    answers.append(client.predict("steady traffic", api_name="/sentiment"))
                except Exception as exc:  # any failure is a finding
                    errors.append(repr(exc))

        worker = threading.Thread(target=traffic)
        worker.start()
        before = httpx.get(app.url + "/ready").json()["last_self_test"]["at"]
        assert httpx.post(app.url + "/admin/reload").status_code == 401
        reply = httpx.post(app.url + "/admin/reload", headers={"Authorization": "Bearer t0ken"})
        assert reply.status_code == 202
        deadline = time.monotonic() + 60
        while httpx.get(app.url + "/ready").json()["last_self_test"]["at"] == before:
            assert time.monotonic() < deadline, "the reload never finished"
            time.sleep(0.2)
        time.sleep(1.0)
        stop.set()
        worker.join(30)
        assert errors == []
        assert answers and all(a == expected for a in answers)
    finally:
        app.stop()
