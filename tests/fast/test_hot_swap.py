"""The running app follows the model store (tiny models, real app): hot swap under load, automatic
rollback of a version that answers wrongly, and the gray-release flow over two instances."""

from __future__ import annotations

import threading
import time

import httpx
import pytest
from gradio_client import Client

from ops.store.cli import main as models_cli
from ops.store.versions import ModelStore
from tests.conftest import LiveApp
from tests.fast.test_lifecycle import wait_for

TOKEN = "swap"
TEXT = "known answer"


def cli(root, *args):
    return models_cli(["--root", str(root), *args])


@pytest.fixture(scope="module")
def store(tiny_model_dir, wrong_tiny_model_dir, tmp_path_factory) -> ModelStore:
    root = tmp_path_factory.mktemp("store") / "models"
    for version in ("1", "2", "3"):
        assert cli(root, "install", str(tiny_model_dir), "--version", version) == 0
    assert cli(root, "install", str(wrong_tiny_model_dir), "--version", "wrong") == 0
    assert cli(root, "activate", "tiny-qwen2@1") == 0
    return ModelStore(root)


def start_app(store, tiny_probes_file, logs, *extra) -> LiveApp:
    return LiveApp(["--models-root", str(store.root), "--probes-file", str(tiny_probes_file), "--admin-token", TOKEN,
                    "--log-dir", str(logs), "--max-new-tokens", "12", *extra], logs / "console.log")


@pytest.fixture(scope="module")
def app(store, tiny_probes_file, tmp_path_factory):
    live = start_app(store, tiny_probes_file, tmp_path_factory.mktemp("swap-logs"))
    yield live
    live.stop()


def serving(app) -> str | None:
    return httpx.get(app.url + "/ready").json()["model"]


def metric(app, name: str, **labels) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(app.url + "/metrics").text
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


class Traffic:
    """``clients`` gradio_client users sending the same sentiment request in a loop, and a
    watcher noting every model ``/ready`` names meanwhile."""

    def __init__(self, app, clients: int = 4) -> None:
        self.app, self.clients = app, clients
        self.answers, self.errors, self.models = [], [], set()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._user) for _ in range(clients)]
        self._threads.append(threading.Thread(target=self._watch))

    def _user(self) -> None:
        client = Client(self.app.url, verbose=False)
        while not self._stop.is_set():
            try:
                self.answers.append(client.predict(TEXT, api_name="/sentiment")["label"])
            except Exception as exc:  # noqa: BLE001 - a failed request is what these tests look for
                self.errors.append(str(exc))

    def _watch(self) -> None:
        while not self._stop.is_set():
            self.models.add(serving(self.app))
            time.sleep(0.05)

    def __enter__(self) -> "Traffic":
        for t in self._threads:
            t.start()
        assert wait_for(lambda: len(self.answers) >= self.clients, timeout=30)
        return self

    def __exit__(self, *exc) -> None:
        time.sleep(1.0)  # some traffic after the switch, too
        self._stop.set()
        for t in self._threads:
            t.join(30)


def next_good_version(store) -> str:
    current = store.current()
    return next(f"tiny-qwen2@{v}" for v in ("1", "2", "3") if f"tiny-qwen2@{v}" != current)


def test_hot_swap_under_four_clients_fails_no_request(app, store):
    expected = Client(app.url, verbose=False).predict(TEXT, api_name="/sentiment")["label"]
    before, target = store.current(), next_good_version(store)
    switches = metric(app, "allinone_model_switches_total", mode="beside")
    with Traffic(app, clients=4) as traffic:
        assert cli(store.root, "activate", target) == 0  # the watchdog notices the link within seconds
        assert wait_for(lambda: serving(app) == target, timeout=60)
    assert traffic.errors == []
    assert set(traffic.answers) == {expected} and len(traffic.answers) > 8
    assert traffic.models == {before, target}  # never anything else, never "not ready"
    assert metric(app, "allinone_model_switches_total", mode="beside") == switches + 1


def test_admin_reload_switches_to_the_activated_version_at_once(app, store):
    target = next_good_version(store)
    assert cli(store.root, "activate", target) == 0
    response = httpx.post(app.url + "/admin/reload", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 202
    assert wait_for(lambda: serving(app) == target, timeout=60)


def test_a_version_that_answers_wrongly_is_rolled_back_and_never_serves(app, store):
    good = store.current()
    assert wait_for(lambda: serving(app) == good, timeout=60)
    expected = Client(app.url, verbose=False).predict(TEXT, api_name="/sentiment")["label"]
    rollbacks = metric(app, "allinone_rollbacks_total", cause="self_test")
    with Traffic(app, clients=2) as traffic:
        assert cli(store.root, "activate", "tiny-qwen2@wrong") == 0
        assert wait_for(lambda: metric(app, "allinone_rollbacks_total", cause="self_test") == rollbacks + 1,
                        timeout=60)
    assert store.current() == good and store.previous() == "tiny-qwen2@wrong"
    assert "self-test failed" in store.rejected()["tiny-qwen2@wrong"]["reason"]
    assert traffic.models == {good} and traffic.errors == []
    assert set(traffic.answers) == {expected}
    ready = httpx.get(app.url + "/ready").json()
    assert ready["state"] == "ready" and "rolled back" in ready["reason"]
    time.sleep(3)  # longer than a vitals interval: the rejected version is not tried again
    assert metric(app, "allinone_rollbacks_total", cause="self_test") == rollbacks + 1


def test_gray_release_moves_the_standby_first_then_the_primary(app, store, tiny_probes_file, wrong_tiny_model_dir,
                                                               tmp_path, capsys):
    assert cli(store.root, "install", str(wrong_tiny_model_dir), "--version", "wrong-gray") == 0
    start = store.current()
    assert cli(store.root, "activate", start, "--link", "standby") == 0
    standby = start_app(store, tiny_probes_file, tmp_path, "--model-dir", str(store.root / "standby"))
    try:
        assert serving(standby) == start
        gray = ["gray", "--standby", standby.url, "--primary", app.url, "--token", TOKEN, "--watch-s", "1",
                "--probes-file", str(tiny_probes_file)]
        # a bad version stops at the standby (which rolls it back); the primary never sees it
        assert cli(store.root, *gray, "tiny-qwen2@wrong-gray") == 1
        assert "gray release stopped: standby rolled tiny-qwen2@wrong-gray back" in capsys.readouterr().err
        assert store.current("standby") == start and store.current() == start and serving(app) == start
        target = next_good_version(store)
        assert cli(store.root, *gray, target) == 0
        out = capsys.readouterr().out
        assert out.index("standby: standby ->") < out.index("primary: current ->") and "done" in out
        assert serving(standby) == target and serving(app) == target
        assert store.current() == target and store.current("standby") == target
    finally:
        standby.stop()
