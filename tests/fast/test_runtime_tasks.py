"""Tasks defined at run time (ops/api/runtime_tasks.py, Engine.update_tasks, /admin/tasks): validated like the
tasks file, served without a reload while others keep chatting, kept across a restart, removable."""

from __future__ import annotations

import json
import threading
import time

import httpx
import openai
import pytest
from gradio_client import Client

from engine.errors import ConfigError, InvalidInput
from engine.tasks import load_tasks
from ops.api.runtime_tasks import RuntimeTasks, TaskChange, TaskConflict, TaskNotFound
from tests.conftest import LiveApp, make_engine

TOPIC = {"kind": "classify", "title": "Topic", "labels": ["food", "sport"],
         "instruction": "Is the text about food or sport? Answer with one word."}
HELPER = {"kind": "generate", "title": "Helper", "system_prompt": "You answer in one word."}


# ----- the registry and its file -------------------------------------------------------------


def test_runtime_tasks_are_validated_applied_then_kept(tmp_path):
    applied = []
    store = RuntimeTasks(load_tasks(), tmp_path)
    assert store.put("topic", TOPIC, applied.append) is TaskChange.ADDED
    assert store.put("topic", {**TOPIC, "title": "Topics"}, applied.append) is TaskChange.CHANGED
    assert [set(r.tasks) for r in applied] == [{"sentiment", "chat", "topic"}] * 2
    again = RuntimeTasks(load_tasks(), tmp_path)  # a restart reads the file
    assert again.registry().get("topic").title == "Topics" and again.runtime_tables() == {
        "topic": {**TOPIC, "title": "Topics"}}
    assert again.remove("topic", applied.append) is TaskChange.REMOVED
    assert "topic" not in RuntimeTasks(load_tasks(), tmp_path).registry().tasks


@pytest.mark.parametrize("table, fragment", [
    ({**TOPIC, "labels": ["food"]}, "two distinct labels"),
    ({**TOPIC, "instrucion": "typo"}, "unknown field 'instrucion'"),
    ({**TOPIC, "kind": "summarize"}, "'kind' must be"),
    ({**TOPIC, "probes": [{"text": "pizza", "label": "music"}]}, "probes[0] needs a 'text' and a 'label'"),
    ({**TOPIC, "examples_file": "x.jsonl"}, "'examples_file' is for tasks in a tasks file"),
    ({**HELPER, "temperature": True}, "'temperature' must be between 0 and 2"),
    ([1, 2], "a table of settings"),
])
def test_a_bad_definition_names_its_field_and_changes_nothing(tmp_path, table, fragment):
    store = RuntimeTasks(load_tasks(), tmp_path)
    store.put("topic", TOPIC, lambda registry: None)
    with pytest.raises(ConfigError) as err:
        store.put("topic", table, lambda registry: pytest.fail("a bad task reached the worker"))
    assert fragment in str(err.value)
    assert store.registry().get("topic").labels == ("food", "sport")
    assert json.loads((tmp_path / "tasks.json").read_text()) == {"topic": TOPIC}


def test_shipped_tasks_cannot_be_changed_and_a_refusal_by_the_worker_keeps_the_old_task(tmp_path):
    store = RuntimeTasks(load_tasks(), tmp_path)
    with pytest.raises(TaskConflict, match="read-only"):
        store.put("sentiment", TOPIC, lambda registry: None)
    with pytest.raises(TaskNotFound):
        store.remove("nope", lambda registry: None)
    store.put("topic", TOPIC, lambda registry: None)

    def refuse(registry):
        raise InvalidInput("labels spelt the same")

    with pytest.raises(InvalidInput):
        store.put("topic", {**TOPIC, "title": "New"}, refuse)
    assert store.registry().get("topic").title == "Topic" and store.runtime_tables()["topic"] == TOPIC


# ----- the engine ----------------------------------------------------------------------------


def test_the_engine_serves_a_new_task_without_a_reload_and_refuses_one_it_cannot_serve(tiny_handle, tasks):
    engine = make_engine(tiny_handle, tasks)
    try:
        with pytest.raises(InvalidInput, match="Unknown task 'topic'"):
            engine.classify("topic", ["pizza"])
        store = RuntimeTasks(tasks, tiny_handle.path.parent / "runtime-data")
        store.put("topic", TOPIC, engine.update_tasks)
        assert engine.classify("topic", ["pizza"])[0].label in ("food", "sport")
        clash = {**TOPIC, "labels": ["food", "drink"], "aliases": {"drink": ["food"]}}
        with pytest.raises(ConfigError, match="spelt the same"):  # found by the tokenizer, in the worker
            store.put("topic", clash, engine.update_tasks)
        assert engine.classify("topic", ["pizza"])[0].label in ("food", "sport")  # the old one still serves
        store.remove("topic", engine.update_tasks)
        with pytest.raises(InvalidInput, match="Unknown task 'topic'"):
            engine.classify("topic", ["pizza"])
        assert engine.classify("sentiment", ["good"])[0].label in ("positive", "negative")
    finally:
        engine.close()


# ----- the live app --------------------------------------------------------------------------


def admin(app: LiveApp, method: str, name: str, body: object = None) -> httpx.Response:
    return httpx.request(method, f"{app.url}/admin/tasks/{name}", json=body, timeout=60,
                         headers={"Authorization": "Bearer tasks-token"})


def classify(app: LiveApp, task: str, texts: list[str]) -> httpx.Response:
    return httpx.post(app.url + "/v1/classify", json={"task": task, "input": texts}, timeout=60)


def test_a_task_added_while_two_users_chat_answers_at_once_survives_a_restart_and_can_go(
        tiny_app_args, tmp_path, live_app):
    args = [*tiny_app_args, "--log-dir", str(tmp_path)]
    env = {"ALLINONE_ADMIN_TOKEN": "tasks-token"}
    app = LiveApp(args, tmp_path / "console.log", env=env)
    try:
        failures, chats = [], []
        stop = threading.Event()

        def chat_user() -> None:
            client = openai.OpenAI(base_url=app.url + "/v1", api_key="x", max_retries=0)
            while not stop.is_set():
                try:
                    stream = client.chat.completions.create(
                        model="chat", stream=True, max_tokens=12, messages=[{"role": "user", "content": "Hi"}])
                    chats.append("".join(c.choices[0].delta.content or "" for c in stream if c.choices))
                except Exception as exc:  # noqa: BLE001  (any failure is the finding)
                    failures.append(repr(exc))

        users = [threading.Thread(target=chat_user) for _ in range(2)]
        for user in users:
            user.start()
        time.sleep(1.0)
        added = time.monotonic()
        reply = admin(app, "PUT", "topic", TOPIC)
        assert reply.status_code == 200 and reply.json() == {"task": "topic", "change": "added"}
        answer = classify(app, "topic", ["pizza with cheese", "the tennis final"])
        assert answer.status_code == 200, answer.text
        assert time.monotonic() - added < 5.0  # answers within 5 s of being added
        labels = [row["label"] for row in answer.json()["data"]]
        assert set(labels) <= {"food", "sport"}
        # The same task from the Gradio API (the Tasks tab's endpoint), and a generate task as a model.
        gradio = Client(app.url, verbose=False)
        assert gradio.predict("topic", "pizza with cheese", api_name="/classify")["label"] == labels[0]
        assert admin(app, "POST", "helper", HELPER).status_code == 201
        assert "helper" in [m["id"] for m in httpx.get(app.url + "/v1/models").json()["data"]]
        assert admin(app, "POST", "helper", HELPER).status_code == 409
        stop.set()
        for user in users:
            user.join(60)
        assert failures == [] and len(chats) >= 2 and all(chats)

        # A broken definition is refused, naming the field; the old one keeps serving.
        broken = admin(app, "PUT", "topic", {**TOPIC, "labels": "food"})
        assert broken.status_code == 400 and "'labels' must be a list" in broken.json()["detail"]
        assert admin(app, "PUT", "sentiment", TOPIC).status_code == 409
        assert httpx.put(f"{app.url}/admin/tasks/topic", json=TOPIC).status_code == 401
        assert classify(app, "topic", ["pizza with cheese"]).status_code == 200
        # In a real browser: the Tasks tab lists it, runs it, and says which mode answered.
        from playwright.sync_api import expect

        from tests.fast.test_browser import browser_page

        with browser_page(app.url) as page:
            page.get_by_role("tab", name="Tasks").click()
            page.locator("#tasks-task input").click()
            page.get_by_role("option", name="topic").click()
            page.locator("#tasks-input textarea").fill("pizza with cheese")
            page.locator("#tasks-run").click()
            expect(page.locator("#tasks-label")).to_contain_text(labels[0])
            expect(page.locator("#tasks-mode-answered")).to_contain_text("prompt")
        # Its own known answers (the tiny model's, whatever they are) join the self-test.
        probes = [{"text": "pizza with cheese", "label": labels[0]}, {"text": "the tennis final", "label": labels[1]}]
        assert admin(app, "PUT", "topic", {**TOPIC, "probes": probes}).json()["change"] == "changed"
    finally:
        app.stop()

    app = LiveApp(args, tmp_path / "console-2.log", env=env)  # the same data directory
    try:
        ready = httpx.get(app.url + "/ready").json()
        assert ready["last_self_test"]["detail"].startswith("6 classify")  # 4 shipped probes + the task's 2
        assert [row["label"] for row in classify(app, "topic", ["pizza with cheese"]).json()["data"]] == labels[:1]
        assert admin(app, "DELETE", "topic").json() == {"task": "topic", "change": "removed"}
        gone = classify(app, "topic", ["pizza"])
        assert gone.status_code == 404 and gone.json()["error"]["param"] == "task"
        assert admin(app, "DELETE", "topic").status_code == 404
        listed = httpx.get(app.url + "/admin/tasks", headers={"Authorization": "Bearer tasks-token"}).json()
        assert listed == {"shipped": ["chat", "sentiment"], "runtime": {"helper": HELPER}}
    finally:
        app.stop()


def test_a_change_that_cannot_be_saved_is_undone_in_the_worker_too(tmp_path):
    from ops.api.runtime_tasks import TaskStoreError

    served = []
    store = RuntimeTasks(load_tasks(), tmp_path / "data")
    store.put("topic", TOPIC, served.append)
    import shutil

    shutil.rmtree(tmp_path / "data")
    (tmp_path / "data").write_text("a file where the data directory was")  # unwritable, even for root
    with pytest.raises(TaskStoreError, match="Nothing changed; set a writable --data-dir"):
        store.put("helper", HELPER, served.append)
    assert "helper" in served[-2].tasks and "helper" not in served[-1].tasks  # applied, then undone
    assert "helper" not in store.registry().tasks and set(store.runtime_tables()) == {"topic"}
