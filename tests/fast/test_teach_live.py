"""Teaching a task by example through the live app (tiny model): the admin routes' refusals, a fit end to end
(202, progress, then a head that answers), other users served meanwhile, and all of it kept across a restart."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest

from tests.conftest import LiveApp

TOKEN = "teach-token"
TOPIC = {"kind": "classify", "title": "Topic", "labels": ["food", "sport"],
         "instruction": "Is the text about food or sport? Answer with one word."}
FOOD = ["pizza with cheese", "a bowl of noodles", "fresh bread and butter", "rice and beans", "apple pie",
        "hot soup", "grilled fish", "chocolate cake", "a plate of pasta", "sushi rolls"]
SPORT = ["a football match", "the tennis final", "running a marathon", "swimming laps", "a basketball game",
         "the cycling race", "a boxing bout", "skiing downhill", "a rugby scrum", "the golf open"]
CSV = "text,label\n" + "".join(f"{t},food\n" for t in FOOD) + "".join(f"{t},sport\n" for t in SPORT)


def call(app: LiveApp, method: str, path: str, **kwargs) -> httpx.Response:
    headers = {"Authorization": f"Bearer {TOKEN}", **kwargs.pop("headers", {})}
    return httpx.request(method, f"{app.url}/admin/tasks/{path}", headers=headers, timeout=60, **kwargs)


def classify(app: LiveApp, task: str, texts: list[str]) -> list[dict]:
    reply = httpx.post(app.url + "/v1/classify", json={"task": task, "input": texts}, timeout=60)
    assert reply.status_code == 200, reply.text
    return reply.json()["data"]


def ready_heads(app: LiveApp) -> dict[str, str]:
    """What /ready (and so the Status tab) says of each taught task's head."""
    return {task: head["status"] for task, head in httpx.get(app.url + "/ready", timeout=60).json()["heads"].items()}


@pytest.fixture()
def teach_app(tiny_app_args, tmp_path, live_app):
    args = [*tiny_app_args, "--log-dir", str(tmp_path)]
    app = LiveApp(args, tmp_path / "console.log", env={"ALLINONE_ADMIN_TOKEN": TOKEN})
    yield app, args, tmp_path
    app.stop()


def test_the_admin_routes_refuse_what_cannot_be_taught_naming_it(teach_app):
    app, *_ = teach_app
    assert call(app, "PUT", "topic", json=TOPIC).status_code == 200
    assert call(app, "PUT", "helper", json={"kind": "generate", "system_prompt": "Be brief."}).status_code == 200
    cases = [
        ("topic/examples", CSV, {"headers": {"Authorization": "Bearer wrong"}}, 401, "admin token"),
        ("nope/examples", CSV, {}, 404, "no runtime task 'nope'"),
        ("helper/examples", CSV, {}, 400, "'helper' is a generate task"),
        ("sentiment/examples", CSV, {}, 409, "shipped tasks file"),
        ("topic/examples", CSV.replace("sushi rolls,food", "sushi rolls,music"), {}, 400, "Label 'music' on line 11"),
        ("topic/examples", CSV + "pizza with cheese,sport\n", {}, 400, "line 22 repeats line 2"),
        ("topic/examples", "text,label\n" + "".join(f"{t},food\n" for t in FOOD), {}, 400, "sport has 0"),
        ("topic/examples", "", {}, 400, "empty"),
        ("topic/examples", "text,label\n\xff,food\n".encode("latin-1"), {}, 400, "not UTF-8"),
        ("topic/examples", "x" * (2 * 2**20 + 1), {}, 413, "the limit is 2097152 bytes (2 MiB"),
    ]
    for path, body, extra, status, fragment in cases:
        reply = call(app, "PUT", path, content=body, **extra)
        message = reply.json().get("detail") or reply.json()["error"]["message"]
        assert (reply.status_code, fragment in message) == (status, True), (path, reply.text)
    assert call(app, "POST", "topic/fit").status_code == 400  # no examples yet
    assert call(app, "POST", "helper/fit").status_code == 400
    assert call(app, "POST", "nope/fit").status_code == 404
    assert call(app, "GET", "nope").status_code == 404
    shown = call(app, "GET", "topic").json()
    assert shown["examples"] is None and shown["serving"]["mode"] == "prompt" and shown["fit"] is None


def test_a_fit_runs_in_the_background_while_others_are_served_and_its_head_answers_after_a_restart(teach_app):
    app, args, folder = teach_app
    assert call(app, "PUT", "topic", json=TOPIC).status_code == 200
    put = call(app, "PUT", "topic/examples", content=CSV, headers={"Content-Type": "text/csv"})
    assert put.status_code == 200 and put.json()["per_label"] == {"food": 10, "sport": 10}
    assert {row["mode"] for row in classify(app, "topic", FOOD[:2])} == {"prompt"}  # no head yet: it says so
    assert ready_heads(app)["topic"] == "missing"  # the examples' task change reports its head

    answers, stop = [], threading.Event()

    def other_user() -> None:
        while not stop.is_set():
            answers.append(classify(app, "sentiment", ["what a lovely day"])[0]["label"])

    user = threading.Thread(target=other_user)
    user.start()
    try:
        started = call(app, "POST", "topic/fit")
        assert started.status_code == 202 and started.json()["fit"]["stage"] == "reading"
        assert call(app, "POST", "topic/fit").status_code == 409  # one at a time
        seen = []
        for _ in range(600):
            fit = call(app, "GET", "topic").json()["fit"]
            seen.append((fit["stage"], fit["fraction"]))
            if fit["stage"] in ("done", "failed"):
                break
            time.sleep(0.1)
    finally:
        stop.set()
        user.join(60)
    assert fit["stage"] == "done", fit
    assert len(answers) >= 2 and set(answers) <= {"positive", "negative"}  # the other user was served meanwhile
    fractions = [f for _, f in seen]
    assert fractions == sorted(fractions) and any(0 < f < 1 for f in fractions)  # progress was visible
    result = fit["result"]
    assert result["labels"] == ["food", "sport"] and 0 <= result["cv_accuracy"] <= 1
    assert sum(map(sum, result["confusion"])) == result["train_examples"] == 16
    assert result["held_out"]["examples"] == 4 and set(result["held_out"]) >= {"prompt_accuracy", "head_accuracy"}
    shown = call(app, "GET", "topic").json()
    assert shown["serving"]["mode"] == "head"
    assert [h["status"] for h in shown["heads"]] == ["ready"] and shown["heads"][0]["layer"] == result["layer"]
    taught = classify(app, "topic", FOOD[:2] + SPORT[:2])
    assert {row["mode"] for row in taught} == {"head"}  # picked up by the serving worker, no restart
    assert ready_heads(app)["topic"] == "ready"  # and /ready says so at once, not at the next load
    app.stop()

    again = LiveApp(args, folder / "console-2.log", env={"ALLINONE_ADMIN_TOKEN": TOKEN})  # the same data dir
    try:
        assert classify(again, "topic", FOOD[:2] + SPORT[:2]) == taught
        shown = call(again, "GET", "topic").json()
        assert shown["fit"]["result"] == result and shown["serving"]["mode"] == "head"
        # New examples make the head stale: the task answers by prompt again, and says so.
        assert call(again, "PUT", "topic/examples", content=CSV.replace("sushi rolls", "ramen")).status_code == 200
        assert {row["mode"] for row in classify(again, "topic", FOOD[:1])} == {"prompt"}
        assert [h["status"] for h in call(again, "GET", "topic").json()["heads"]] == ["stale"]
        assert ready_heads(again)["topic"] == "stale"
        assert call(again, "DELETE", "topic").status_code == 200
        assert "topic" not in ready_heads(again)
        assert not list((folder / "data" / "heads").glob("topic@*")) and not (folder / "data" / "examples"
                                                                                / "topic.jsonl").exists()
    finally:
        again.stop()
    assert json.loads((folder / "data" / "tasks.json").read_text()) == {}


def test_the_tasks_tab_teaches_a_task_in_a_browser(teach_app):
    """The Tasks tab's panel: define, paste, save, fit with a progress bar, then the report and its plot."""
    from playwright.sync_api import expect

    from tests.fast.test_browser import ARTIFACTS, browser_page

    app, *_ = teach_app
    with browser_page(app.url, height=1600) as page:
        page.get_by_role("tab", name="Tasks").click()
        page.locator("#tasks-teach").click()
        page.locator("#teach-token input").fill(TOKEN)
        page.locator("#teach-name textarea").fill("topic")
        page.locator("#teach-labels textarea").fill("food, sport")
        page.locator("#teach-instruction textarea").fill(TOPIC["instruction"])
        page.locator("#teach-lines textarea").fill("".join(f"{t}\tfood\n" for t in FOOD[:7]))
        page.locator("#teach-save").click()
        expect(page.locator("#teach-outcome")).to_contain_text("food has 7")  # refused, naming the problem
        page.locator("#teach-lines textarea").fill(CSV)
        page.locator("#teach-save").click()
        expect(page.locator("#teach-outcome")).to_contain_text("20 examples saved (food 10, sport 10)")
        page.locator("#teach-fit").click()
        expect(page.locator("#teach-outcome")).to_contain_text("answers with its head now", timeout=180_000)
        expect(page.locator("#teach-confusion")).to_contain_text("True label")
        page.locator("#tasks-teach").screenshot(path=ARTIFACTS / "teach-panel.png")
    assert {row["mode"] for row in classify(app, "topic", FOOD[:1])} == {"head"}
