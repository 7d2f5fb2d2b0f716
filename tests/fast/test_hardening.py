"""Hardening: limits at the edge, a request error is not a sick model, security mends
(issue "Hardening"). Units here; the live app's side is in test_hardening_live.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from engine.errors import InferenceFailed, InvalidInput, InvalidOutput
from engine.tasks import load_tasks
from engine.kinds.classify import ClassifyRequest
from engine.kinds.base import LimitExceeded, RequestLimits
from engine.kinds.generate import ChatRequest, fit_history
from engine.kinds.registry import check_request
from ops.api.admin import AdminActions, AdminDenied, WrongTokenThrottle, add_admin_routes, body_limits
from ops.serving.body_limit import BodyLimit
from ops.serving.health import add_health_routes, redact_paths
from ops.serving.readiness import RecoveryCause
from ops.serving.service import ModelService
from ops.store.versions import ModelStore
from tests.conftest import REPO
from tests.fakes import FakeWorker, running, wait_for

LIMITS = RequestLimits(max_message_chars=100, max_history_messages=4, max_history_chars=50, max_lines=3)


def turns(n: int, text: str = "hi") -> list[dict]:
    return [{"role": "user" if i % 2 == 0 else "assistant", "content": text} for i in range(n)]


# ----- limits at the edge -------------------------------------------------------------------------

@pytest.mark.parametrize("request_, message", [
    (ChatRequest("x" * 101), "Message too long: 101 characters, the limit is 100."),
    (ChatRequest("hi", turns(400)), "History too long: 400 messages, the limit is 4."),
    (ChatRequest("hi", turns(4, "y" * 20)), "History too long: 80 characters, the limit is 50."),
    (ClassifyRequest(["a", "b", "c", "d"]), "Too many lines: 4, the limit is 3 per request."),
    (ClassifyRequest(["ok", "z" * 101]), "Line 2 too long: 101 characters, the limit is 100."),
])
def test_every_refusal_names_its_limit(request_, message):
    with pytest.raises(LimitExceeded) as refused:
        check_request(request_, LIMITS)
    assert str(refused.value) == message and isinstance(refused.value, InvalidInput)


def test_what_fits_passes_and_text_that_is_not_unicode_is_refused():
    check_request(ChatRequest("x" * 100, turns(4, "y" * 12)), LIMITS)
    check_request(ClassifyRequest(["a", "b", "c"]), LIMITS)
    for bad in (ChatRequest("lone \ud800 surrogate"), ClassifyRequest(["ok", "\udfff"]),
                ChatRequest("hi", [{"role": "user", "content": "\ud83d"}])):
        with pytest.raises(InvalidInput, match="not valid Unicode"):
            check_request(bad, LIMITS)


def test_the_chat_tab_sends_only_the_newest_history_that_fits():
    history = turns(9, "12345678901")  # 9 x 11 characters: over both limits
    fitted = fit_history(history, LIMITS)
    check_request(ChatRequest("hi", fitted), LIMITS)
    assert fitted == history[-len(fitted):] and fitted[0]["role"] == "user" and len(fitted) >= 3


class CountingWorker(FakeWorker):
    """Fails when asked to; counts what reached it."""

    def __init__(self, path=None):
        super().__init__(path)
        self.failures: list[Exception] = []
        self.seen = 0

    def classify(self, task, texts):
        self.seen += 1
        if self.failures:
            raise self.failures.pop(0)
        return super().classify(task, texts)


def service_with(worker_class=CountingWorker, **kwargs) -> tuple[ModelService, list]:
    workers: list = []

    def start(target=None):
        workers.append(worker_class())
        return workers[-1]

    service = running(ModelService(load_tasks(), start, limits=LIMITS, **kwargs))
    assert service.readiness.wait_ready(5)
    return service, workers


def test_the_service_refuses_over_the_limits_before_the_worker_sees_anything():
    service, workers = service_with()
    try:
        seen_at_start = workers[0].seen  # the self-test at load
        with pytest.raises(LimitExceeded, match="the limit is 3"):
            service.classify("sentiment", ["a", "b", "c", "d"])
        with pytest.raises(LimitExceeded, match="History too long: 400 messages"):
            service.generate("chat", "hi", turns(400))
        assert workers[0].seen == seen_at_start
    finally:
        service.lifecycle.close()


# ----- a request error is not a sick model ----------------------------------------------------------

def test_one_failed_request_is_its_own_error_and_three_in_a_row_reload():
    service, workers = service_with()
    try:
        workers[0].failures = [InferenceFailed("boom")]
        with pytest.raises(InferenceFailed):
            service.classify("sentiment", ["a"])
        assert service.readiness.snapshot().ready and sum(service.readiness.stats.recoveries.values()) == 0
        assert service.classify("sentiment", ["a"])  # a success resets the count
        workers[0].failures = [InferenceFailed("boom")] * 2
        for _ in range(2):
            with pytest.raises(InferenceFailed):
                service.classify("sentiment", ["a"])
        assert sum(service.readiness.stats.recoveries.values()) == 0  # two, with a success before them: still fine
        workers[0].failures = [InferenceFailed("boom")]
        with pytest.raises(InferenceFailed):
            service.classify("sentiment", ["a"])  # the third in a row
        assert service.readiness.stats.recoveries["failed_request"] == 1
        assert wait_for(lambda: len(workers) == 2 and service.readiness.snapshot().ready)
    finally:
        service.lifecycle.close()


def test_nan_output_reloads_at_once():
    service, workers = service_with()
    try:
        workers[0].failures = [InvalidOutput()]
        with pytest.raises(InvalidOutput):
            service.classify("sentiment", ["a"])
        assert service.readiness.stats.recoveries["invalid_output"] == 1
        assert wait_for(lambda: len(workers) == 2 and service.readiness.snapshot().ready)
    finally:
        service.lifecycle.close()


def test_the_failure_count_is_a_flag(tmp_path):
    service, workers = service_with(failures_before_reload=1)
    try:
        workers[0].failures = [InferenceFailed("boom")]
        with pytest.raises(InferenceFailed):
            service.classify("sentiment", ["a"])
        assert service.readiness.stats.recoveries[RecoveryCause.FAILED_REQUEST.value] == 1
    finally:
        service.lifecycle.close()


# ----- security mends -------------------------------------------------------------------------------

class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_the_sixth_wrong_token_within_a_minute_gets_429_even_with_the_right_one():
    clock = Clock()
    actions = AdminActions(FakeWorker(), "s3cret", throttle=WrongTokenThrottle(clock=clock))
    for _ in range(5):
        with pytest.raises(AdminDenied) as denied:
            actions.authorize("guess", "10.0.0.7")
        assert denied.value.status == 401
    with pytest.raises(AdminDenied) as denied:
        actions.authorize("s3cret", "10.0.0.7")
    assert denied.value.status == 429 and denied.value.retry_after_s == 60
    actions.authorize("s3cret", "10.0.0.8")  # another address is not blocked
    for _ in range(10):  # no token at all is no guess: refused, never throttled
        with pytest.raises(AdminDenied) as denied:
            actions.authorize(None, "10.0.0.9")
        assert denied.value.status == 401
    actions.authorize("s3cret", "10.0.0.9")
    clock.now += 61
    actions.authorize("s3cret", "10.0.0.7")  # the minute has passed


def test_the_admin_routes_answer_429_with_retry_after():
    service, _ = service_with()
    try:
        app = FastAPI()
        add_admin_routes(app, AdminActions(service, "s3cret"))
        client = TestClient(app)
        codes = [client.post("/admin/reload", headers={"Authorization": "Bearer wrong"}).status_code
                 for _ in range(6)]
        assert codes == [401] * 5 + [429]
        blocked = client.post("/admin/reload", headers={"Authorization": "Bearer s3cret"})
        assert blocked.status_code == 429 and int(blocked.headers["Retry-After"]) > 0
    finally:
        service.lifecycle.close()


def test_the_admin_token_from_a_file_or_the_environment_and_a_warning_for_the_command_line(tmp_path):
    from engine.errors import ConfigError
    from ops.serving.config import load_config

    token_file = tmp_path / "token"
    token_file.write_text("from-file\n")
    assert load_config(["--admin-token-file", str(token_file)], environ={}).admin_token == "from-file"
    assert load_config([], environ={"ALLINONE_ADMIN_TOKEN": "from-env"}).admin_token == "from-env"
    assert load_config([], environ={"ALLINONE_ADMIN_TOKEN": "from-env"}).warnings == ()
    warned = load_config(["--admin-token", "on-the-command-line"], environ={})
    assert warned.admin_token == "on-the-command-line" and "visible" in warned.warnings[0]
    assert "on-the-command-line" not in repr(warned)
    with pytest.raises(ConfigError, match="Cannot read the admin token file"):
        load_config(["--admin-token-file", str(tmp_path / "missing")], environ={})


def test_ready_hides_paths_from_the_network_but_not_from_the_admin():
    assert redact_paths("No model at /srv/allinone/models/current. Run: x") == "No model at …/current. Run: x"
    service, _ = service_with()
    try:
        service.readiness.update(reason="No model at /srv/allinone/models/current.")
        admin = AdminActions(service, "s3cret")
        app = FastAPI()
        add_health_routes(app, service.readiness, hide_paths=True, is_admin=admin.allows)
        client = TestClient(app)
        assert client.get("/ready").json()["reason"] == "No model at …/current."
        assert client.get("/ready", headers={"Authorization": "Bearer s3cret"}).json()["reason"] == \
            "No model at /srv/allinone/models/current."
    finally:
        service.lifecycle.close()


def test_the_body_of_the_apps_own_routes_is_capped():
    app = FastAPI()

    @app.post("/admin/echo")
    async def echo(request: Request):
        return {"bytes": len(await request.body())}

    @app.post("/gradio_api/x")
    async def gradio(request: Request):
        return {"bytes": len(await request.body())}

    client = TestClient(BodyLimit(app, max_bytes=1000))
    assert client.post("/admin/echo", content=b"x" * 1000).json() == {"bytes": 1000}
    refused = client.post("/admin/echo", content=b"x" * 1001)
    assert refused.status_code == 413 and "the limit is 1000" in refused.json()["error"]["message"]
    chunked = client.post("/admin/echo", content=iter([b"x" * 600, b"x" * 600]))  # no Content-Length
    assert chunked.status_code == 413
    assert client.post("/gradio_api/x", content=b"x" * 5000).json() == {"bytes": 5000}  # Gradio's own



def test_a_tasks_examples_have_their_own_cap_of_2_mib_and_the_other_admin_routes_keep_theirs(tmp_path):
    from ops.api.runtime_tasks import RuntimeTasks

    service, _ = service_with()
    try:
        app = FastAPI()
        app.add_middleware(BodyLimit, max_bytes=2**20, routes=body_limits(2**20))  # as app.py, at the default
        add_admin_routes(app, AdminActions(service, "s3cret", tasks=RuntimeTasks(load_tasks(), tmp_path)))
        client = TestClient(app, headers={"Authorization": "Bearer s3cret"})
        topic = {"kind": "classify", "title": "Topic", "labels": ["food", "sport"], "instruction": "Food or sport?"}
        assert client.put("/admin/tasks/topic", json=topic).status_code == 200
        rows = [{"text": f"{i} " + "word " * 740, "label": ("food", "sport")[i % 2]} for i in range(400)]
        body = "".join(json.dumps(row) + "\n" for row in rows).encode()
        assert 1.4e6 < len(body) < 1.6e6
        taught = client.put("/admin/tasks/topic/examples", content=body)  # past --max-body-bytes, within 2 MiB
        assert taught.status_code == 200 and taught.json()["per_label"] == {"food": 200, "sport": 200}
        checked = client.put("/admin/tasks/topic/examples", content=body.replace(b'"sport"', b'"music"'))
        assert checked.status_code == 400 and "Label 'music' on line 2" in checked.json()["detail"]  # its own checks
        for big in (b"x" * 3_000_000, iter([b"x" * 1_000_000] * 3)):  # declared, and chunked with no length
            refused = client.put("/admin/tasks/topic/examples", content=big)
            assert refused.status_code == 413
            assert "the limit is 2097152 bytes (2 MiB, a task's examples)" in refused.json()["error"]["message"]
        other = client.put("/admin/tasks/topic", content=json.dumps({**topic, "instruction": "x" * 1_500_000}))
        assert other.status_code == 413
        assert "the limit is 1048576 bytes (1 MiB, --max-body-bytes)" in other.json()["error"]["message"]
        assert client.post("/admin/tasks/topic/examples", content=body).status_code == 413  # only its PUT
        assert client.put("/admin/tasks/a/b/examples", content=body).status_code == 413  # one name, one segment
    finally:
        service.lifecycle.close()
    assert body_limits(4 * 2**20) == ()  # a larger --max-body-bytes serves the route as it is; the route
    #                                       refuses over 2 MiB itself (test_teach)

@pytest.mark.parametrize("entry", ["../x", "/etc/passwd", "sub/../../x"])
def test_a_manifest_naming_a_path_outside_its_version_is_refused_before_anything_is_read(tmp_path, entry):
    store = ModelStore(tmp_path / "models")
    store.install("m", "1", lambda d: (d / "model.safetensors").write_bytes(b"w" * 100))
    version = store.root / "m@1"
    manifest = json.loads((version / "MANIFEST").read_text())
    manifest["files"][entry] = {"sha256": "0" * 64, "size": 1}
    os.chmod(version, 0o755)
    os.chmod(version / "MANIFEST", 0o644)
    (version / "MANIFEST").write_text(json.dumps(manifest))
    problems = store.verify("m@1")
    assert problems and "outside the version" in problems[0] and entry in problems[0]
    cli = [sys.executable, "-m", "ops.models", "--root", str(store.root)]
    for command in (["verify", "m@1"], ["activate", "m@1"]):
        result = subprocess.run(cli + command, cwd=REPO, capture_output=True, text=True)
        assert result.returncode == 1 and "outside the version" in result.stdout + result.stderr, result


def test_a_link_naming_something_that_is_not_a_version_is_refused(tmp_path):
    from engine.errors import ModelInstallError

    store = ModelStore(tmp_path / "models")
    store.install("m", "1", lambda d: (d / "model.safetensors").write_bytes(b"w"))
    os.symlink("../../etc", store.root / "sneaky")
    with pytest.raises(ModelInstallError, match="not a version of this store"):
        store.activate(store.resolve_key("sneaky"))
