"""The Status tab's data: event history, the latency/memory timeline, operator actions, and rendering."""

from __future__ import annotations

import pytest

from engine.errors import ModelNotFound
from ops.api.admin import AdminActions, AdminDenied
from ops.serving.history import EventLog, Timeline
from ops.serving.readiness import RecoveryCause
from tests.fakes import FakeWorker, ready_service, wait_for
from ops.serving.peers import Peers
from ui.status_tab import (EVENT_COLUMNS, LIFECYCLE, PEER_COLUMNS, SELF_TEST, event_frame, headers, memory_frame,
                           peer_frame, summary_markdown)


class Clock:
    def __init__(self, now=1000.0):
        self.now = now

    def __call__(self):
        return self.now


def test_event_log_is_bounded_newest_first_and_filters_by_kind():
    clock = Clock()
    log = EventLog(keep=3, clock=clock)
    for i in range(5):
        clock.now += 1
        log.add("self-test" if i % 2 else "reload", True, f"e{i}")
    recent = log.recent()
    assert [e["detail"] for e in recent] == ["e4", "e3", "e2"]
    assert [e["detail"] for e in log.recent(kinds=("self-test",))] == ["e3"]
    assert log.recent(limit=1)[0]["at"] == 1005.0


def test_timeline_aggregates_latency_and_memory_per_bucket():
    clock = Clock(100.0)
    timeline = Timeline(bucket_s=5, keep_buckets=2, clock=clock)
    timeline.observe_latency("sentiment", 1.0)
    timeline.observe_latency("sentiment", 3.0)
    timeline.observe_latency("chat", 2.0)
    timeline.observe_memory(web=10 * 2**20, worker=100 * 2**20)
    timeline.observe_memory(web=30 * 2**20, worker=0)  # 0: no sample (no worker serving)
    clock.now = 106.0
    timeline.observe_memory(web=20 * 2**20)
    rows = timeline.latency_rows()
    assert rows == [
        {"time": 100.0, "task": "chat", "mean_s": 2.0, "max_s": 2.0, "requests": 1},
        {"time": 100.0, "task": "sentiment", "mean_s": 2.0, "max_s": 3.0, "requests": 2},
    ]
    assert timeline.memory_rows() == [{"time": 100.0, "process": "web", "rss_mib": 30.0},
                                      {"time": 100.0, "process": "worker", "rss_mib": 100.0},
                                      {"time": 105.0, "process": "web", "rss_mib": 20.0}]
    clock.now = 111.0
    timeline.observe_memory(web=1)
    assert [r["time"] for r in timeline.memory_rows()] == [105.0, 110.0]  # bounded: the oldest bucket went


def test_the_service_records_loads_reloads_and_failed_reloads():
    calls = []

    def load(target=None):
        calls.append(1)
        if len(calls) == 3:
            raise ModelNotFound("No model at /gone")
        return FakeWorker()

    with ready_service(load) as service:
        assert service.lifecycle.reload("operator request")
        assert wait_for(lambda: len(service.readiness.events.recent(kinds=("loaded",))) == 2)
        assert service.lifecycle.reload("operator request")
        assert wait_for(lambda: service.readiness.events.recent(kinds=("load-failed",)))
        kinds = [e["kind"] for e in reversed(service.readiness.events.recent(kinds=LIFECYCLE))]
        assert kinds == ["loaded", "reload", "loaded", "reload", "load-failed"]
        assert "/gone" in service.readiness.events.recent(kinds=("load-failed",))[0]["detail"]
        assert len(service.readiness.events.recent(kinds=SELF_TEST)) == 2  # each successful load's self-test


def test_the_service_records_a_recovery_with_its_reason():
    with ready_service() as service:
        service.readiness.record_self_test(False, 0.1, "self-test failed: wrong answer")
        assert service.recovery.recover(RecoveryCause.SELF_TEST, "self-test failed: wrong answer")
        assert wait_for(lambda: service.readiness.events.recent(kinds=("recovered",)))
        recovering = service.readiness.events.recent(kinds=("recovering",))[0]
        assert recovering["ok"] is False and "wrong answer" in recovering["detail"]
        assert service.readiness.events.recent(kinds=SELF_TEST)[-1]["ok"] is True  # the startup self-test
        assert any(not e["ok"] for e in service.readiness.events.recent(kinds=SELF_TEST))


class Recorder:
    """The service and the parts of it that ``AdminActions`` uses, in one recording fake."""

    def __init__(self):
        self.faults, self.reloads = [], []
        self.lifecycle = self.readiness = self

    def inject_fault(self, kind):
        self.faults.append(kind)

    def reload(self, reason):
        self.reloads.append(reason)
        return True

    def snapshot(self):
        from ops.serving.readiness import HealthSnapshot, State

        return HealthSnapshot(State.READY, "fake@1", None, None, 0, 0.0)


@pytest.mark.parametrize("token, fault_injection, kind, status", [
    (None, True, "error", 403),  # no admin token configured: off
    ("s3cret", True, "error", 401),  # wrong token given (see below)
    ("s3cret", False, "error", 403),  # drills not enabled
    ("s3cret", True, "format-disk", 404),
])
def test_admin_actions_refuse_with_the_reason(token, fault_injection, kind, status):
    service = Recorder()
    actions = AdminActions(service, token, fault_injection)
    given = "wrong" if status == 401 else token
    with pytest.raises(AdminDenied) as denied:
        actions.fault(kind, given)
    assert denied.value.status == status and denied.value.message
    assert service.faults == []


def test_admin_actions_run_drills_and_reloads_with_the_right_token():
    service = Recorder()
    actions = AdminActions(service, "s3cret", fault_injection=True)
    assert actions.fault("nan-weights", "s3cret") == {"injected": "nan-weights"}
    assert actions.reload("s3cret")["reloading"] is True
    assert service.faults == ["nan-weights"] and service.reloads == ["operator request"]
    assert AdminActions(service, "s3cret").fault_kinds == ()  # no buttons without --fault-injection
    with pytest.raises(AdminDenied):
        actions.reload("")


def test_status_rendering():
    snapshot = {"state": "failed", "model": None, "reason": "No model at /x", "consecutive_failures": 3,
                "uptime_s": 12.0, "last_self_test": {"passed": False, "at": 0.0, "duration_s": 0.5,
                                                      "detail": "wrong answer"}}
    text = summary_markdown(snapshot)
    assert "failed" in text and "No model at /x" in text and "FAILED" in text and "wrong answer" in text
    ready = summary_markdown({**snapshot, "state": "ready", "precision": {"format": "bf16", "reason": "auto: x"},
                              "backend": {"name": "llamacpp", "reason": "auto: y"}})
    assert "bf16 (auto: x)" in ready and "llamacpp (auto: y)" in ready
    frame = event_frame([{"at": 0.0, "kind": "recovering", "ok": False, "detail": "hung"}])
    assert list(frame.columns) == headers(EVENT_COLUMNS) == ["Time", "Event", "Detail"]
    assert frame.iloc[0, 1] == "✗ recovering" and frame.iloc[0, 2] == "hung"
    assert memory_frame([]).empty


def test_peers_show_readiness_model_and_latency_and_a_dead_peer_costs_one_timeout(live_app):
    import time

    from tests.conftest import free_port

    dead = f"http://127.0.0.1:{free_port()}"
    started = time.perf_counter()
    rows = Peers([live_app.url, dead], timeout_s=1.0).check()
    assert time.perf_counter() - started < 5  # asked at once, not one after the other
    alive, gone = rows
    assert alive["url"] == live_app.url and alive["ready"] is True and alive["state"] == "ready"
    assert alive["model"] == "tiny-qwen2@test" and alive["latency_ms"] >= 0
    assert gone == {"url": dead, "ready": False, "state": "unreachable", "model": None, "latency_ms": None,
                    "error": "ConnectError"}
    frame = peer_frame(rows)
    assert list(frame.columns) == headers(PEER_COLUMNS)
    assert frame.iloc[0].tolist()[:4] == [live_app.url, "✓", "ready", "tiny-qwen2@test"]
    assert frame.iloc[1].tolist()[1:5] == ["✗", "unreachable", "—", "—"]
    assert Peers([]).check() == []


def test_the_viewer_sees_times_in_their_zone_with_the_date_when_not_today_and_their_language():
    from zoneinfo import ZoneInfo

    from ui.demo import status_text
    from ui.viewer import Viewer, viewer_of

    tokyo = viewer_of('{"tz": "Asia/Tokyo", "lang": "zh-CN"}')
    assert tokyo == Viewer(ZoneInfo("Asia/Tokyo"), True)
    assert viewer_of("not json") == Viewer() and viewer_of('{"tz": "Mars/Base"}') == Viewer()
    noon_utc = 1_767_268_800.0  # 2026-01-01 12:00 UTC: 21:00 in Tokyo
    assert tokyo.clock(noon_utc, now=noon_utc) == "21:00:00"
    assert tokyo.clock(noon_utc - 86_400, now=noon_utc) == "2025-12-31 21:00:00"
    axis = memory_frame([{"time": noon_utc, "process": "worker", "rss_mib": 1.0}], tokyo)["time"]
    assert str(axis.iloc[0]) == "2026-01-01 12:00:00+00:00"  # an instant: the browser draws it in Tokyo time
    assert status_text({"state": "ready", "model": "m@1"}, tokyo) == "就绪: `m@1`"
    assert status_text({"state": "ready", "model": "m@1"}) == "Ready: `m@1`"
    assert "就绪" not in summary_markdown({"state": "ready", "uptime_s": 1}) and "模型" in summary_markdown(
        {"state": "ready", "uptime_s": 1}, tokyo)
