"""The watchdog: its decisions with fake inputs, and every drill on the tiny model."""

from __future__ import annotations

import threading
import time

import httpx
import pytest
from gradio_client import Client

from ops.serving.disk import DiskCheck
from ops.serving.readiness import RecoveryCause
from ops.serving.watchdog import Action, Vitals, Watchdog, WatchdogConfig, decide, load_probes
from tests.conftest import LiveApp
from tests.fakes import wait_for

CONFIG = WatchdogConfig(interval_s=15, hang_limit_s=10, memory_limit_bytes=1000)


def vitals(**changes):
    base = dict(ready=True, stuck_for_s=0.0, rss_bytes=500, seconds_since_success=None)
    base.update(changes)
    return Vitals(**base)


@pytest.mark.parametrize(
    "v, probe_due, action",
    [
        (vitals(ready=False), True, "skip"),  # loading/recovering: the loader is in charge
        (vitals(), False, "ok"),
        (vitals(), True, "probe"),
        (vitals(seconds_since_success=3.0), True, "ok"),  # real traffic is evidence
        (vitals(seconds_since_success=20.0), True, "probe"),
        (vitals(stuck_for_s=10.5), False, "recover"),  # a hang
        (vitals(stuck_for_s=9.0), False, "ok"),  # a long step is not yet a hang
        (vitals(rss_bytes=2000), False, "recover"),  # over the memory limit
        (vitals(files_changed=True), False, "recover"),  # weights changed under the running model
        (vitals(damaged="model.safetensors: SHA-256 mismatch"), False, "restore"),  # a store version: hashed
        (vitals(switched_to="m@2"), False, "switch"),  # models/current was moved: load the new version
        (vitals(switched_to="m@2", stuck_for_s=11), False, "recover"),  # a hang comes first
        (vitals(switched_to="m@2", ready=False), False, "skip"),  # a load is under way
        (vitals(worker_alive=False), False, "recover"),  # the worker process ended (crash, OOM kill)
        (vitals(worker_alive=False, ready=False), False, "skip"),  # ...while a load is already in charge
    ],
)
def test_decisions(v, probe_due, action):
    assert decide(v, CONFIG, probe_due).action == action


@pytest.mark.parametrize("v, cause", [
    (vitals(stuck_for_s=10.5), RecoveryCause.HANG),
    (vitals(rss_bytes=2000), RecoveryCause.MEMORY),
    (vitals(files_changed=True), RecoveryCause.FILES),
    (vitals(worker_alive=False, stuck_for_s=60), RecoveryCause.WORKER_EXIT),  # a dead worker is not "hung"
])
def test_every_recovery_names_its_cause(v, cause):
    decision = decide(v, CONFIG, probe_due=False)
    assert decision.action is Action.RECOVER and decision.cause is cause and decision.reason


def test_no_memory_limit_means_no_memory_recovery():
    assert decide(vitals(rss_bytes=10**12), WatchdogConfig(), False).action == "ok"


class FakeService:
    """The service and every part of it the watchdog uses (``WatchedService``), in one recording fake."""

    def __init__(self, answer="positive", stuck=0.0):
        self.answer, self.stuck = answer, stuck
        self.recovered, self.tests, self.reloaded, self.restored = [], [], [], []
        self.causes = []
        self.on_disk = DiskCheck()
        self.ready = True
        self.since_success = None
        self.alive = True
        self.serving = None  # the serving worker, as the supervisor names it
        self.readiness = self.supervisor = self.disk = self.lifecycle = self.recovery = self.spare = self

    def snapshot(self):
        return type("S", (), {"ready": self.ready})()

    def stuck_for(self):
        return self.stuck

    def worker_alive(self):
        return self.alive

    def worker_rss_bytes(self):
        return 1

    def tend(self):
        self.spare_tended = getattr(self, "spare_tended", 0) + 1

    def seconds_since_success(self):
        return self.since_success

    def check(self):
        return self.on_disk

    def reload(self, reason, operator=True):
        self.reloaded.append((reason, operator))

    def replace_damaged(self, reason):
        self.restored.append(reason)

    def record_self_test(self, passed, duration, detail):
        self.tests.append((passed, detail))

    def recover(self, cause, reason):
        self.causes.append(cause)
        self.recovered.append(reason)

    def classify(self, task, texts):
        from engine.kinds.classify import ClassifyResult

        labels = [self.answer if not callable(self.answer) else self.answer(text) for text in texts]
        return [ClassifyResult(task, label, 1.0, {label: 1.0}, False) for label in labels]

    def generate(self, task, message, history=None, options=None):
        from engine.chat import ChatUpdate

        yield ChatUpdate("hi", "hi", True, "stop", (), 1)


def expected_answers(text):
    return {p[1]: p[2] for p in load_probes().classify}[text]


def test_passing_probes_are_recorded():
    service = FakeService(answer=expected_answers)
    assert Watchdog(service, load_probes(), CONFIG, rss=lambda: 1).run_self_test() == "probe"
    assert service.tests[-1][0] is True and not service.recovered


def test_a_wrong_answer_triggers_recovery():
    service = FakeService(answer="positive")  # the negative probes get a wrong answer
    assert Watchdog(service, load_probes(), CONFIG, rss=lambda: 1).run_self_test() == "recover"
    assert service.tests[-1][0] is False
    assert "expected negative" in service.recovered[0] and service.causes == [RecoveryCause.SELF_TEST]


def test_probes_that_failed_on_a_worker_replaced_meanwhile_take_out_no_other():
    """A probe in flight on a worker that a recovery replaced fails with it (its request times out, or
    the worker is killed under it): that says nothing of the worker serving now (a drill under load)."""
    from engine.errors import InferenceTimeout

    service = FakeService(answer=expected_answers)
    service.serving = "the hung worker the probe went to"

    def replaced_meanwhile(task, texts):
        service.serving = "the warm spare, self-tested and serving"
        raise InferenceTimeout()

    service.classify = replaced_meanwhile
    assert Watchdog(service, load_probes(), CONFIG, rss=lambda: 1).run_self_test() == "probe"
    assert service.recovered == [] and service.tests == []


def test_a_probe_that_hangs_in_a_stuck_worker_is_cut_off_and_recovered():
    service = FakeService(answer=expected_answers)

    def hang(task, texts):
        service.stuck = 60.0  # the engine's worker is stuck on this step
        time.sleep(30)

    service.classify = hang
    dog = Watchdog(service, load_probes(), WatchdogConfig(probe_timeout_s=0.5), rss=lambda: 1)
    started = time.monotonic()
    assert dog.run_self_test() == "recover"
    assert time.monotonic() - started < 5
    assert "longer than" in service.recovered[0]


def test_slow_probes_on_an_overloaded_machine_are_never_a_reason_to_reload():
    service = FakeService(answer=expected_answers)
    release = threading.Event()
    service.classify = lambda task, texts: release.wait(0.8) and []  # slow, worker not stuck
    dog = Watchdog(service, load_probes(), WatchdogConfig(probe_timeout_s=0.3), rss=lambda: 1)
    assert dog.run_self_test() == "probe" and service.recovered == []
    assert service.tests[-1][0] is False and "overloaded" in service.tests[-1][1]
    assert dog.run_self_test() == "probe"  # the slow probe is still running: none piles up
    assert len(service.tests) == 1
    for _ in range(4):
        time.sleep(0.6)  # let the previous slow probe end
        dog.run_self_test()
    assert service.recovered == []  # slow again and again, the worker alive: a queue, not a sick model
    assert len(service.tests) >= 4 and all("overloaded" in detail for _, detail in service.tests)


def test_vitals_follow_the_store_link_and_the_manifest():
    service = FakeService()
    dog = Watchdog(service, load_probes(), CONFIG, rss=lambda: 1)
    service.on_disk = DiskCheck(switched_to="m@2")
    assert dog.check_vitals() == "switch"
    assert service.reloaded == [("the model link now names m@2", False)]  # not counted as an operator reload
    service.on_disk = DiskCheck(damaged="model.safetensors: SHA-256 mismatch")
    assert dog.check_vitals() == "restore"
    assert "SHA-256 mismatch" in service.restored[0] and not service.recovered


def test_vitals_catch_a_hang_without_running_the_model():
    service = FakeService(stuck=60.0)
    assert Watchdog(service, load_probes(), CONFIG, rss=lambda: 1).check_vitals() == "recover"
    assert "hung" in service.recovered[0] and service.causes == [RecoveryCause.HANG]


def test_vitals_catch_a_worker_that_ended():
    service = FakeService()
    service.alive = False
    assert Watchdog(service, load_probes(), CONFIG, rss=lambda: 1).check_vitals() == "recover"
    assert service.causes == [RecoveryCause.WORKER_EXIT]


# ----- drills on the tiny model, through the running app --------------------------------


def fault(app, kind, token="drill"):
    return httpx.post(f"{app.url}/admin/fault/{kind}", headers={"Authorization": f"Bearer {token}"})


def recoveries(app, cause: str | None = None) -> float:
    """Recoveries so far (of one cause, or all), from /metrics: durable evidence, unlike polling
    /ready, which can miss a recovery that takes half a second on the tiny model."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(app.url + "/metrics").text
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == "allinone_recoveries_total" and cause in (None, s.labels.get("cause")))


def run_drill(app, kind):
    """Steady traffic with a known answer while the fault hits; returns what clients saw.
    ``kind`` is a drill's name, or a function that breaks the app some other way."""
    client = Client(app.url, verbose=False)
    expected = client.predict("known answer", api_name="/sentiment")
    seen, stop = [], threading.Event()

    def traffic():
        while not stop.is_set():
            try:
                seen.append(("ok", client.predict("known answer", api_name="/sentiment")))
            except Exception as exc:
                seen.append(("error", str(exc)))
            time.sleep(0.05)

    worker = threading.Thread(target=traffic)
    worker.start()
    states = []
    recovered_before = recoveries(app)
    try:
        if callable(kind):
            kind()
        else:
            assert fault(app, kind).status_code == 202
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert httpx.get(app.url + "/health").status_code == 200  # liveness holds throughout
            # The count first, then the state: a "ready" read before a recovery began must not pass
            # for the end of that recovery (it once did, and the next /ready named no worker).
            recovered = recoveries(app) > recovered_before
            states.append(httpx.get(app.url + "/ready").json()["state"])
            if recovered and states[-1] == "ready":
                break
            time.sleep(0.2)
    finally:
        stop.set()
        worker.join(30)
    return expected, seen, states


@pytest.mark.parametrize("kind", ["nan-weights", "hang", "error", "exit"])
def test_drill_is_detected_and_healed_with_no_wrong_answer(drill_app, kind):
    worker_before = httpx.get(drill_app.url + "/ready").json()["worker_pid"]
    expected, seen, states = run_drill(drill_app, kind)
    assert recoveries(drill_app) >= 1 and states[-1] == "ready", states
    wrong = [answer for outcome, answer in seen if outcome == "ok" and answer != expected]
    assert wrong == []
    errors = [text for outcome, text in seen if outcome == "error"]
    assert all("Traceback" not in e for e in errors)
    if kind == "hang":
        assert any("too long" in e or "recovering" in e.lower() or "not ready" in e for e in errors), errors
    assert Client(drill_app.url, verbose=False).predict("known answer", api_name="/sentiment") == expected
    # Recovery replaced the worker process: the suspect one is gone, with all it held.
    worker_after = httpx.get(drill_app.url + "/ready").json()["worker_pid"]
    assert worker_after not in (None, worker_before)
    assert not pid_running(worker_before)
    assert drill_app.proc.poll() is None  # the web process served throughout


def test_a_slow_step_on_a_busy_machine_is_not_taken_for_a_hang(drill_app):
    """The ``slow`` drill computes for 4 s in one step, twice the drill app's hang limit, as a step on an
    overloaded machine does: the worker is alive (its process uses the CPU), so no recovery, the request
    that waited is answered, and /ready stays 200 throughout."""
    worker_before = httpx.get(drill_app.url + "/ready").json()["worker_pid"]
    recovered_before = recoveries(drill_app)
    client = Client(drill_app.url, verbose=False)
    expected = client.predict("known answer", api_name="/sentiment")
    assert fault(drill_app, "slow").status_code == 202
    answers, states, done = [], [], threading.Event()

    def ask():
        try:
            answers.append(client.predict("known answer", api_name="/sentiment"))
        finally:
            done.set()

    asker = threading.Thread(target=ask)
    started = time.monotonic()
    asker.start()
    while not done.is_set() or time.monotonic() - started < 6:  # past the step, and a vitals look after it
        states.append(httpx.get(drill_app.url + "/ready").status_code)
        time.sleep(0.2)
    asker.join(30)
    assert answers == [expected]
    assert time.monotonic() - started >= 4  # the step really was slow
    assert recoveries(drill_app) == recovered_before and set(states) == {200}, states
    assert httpx.get(drill_app.url + "/ready").json()["worker_pid"] == worker_before


def pid_running(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.parametrize("signal_name, cause", [("SIGKILL", "worker_exit"), ("SIGSTOP", "hang")])
def test_a_killed_or_stopped_worker_is_replaced_with_no_wrong_answer(drill_app, signal_name, cause):
    """A real crash (SIGKILL) and a real hang (SIGSTOP: the process cannot even answer) of the
    worker process, from outside the app: noticed, the worker replaced, nothing wrong served."""
    import os
    import signal

    worker_before = httpx.get(drill_app.url + "/ready").json()["worker_pid"]
    expected, seen, states = run_drill(drill_app, lambda: os.kill(worker_before, getattr(signal, signal_name)))
    assert recoveries(drill_app, cause) == 1 and states[-1] == "ready", states
    assert [answer for outcome, answer in seen if outcome == "ok" and answer != expected] == []
    assert all("Traceback" not in text for outcome, text in seen if outcome == "error")
    worker_after = httpx.get(drill_app.url + "/ready").json()["worker_pid"]
    assert worker_after not in (None, worker_before) and not pid_running(worker_before)


@pytest.fixture()
def spare_app(tiny_app_args, tmp_path):
    """A drill app with a warm spare worker (``--spare-worker``), once its spare is parked."""
    app = LiveApp([*tiny_app_args, "--log-dir", str(tmp_path), "--admin-token", "drill", "--fault-injection",
                   "--self-test-interval-s", "1", "--hang-limit-s", "2", "--request-timeout-s", "5",
                   "--spare-worker"], tmp_path / "console.log")
    assert wait_for(lambda: httpx.get(app.url + "/ready").json()["spare_pid"] is not None, timeout=60)
    yield app
    app.stop()


@pytest.mark.parametrize("signal_name, cause", [("SIGKILL", "worker_exit"), ("SIGSTOP", "hang")])
def test_with_a_spare_a_recovery_is_a_switch_to_it_and_a_new_spare_warms(spare_app, signal_name, cause):
    import os
    import signal

    before = httpx.get(spare_app.url + "/ready").json()
    expected, seen, states = run_drill(spare_app, lambda: os.kill(before["worker_pid"], getattr(signal, signal_name)))
    assert recoveries(spare_app, cause) == 1 and states[-1] == "ready", states
    assert [answer for outcome, answer in seen if outcome == "ok" and answer != expected] == []
    after = httpx.get(spare_app.url + "/ready").json()
    assert after["worker_pid"] == before["spare_pid"]  # the spare took over: nothing was loaded first
    assert wait_for(lambda: not pid_running(before["worker_pid"]))
    assert wait_for(lambda: httpx.get(spare_app.url + "/ready").json()["spare_pid"] not in (None, before["spare_pid"]),
                    timeout=60)
    assert Client(spare_app.url, verbose=False).predict("known answer", api_name="/sentiment") == expected


def test_exit_app_drill_ends_the_web_process(drill_app):
    assert fault(drill_app, "exit-app").status_code == 202
    assert drill_app.proc.wait(10) == 1


def test_drills_need_the_token_and_the_flag(drill_app, live_app):
    assert fault(drill_app, "hang", token="wrong").status_code == 401
    assert fault(drill_app, "meteor").status_code == 404
    assert httpx.post(f"{live_app.url}/admin/fault/hang").status_code == 403  # no admin token configured


def test_a_flood_of_wrong_admin_tokens_is_refused_and_changes_nothing(drill_app):
    """The soak's last fault: 200 admin calls with a wrong token, eight at a time, beside a user. Refused
    (401, then 429 once one address has sent too many wrong tokens), and nothing else changes."""
    from concurrent.futures import ThreadPoolExecutor

    before = httpx.get(drill_app.url + "/ready").json()
    client = Client(drill_app.url, verbose=False)
    expected = client.predict("known answer", api_name="/sentiment")
    with httpx.Client(base_url=drill_app.url, timeout=10) as raw, ThreadPoolExecutor(8) as pool:
        calls = [pool.submit(raw.post, path, headers={"Authorization": "Bearer wrong"})
                 for path in ["/admin/reload", "/admin/fault/hang", "/admin/fault/exit-app", "/admin/fault/exit"] * 50]
        answer = client.predict("known answer", api_name="/sentiment")
        codes = {call.result().status_code for call in calls}
    assert codes == {401, 429} and answer == expected
    after = httpx.get(drill_app.url + "/ready").json()
    assert after["state"] == "ready" and after["worker_pid"] == before["worker_pid"]
    assert recoveries(drill_app) == 0 and drill_app.proc.poll() is None


def test_hang_drills_in_a_row_leave_no_process_and_no_memory_behind(drill_app):
    """Each hang ends with its worker killed: nothing of it survives, and the web process does not
    grow (a hung thread used to keep a whole model alive beside its replacement)."""
    import psutil

    web = psutil.Process(drill_app.proc.pid)
    web_rss_before = web.memory_info().rss
    workers = [httpx.get(drill_app.url + "/ready").json()["worker_pid"]]
    for _ in range(3):
        before = recoveries(drill_app, "hang")
        expected, seen, states = run_drill(drill_app, "hang")
        assert recoveries(drill_app, "hang") == before + 1 and states[-1] == "ready", states
        assert [a for outcome, a in seen if outcome == "ok" and a != expected] == []
        workers.append(httpx.get(drill_app.url + "/ready").json()["worker_pid"])
    assert len(set(workers)) == 4 and not any(pid_running(pid) for pid in workers[:-1])
    assert [c.pid for c in web.children(recursive=True)] == [workers[-1]]  # one worker, the serving one
    assert web.memory_info().rss - web_rss_before < 50 * 2**20
