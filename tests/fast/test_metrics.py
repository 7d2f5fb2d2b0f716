"""Metrics: every request counted once by task and outcome; exposition parses."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from engine.errors import Busy, InvalidInput
from engine.chat import ChatUpdate
from ops.serving.metrics import InstrumentedInference, Metrics, outcome_of
from tests.conftest import chat_in_flight
from tests.fakes import FakeWorker


class FlakyEngine(FakeWorker):
    def classify(self, task, texts):
        if not texts or not texts[0].strip():
            raise InvalidInput("Please enter some text.")
        if texts[0] == "busy":
            raise Busy()
        return super().classify(task, texts)

    def generate(self, task, message, history=None, options=None):
        for i in range(1, 4):
            yield ChatUpdate("x" * i, "x", i == 3, "stop" if i == 3 else None, (), i)


def samples(metrics: Metrics) -> dict[tuple, float]:
    out = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


@pytest.fixture()
def instrumented():
    metrics = Metrics(state=lambda: "ready", queue_depth=lambda: 3)
    return InstrumentedInference(FlakyEngine(), metrics), metrics


def test_requests_are_counted_by_task_and_outcome(instrumented):
    service, metrics = instrumented
    service.classify("sentiment", ["good"])
    for bad in ([""], ["busy"]):
        with pytest.raises(Exception):
            service.classify("sentiment", bad)
    s = samples(metrics)
    assert s[("allinone_requests_total", (("outcome", "ok"), ("task", "sentiment")))] == 1
    assert s[("allinone_requests_total", (("outcome", "invalid_input"), ("task", "sentiment")))] == 1
    assert s[("allinone_requests_total", (("outcome", "busy"), ("task", "sentiment")))] == 1
    assert s[("allinone_request_duration_seconds_count", (("task", "sentiment"),))] == 1


def test_chats_count_tokens_and_stops(instrumented):
    service, metrics = instrumented
    assert list(service.generate("chat", "hi"))[-1].done
    stream = chat_in_flight(service, "hi")
    stream.close()
    s = samples(metrics)
    assert s[("allinone_requests_total", (("outcome", "ok"), ("task", "chat")))] == 1
    assert s[("allinone_requests_total", (("outcome", "cancelled"), ("task", "chat")))] == 1
    assert s[("allinone_generated_tokens_total", (("task", "chat"),))] == 4  # 3 + 1
    assert s[("allinone_time_to_first_token_seconds_count", (("task", "chat"),))] == 2


def test_state_queue_and_memory_are_exported(instrumented):
    _, metrics = instrumented
    s = samples(metrics)
    assert s[("allinone_model_state", (("state", "ready"),))] == 1
    assert s[("allinone_model_state", (("state", "failed"),))] == 0
    assert s[("allinone_queue_depth", ())] == 3
    assert s[("process_resident_memory_bytes", ())] > 0
    assert ("allinone_worker_resident_memory_bytes", ()) in s


def test_unknown_errors_have_their_own_outcome():
    assert outcome_of(None) == "ok"
    assert outcome_of(RuntimeError("x")) == "internal_error"


def test_self_tests_and_recoveries_are_exported():
    from ops.serving.readiness import RecoveryCause, ServiceStats

    stats = ServiceStats(self_tests={"passed": 4, "failed": 1}, recoveries={"hang": 2}, reloads=1,
                         last_recovery_s=12.5, rollbacks={"self_test": 2}, switches={"beside": 3},
                         integrity_failures=1)
    metrics = Metrics(state=lambda: "ready", queue_depth=lambda: 0, stats=lambda: stats)
    s = samples(metrics)
    assert s[("allinone_self_tests_total", (("result", "failed"),))] == 1
    assert s[("allinone_recoveries_total", (("cause", "hang"),))] == 2
    assert s[("allinone_operator_reloads_total", ())] == 1
    assert s[("allinone_last_recovery_duration_seconds", ())] == 12.5
    assert s[("allinone_rollbacks_total", (("cause", "self_test"),))] == 2
    assert s[("allinone_model_switches_total", (("mode", "beside"),))] == 3
    assert s[("allinone_integrity_failures_total", ())] == 1
    # Every cause is exported from the start, at 0 (increase() must see the first one).
    fresh = samples(Metrics(state=lambda: "ready", queue_depth=lambda: 0, stats=lambda: ServiceStats()))
    for cause in RecoveryCause:
        assert fresh[("allinone_recoveries_total", (("cause", cause.value),))] == 0
    assert {c.value for c in RecoveryCause} >= {"hang", "failed_request", "self_test", "worker_exit"}


@pytest.fixture()
def log_dir(tmp_path):
    import sys

    from loguru import logger

    from ops.serving.logs import setup_logging

    setup_logging(tmp_path)
    yield tmp_path
    logger.remove()
    logger.add(sys.stderr)


def records(path):
    import json

    from loguru import logger

    logger.complete()
    return [json.loads(line)["record"] for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.parametrize("log_text", [False, True])
def test_access_and_perf_logs_have_one_line_per_request(log_dir, log_text):
    metrics = Metrics(state=lambda: "ready", queue_depth=lambda: 0)
    service = InstrumentedInference(FlakyEngine(), metrics, log_text=log_text)
    service.classify("sentiment", ["secret review text"])
    with pytest.raises(Exception):
        service.classify("sentiment", ["busy"])
    list(service.generate("chat", "private question"))
    access = [r["extra"] for r in records(log_dir / "access.log")]
    assert [(a["task"], a["outcome"]) for a in access] == [("sentiment", "ok"), ("sentiment", "busy"), ("chat", "ok")]
    assert all(len(a["request_id"]) == 12 and a["latency_s"] >= 0 for a in access)
    logged_text = (log_dir / "access.log").read_text()
    assert ("secret review text" in logged_text) is log_text
    assert ("private question" in logged_text) is log_text
    perf = [r["extra"] for r in records(log_dir / "perf.log")]
    assert perf[-1]["tokens"] == 3 and perf[-1]["rss_bytes"] > 0 and "worker_rss_bytes" in perf[-1]
    assert "secret review text" not in (log_dir / "app.log").read_text()


def test_errors_go_to_the_error_log_with_their_trace(log_dir):
    from loguru import logger

    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logger.exception("worker failed")
    (error,) = records(log_dir / "error.log")
    assert error["message"] == "worker failed" and error["exception"]["type"] == "RuntimeError"


def test_memory_limit_is_the_tightest_cgroup_limit_capped_at_ram(tmp_path):
    from ops.serving.metrics import memory_limit_bytes

    import psutil

    unit = tmp_path / "system.slice" / "allinone@primary.service"
    unit.mkdir(parents=True)
    (unit / "memory.max").write_text(f"{6 * 2**30}\n")  # systemd MemoryMax=6G
    (unit.parent / "memory.max").write_text("max\n")
    proc = tmp_path / "cgroup"
    proc.write_text("0::/system.slice/allinone@primary.service\n")
    ram = psutil.virtual_memory().total
    assert memory_limit_bytes(tmp_path, proc) == min(6 * 2**30, ram)
    proc.write_text("4:memory:/docker/abc\n")  # cgroup v1, no limit files: the machine's RAM
    assert memory_limit_bytes(tmp_path, proc) == ram
    v1 = tmp_path / "memory" / "docker" / "abc"
    v1.mkdir(parents=True)
    (v1 / "memory.limit_in_bytes").write_text(f"{2**30}\n")
    assert memory_limit_bytes(tmp_path, proc) == 2**30
    assert 0 < memory_limit_bytes() <= ram  # this machine, whatever its cgroups say
