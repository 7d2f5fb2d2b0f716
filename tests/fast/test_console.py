"""The console for a few nodes (ops/tools/console): metrics maths, the alert rules kept in step with
alerts.yml, the bounded history, the poller, the actions, and the page in real Chromium against
two live nodes and an address where nothing listens."""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest
import yaml

from engine.errors import ConfigError, ModelInstallError
from ops.tools.console.actions import ActionKind, ActionLog, ActionStatus, ConsoleActions, GrayRelease
from ops.tools.console.alerts import (
    DEFAULT_ALERTS_FILE,
    AlertName,
    AlertRulesError,
    AlertState,
    AlertTracker,
    load_alert_rules,
)
from ops.common.net import free_port
from ops.serving.metrics import Metrics
from ops.serving.readiness import ServiceStats
from ops.store.versions import ModelStore
from ops.tools.console.poller import NodeHistory, Poller, PollerConfig, Reach, Sample
from ops.tools.console.promtext import Increase, MetricsReading, histogram_quantile, read_metrics
from tests.conftest import ARTIFACTS, REPO, LiveApp
from tests.fast.test_browser import ARGS, CHROMIUM, browser_page

TOKEN = "console-test-token"


# ----- reading /metrics, and the maths on two reads ----------------------------------------------------------


def app_metrics(worker_rss: float = 300 * 2**20, stats: ServiceStats | None = None) -> Metrics:
    """The app's own exporter (ops.serving.metrics), so the names the console reads are the ones it exports."""
    return Metrics(state=lambda: "ready", queue_depth=lambda: 0, worker_rss=lambda: worker_rss,
                   stats=lambda: stats)


def scrape(metrics: Metrics) -> MetricsReading:
    return read_metrics(metrics.render().decode())


def test_reads_the_series_the_console_needs_from_the_apps_exporter():
    stats = ServiceStats()
    stats.recoveries["hang"] = 2
    stats.recoveries["worker_exit"] = 1
    stats.rollbacks["self_test"] = 1
    metrics = app_metrics(worker_rss=123 * 2**20, stats=stats)
    metrics.requests.labels("sentiment", "ok").inc(3)
    metrics.requests.labels("chat", "timeout").inc()
    metrics.latency.labels("sentiment").observe(0.3)
    reading = scrape(metrics)
    assert reading.requests == {("sentiment", "ok"): 3, ("chat", "timeout"): 1}
    assert reading.duration_count == {"sentiment": 1} and reading.duration_sum == {"sentiment": pytest.approx(0.3)}
    assert reading.duration_buckets[("sentiment", 0.5)] == 1 and reading.duration_buckets[("sentiment", 0.25)] == 0
    assert reading.worker_rss_bytes == 123 * 2**20
    assert reading.web_rss_bytes > 10 * 2**20 and reading.memory_limit_bytes > reading.web_rss_bytes
    assert reading.recoveries == 3 and reading.rollbacks == 1
    assert reading.memory_ratio == pytest.approx((reading.web_rss_bytes + 123 * 2**20) / reading.memory_limit_bytes)


def test_rate_error_ratio_and_latency_quantiles_from_two_scrapes():
    rules = load_alert_rules()
    metrics = app_metrics()
    for _ in range(5):  # before the first scrape: must not count
        metrics.latency.labels("sentiment").observe(50.0)
        metrics.requests.labels("sentiment", "failed").inc()
    before = scrape(metrics)
    for _ in range(8):
        metrics.latency.labels("sentiment").observe(0.3)  # bucket (0.25, 0.5]
        metrics.requests.labels("sentiment", "ok").inc()
    for _ in range(2):
        metrics.latency.labels("sentiment").observe(3.0)  # bucket (2.5, 5]
    metrics.requests.labels("sentiment", "timeout").inc()  # an error
    metrics.requests.labels("sentiment", "busy").inc()  # not an error
    increase = Increase.between(before, scrape(metrics), seconds=5.0)
    assert increase.request_count == 10
    assert increase.requests_per_s() == pytest.approx(2.0)
    assert increase.error_ratio(rules.is_error) == pytest.approx(0.1)
    # rank 5 of 10 falls in (0.25, 0.5] holding 8: 0.25 + 0.25 * 5/8; rank 9.5 in (2.5, 5] holding 2 above 8.
    assert increase.latency_quantile(0.5) == pytest.approx(0.25 + 0.25 * 5 / 8)
    assert increase.latency_quantile(0.95) == pytest.approx(2.5 + 2.5 * 1.5 / 2)
    assert increase.mean_latency_by_task() == {"sentiment": pytest.approx((8 * 0.3 + 2 * 3.0) / 10)}


def test_chat_latency_is_time_to_first_token_as_the_slow_responses_rule_has_it():
    metrics = app_metrics()
    before = scrape(metrics)
    metrics.latency.labels("chat").observe(20.0)  # the whole answer streams for 20 s...
    metrics.first_token.labels("chat").observe(1.5)  # ...but the user waited 1.5 s for it to start
    metrics.latency.labels("sentiment").observe(0.2)
    means = Increase.between(before, scrape(metrics), 5.0).mean_latency_by_task()
    assert means == {"chat": pytest.approx(1.5), "sentiment": pytest.approx(0.2)}


def test_a_restarted_node_counts_from_zero_and_windows_add_up():
    old = MetricsReading(requests={("sentiment", "ok"): 100.0})
    restarted = MetricsReading(requests={("sentiment", "ok"): 4.0, ("chat", "ok"): 1.0})
    first = Increase.between(old, restarted, 5.0)
    assert first.requests == {("sentiment", "ok"): 4.0, ("chat", "ok"): 1.0}
    later = Increase.between(restarted, MetricsReading(requests={("sentiment", "ok"): 10.0, ("chat", "ok"): 1.0}),
                             5.0)
    window = Increase.total([first, later])
    assert window.seconds == 10.0 and window.request_count == 11 and window.requests_per_s() == pytest.approx(1.1)
    assert Increase.total([]) is None


@pytest.mark.parametrize("q, buckets, expected", [
    (0.5, [], None),
    (0.5, [(1.0, 3.0), (2.0, 4.0)], None),  # no +Inf bucket: Prometheus gives NaN
    (0.5, [(1.0, 0.0), (float("inf"), 0.0)], None),  # no observations
    (0.5, [(1.0, 4.0), (2.0, 8.0), (float("inf"), 8.0)], 1.0),  # rank 4 ends the first bucket
    (0.25, [(1.0, 4.0), (2.0, 8.0), (float("inf"), 8.0)], 0.5),  # the first bucket starts at 0
    (0.75, [(1.0, 4.0), (2.0, 8.0), (float("inf"), 8.0)], 1.5),
    (0.99, [(1.0, 4.0), (2.0, 8.0), (float("inf"), 10.0)], 2.0),  # in +Inf: the highest finite bound
    (0.0, [(1.0, 0.0), (2.0, 2.0), (float("inf"), 2.0)], 0.0),
])
def test_histogram_quantile_is_prometheus_histogram_quantile(q, buckets, expected):
    assert histogram_quantile(q, buckets) == expected


# ----- the alert rules: one source, ops/deploy/prometheus/alerts.yml ------------------------------------------


def _rule_expr(name: str) -> str:
    document = yaml.safe_load(DEFAULT_ALERTS_FILE.read_text())
    return next(" ".join(r["expr"].split()) for g in document["groups"] for r in g["rules"] if r.get("alert") == name)


def test_the_console_applies_the_thresholds_and_error_outcomes_of_alerts_yml():
    rules = load_alert_rules()
    for rule in rules.rules:
        expr = _rule_expr(rule.name.value)
        assert float(re.search(r">\s*([0-9.]+)\s*$", expr).group(1)) == rule.above, rule.name
    # An outcome is an error exactly when Prometheus' (fully anchored) outcome!~ matcher keeps it.
    not_errors = re.search(r'outcome!~"([^"]+)"', _rule_expr(AlertName.HIGH_ERROR_RATIO.value)).group(1)
    from ops.serving.metrics import _OUTCOMES

    outcomes = {"ok", "cancelled", "error", "internal_error", *(name for _, name in _OUTCOMES)}
    for outcome in outcomes:
        assert rules.is_error(outcome) == (re.fullmatch(not_errors, outcome) is None), outcome
    # What docs/operations.md ("Alerts") tells operators, so a change to the file is a change to the docs too.
    assert {o for o in outcomes if rules.is_error(o)} >= {"unavailable", "timeout", "failed", "error", "internal_error"}
    assert not any(rules.is_error(o) for o in ("ok", "invalid_input", "busy", "cancelled"))
    assert [(r.above, r.window_s, r.for_s) for r in rules.rules] == [(0.10, 300, 300), (8.0, 300, 300),
                                                                     (0.90, None, 120)]


def test_the_rules_are_read_from_the_file_at_run_time_and_a_changed_shape_stops_the_console(tmp_path):
    text = DEFAULT_ALERTS_FILE.read_text()
    moved = tmp_path / "moved.yml"
    moved.write_text(text.replace("allinone_memory_limit_bytes > 0.90", "allinone_memory_limit_bytes > 0.75")
                     .replace('outcome!~"ok|invalid_input|busy|cancelled|superseded"', 'outcome!~"ok|invalid_input|cancelled"'))
    rules = load_alert_rules(moved)
    assert rules.rule(AlertName.MEMORY_HIGH).above == 0.75 and rules.is_error("busy")
    for broken_text, why in [
        (text.replace("process_resident_memory_bytes + allinone_worker_resident_memory_bytes",
                      "allinone_worker_resident_memory_bytes"), "no longer contains"),
        (text.replace('{outcome!~"ok|invalid_input|busy|cancelled|superseded"}', '{outcome=~"failed.*"}'),
         "no longer contains"),
        (text.replace("- alert: AllInOneSlowResponses", "- alert: Renamed"), "has no alert AllInOneSlowResponses"),
        (text.replace("[5m]))\n            / sum by (job, instance) (rate(allinone_requests_total[5m]",
                      "[5m]))\n            / sum by (job, instance) (rate(allinone_requests_total[10m]"),
         "rate windows differ"),
        (text.replace("> 0.10\n", "> ten percent\n", 1), "does not end in"),
    ]:
        broken = tmp_path / "broken.yml"
        broken.write_text(broken_text)
        with pytest.raises(AlertRulesError, match=why):
            load_alert_rules(broken)


def test_an_alert_is_pending_until_its_condition_held_for_its_for_duration():
    rules = load_alert_rules()
    tracker = AlertTracker(rules)
    states = lambda statuses: {s.name: s.state for s in statuses}  # noqa: E731
    high = {AlertName.HIGH_ERROR_RATIO: 0.5, AlertName.SLOW_RESPONSES: 1.0, AlertName.MEMORY_HIGH: 0.95}
    assert states(tracker.update(1000.0, high)) == {AlertName.HIGH_ERROR_RATIO: AlertState.PENDING,
                                                    AlertName.SLOW_RESPONSES: AlertState.INACTIVE,
                                                    AlertName.MEMORY_HIGH: AlertState.PENDING}
    assert states(tracker.update(1000.0 + 120, high))[AlertName.MEMORY_HIGH] is AlertState.FIRING  # for: 2m
    assert states(tracker.update(1000.0 + 299, high))[AlertName.HIGH_ERROR_RATIO] is AlertState.PENDING
    assert states(tracker.update(1000.0 + 300, high))[AlertName.HIGH_ERROR_RATIO] is AlertState.FIRING  # for: 5m
    assert states(tracker.update(1000.0 + 305, {}))[AlertName.HIGH_ERROR_RATIO] is AlertState.NO_DATA
    assert states(tracker.update(1000.0 + 310, high))[AlertName.HIGH_ERROR_RATIO] is AlertState.PENDING  # anew


# ----- history and the poller --------------------------------------------------------------------------------


def test_the_history_is_bounded_and_windows_take_only_recent_increases():
    history = NodeHistory(keep=5)
    for i in range(12):
        history.add(Sample(float(i * 5), Reach.ANSWERING, increase=Increase(5.0, {("t", "ok"): 1.0})))
    samples = history.samples()
    assert [s.at for s in samples] == [35.0, 40.0, 45.0, 50.0, 55.0]
    assert history.latest().at == 55.0
    assert history.increase_over(now=55.0, seconds=10.0).request_count == 2  # the samples at 50 and 55
    assert PollerConfig(interval_s=5, keep_s=3600).keep_samples == 720


class FakeNodes:
    """Canned nodes behind an httpx transport: their counters move as the test says."""

    def __init__(self) -> None:
        self.metrics = {"http://a:1": app_metrics(), "http://b:1": app_metrics()}
        self.delay_s = 0.0

    def handle(self, request: httpx.Request) -> httpx.Response:
        base = f"{request.url.scheme}://{request.url.host}:{request.url.port}"
        time.sleep(self.delay_s)
        if base == "http://down:1":
            raise httpx.ConnectError("connection refused", request=request)
        if base == "http://other:1":
            return httpx.Response(200, text="<html>not a node</html>")
        if request.url.path == "/ready":
            return httpx.Response(200, json={"state": "ready", "model": "tiny@1", "uptime_s": 12.5,
                                             "last_self_test": {"passed": True, "at": 1000.0, "duration_s": 0.1,
                                                                "detail": "ok"}})
        return httpx.Response(200, content=self.metrics[base].render())


def fake_poller(nodes: FakeNodes, urls, clock, **config) -> Poller:
    client = httpx.Client(transport=httpx.MockTransport(nodes.handle))
    return Poller(urls, load_alert_rules(), PollerConfig(**config), client=client, clock=clock)


def test_the_poller_reads_every_node_and_names_the_down_one():
    nodes, now = FakeNodes(), [1000.0]
    poller = fake_poller(nodes, ["http://a:1", "http://down:1", "http://other:1"], lambda: now[0])
    poller.poll_once()
    a = nodes.metrics["http://a:1"]
    for _ in range(10):
        a.requests.labels("sentiment", "ok").inc()
        a.latency.labels("sentiment").observe(0.3)
    now[0] += 5
    poller.poll_once()
    view = poller.view()
    assert view.polls == 2 and view.polled_at == 1005.0
    up, down, other = (node.latest for node in view.nodes)
    assert up.state == "ready" and up.ready["model"] == "tiny@1" and up.reading.worker_rss_bytes == 300 * 2**20
    assert up.stats.requests_per_s == pytest.approx(2.0) and up.stats.error_ratio == 0
    assert 0.25 < up.stats.p50_s <= 0.5
    assert {s.name: s.state for s in up.alerts}[AlertName.HIGH_ERROR_RATIO] is AlertState.INACTIVE
    assert down.state == "down" and down.reach is Reach.DOWN and "nothing listening" in down.problem
    assert all(s.state is AlertState.NO_DATA for s in down.alerts)
    assert other.state == "bad answer" and "All-in-One node" in other.problem


def test_failing_requests_raise_the_error_alert_pending_then_firing():
    nodes, now = FakeNodes(), [1000.0]
    poller = fake_poller(nodes, ["http://a:1"], lambda: now[0])
    a = nodes.metrics["http://a:1"]
    poller.poll_once()
    for _ in range(62):  # five minutes and more of one ok and one failed request every 5 s
        a.requests.labels("sentiment", "ok").inc()
        a.requests.labels("sentiment", "unavailable").inc()
        now[0] += 5
        poller.poll_once()
        if now[0] == 1005.0:
            first = {s.name: s.state for s in poller.view().nodes[0].latest.alerts}
    latest = poller.view().nodes[0].latest
    assert first[AlertName.HIGH_ERROR_RATIO] is AlertState.PENDING
    assert latest.stats.error_ratio == pytest.approx(0.5)
    assert {s.name: s.state for s in latest.alerts}[AlertName.HIGH_ERROR_RATIO] is AlertState.FIRING


def test_one_round_asks_the_nodes_at_once():
    nodes = FakeNodes()
    nodes.delay_s = 0.4
    poller = fake_poller(nodes, ["http://a:1", "http://b:1", "http://down:1"], time.time)
    started = time.monotonic()
    poller.poll_once()
    # One after another it would be 3 nodes x 2 requests x 0.4 s; at once, one node's two requests.
    assert time.monotonic() - started < 1.6
    assert [n.latest.state for n in poller.view().nodes] == ["ready", "ready", "down"]


def test_the_background_poller_keeps_polling_until_stopped():
    poller = fake_poller(FakeNodes(), ["http://a:1"], time.time, interval_s=1.0).start()
    try:
        deadline = time.monotonic() + 10
        while poller.view().polls < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert poller.view().polls >= 2
    finally:
        poller.stop()
    polls = poller.view().polls
    time.sleep(1.5)
    assert poller.view().polls == polls


# ----- actions ------------------------------------------------------------------------------------------------


class FakeAdminNode:
    def __init__(self, token: str = TOKEN) -> None:
        self.token, self.reloads = token, []

    def handle(self, request: httpx.Request) -> httpx.Response:
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return httpx.Response(401, json={"detail": "A valid admin token is required."})
        self.reloads.append(str(request.url))
        return httpx.Response(202, json={"reloading": True, "state": "ready"})


def fake_actions(node: FakeAdminNode, **kwargs) -> ConsoleActions:
    return ConsoleActions(["http://a:1", "http://b:1"], client=httpx.Client(transport=httpx.MockTransport(node.handle)),
                          **kwargs)


def test_reload_forwards_the_token_and_shows_what_the_node_said():
    node = FakeAdminNode()
    actions = fake_actions(node)
    done = actions.reload("http://a:1", TOKEN, "10.0.0.9")
    assert done.status is ActionStatus.DONE and done.kind is ActionKind.RELOAD
    assert done.lines == ("http://a:1: reload started (state ready)",) and node.reloads == ["http://a:1/admin/reload"]
    refused = actions.reload("http://a:1", "wrong", "10.0.0.9")
    assert refused.status is ActionStatus.FAILED and "HTTP 401" in refused.lines[-1]
    assert "valid admin token" in refused.lines[-1]
    elsewhere = actions.reload("http://evil:1", TOKEN, "10.0.0.9")
    assert elsewhere.status is ActionStatus.FAILED and "not one of this console's nodes" in elsewhere.lines[-1]
    assert [r.number for r in actions.log.recent()] == [3, 2, 1]


def test_with_its_own_token_the_console_checks_it_and_throttles_guesses():
    node = FakeAdminNode()
    actions = fake_actions(node, admin_token=TOKEN)
    for _ in range(5):
        assert "valid admin token" in actions.reload("http://a:1", "guess", "10.0.0.7").lines[-1]
    blocked = actions.reload("http://a:1", TOKEN, "10.0.0.7")
    assert blocked.status is ActionStatus.FAILED and "Too many wrong admin tokens" in blocked.lines[-1]
    assert actions.reload("http://a:1", TOKEN, "10.0.0.8").status is ActionStatus.DONE
    assert len(node.reloads) == 1  # the guesses never reached the node


def make_store(root: Path) -> ModelStore:
    store = ModelStore(root)
    for version in ("1", "2"):
        store.install("fake", version, lambda staging, v=version: (staging / "weights.bin").write_text(v))
        store.activate(f"fake@{version}")
    return store


def test_rollback_moves_the_link_back_then_reloads_the_chosen_nodes(tmp_path):
    node = FakeAdminNode()
    store = make_store(tmp_path / "models")
    assert fake_actions(node, admin_token=TOKEN, store=store).store_actions_off is None
    assert "--models-root" in fake_actions(node, admin_token=TOKEN, store=None).store_actions_off
    assert "admin token" in fake_actions(node, store=store).store_actions_off

    actions = fake_actions(node, admin_token=TOKEN, store=store)
    wrong = actions.rollback("current", ["http://a:1"], "guess", "10.0.0.5")
    assert wrong.status is ActionStatus.FAILED and store.current() == "fake@2"  # the store is untouched
    done = actions.rollback("current", ["http://a:1", "http://b:1"], TOKEN, "10.0.0.5")
    assert done.status is ActionStatus.DONE, done.lines
    assert store.current() == "fake@1" and done.lines[0] == "current -> fake@1"
    assert node.reloads == ["http://a:1/admin/reload", "http://b:1/admin/reload"]
    again = actions.rollback("current", [], TOKEN, "10.0.0.5")  # previous is now fake@2: back and forth
    assert again.status is ActionStatus.DONE and store.current() == "fake@2"


def test_gray_release_runs_ops_gray_on_a_thread_and_logs_its_steps(tmp_path):
    store = make_store(tmp_path / "models")
    calls, release_it = [], threading.Event()

    def fake_gray(given_store: ModelStore, args: argparse.Namespace) -> int:
        calls.append(args)
        print("1/3 verifying fake@1")
        print("2/3 standby")
        release_it.wait(10)
        if args.version == "bad":
            raise ModelInstallError("gray release stopped: standby failed on bad")
        print("done: both instances serve fake@1")
        return 0

    actions = fake_actions(FakeAdminNode(), admin_token=TOKEN, store=store, gray=fake_gray, probes_file=Path("p.toml"))
    record = actions.start_gray(GrayRelease("fake@1", "http://b:1", "http://a:1", watch_s=5), TOKEN, "10.0.0.4")
    assert record.status is ActionStatus.RUNNING
    busy = actions.rollback("current", [], TOKEN, "10.0.0.4")
    assert busy.status is ActionStatus.FAILED and "Another rollback or gray release" in busy.lines[-1]
    release_it.set()
    deadline = time.monotonic() + 10
    while actions.log.get(record.number).status is ActionStatus.RUNNING and time.monotonic() < deadline:
        time.sleep(0.05)
    finished = actions.log.get(record.number)
    assert finished.status is ActionStatus.DONE
    assert finished.lines == ("1/3 verifying fake@1", "2/3 standby", "done: both instances serve fake@1")
    args = calls[0]
    assert (args.version, args.standby, args.primary, args.standby_link, args.link, args.token, args.watch_s,
            args.probes_file) == ("fake@1", "http://b:1", "http://a:1", "standby", "current", TOKEN, 5, Path("p.toml"))

    failed = actions.start_gray(GrayRelease("bad", "http://b:1", "http://a:1"), TOKEN, "10.0.0.4")
    deadline = time.monotonic() + 10
    while actions.log.get(failed.number).status is ActionStatus.RUNNING and time.monotonic() < deadline:
        time.sleep(0.05)
    assert actions.log.get(failed.number).status is ActionStatus.FAILED
    assert actions.log.get(failed.number).lines[-1] == "gray release stopped: standby failed on bad"
    same = actions.start_gray(GrayRelease("fake@1", "http://a:1", "http://a:1"), TOKEN, "10.0.0.4")
    assert same.status is ActionStatus.FAILED and "two different nodes" in same.lines[-1]


def test_the_action_log_is_bounded():
    log = ActionLog(keep=3)
    for _ in range(5):
        log.end(log.begin(ActionKind.RELOAD, "x"), ActionStatus.DONE)
    assert [r.number for r in log.recent()] == [5, 4, 3]


def test_the_table_escapes_what_nodes_send_and_survives_malformed_answers():
    from ops.tools.console.page import nodes_html
    from ops.tools.console.poller import ConsoleView, NodeView

    odd = Sample(1000.0, Reach.ANSWERING, ready={"state": "ready", "model": "<script>x</script>", "uptime_s": "long",
                                                 "last_self_test": {"passed": True, "at": "noon", "detail": "<b>"}})
    html = nodes_html(ConsoleView(1, 1000.0, PollerConfig(), (NodeView("http://a:1", (odd,)),
                                                              NodeView("http://b:1", ()))))
    assert "<script>" not in html and "&lt;script&gt;" in html and "<b>" not in html
    assert 'data-node="http://b:1"' in html and "not polled yet" in html
    assert '<time data-epoch="1000.000">1970-01-01 00:16:40 UTC</time>' in html  # when it was polled


# ----- options ------------------------------------------------------------------------------------------------


def test_options_come_from_flags_or_the_environment_and_are_checked(tmp_path):
    from ops.tools.console.__main__ import load_console_config

    config = load_console_config(["--nodes", "http://a:1/, http://b:2,http://a:1"], environ={})
    assert config.nodes == ("http://a:1", "http://b:2") and config.port == 7870 and config.interval_s == 5.0
    config = load_console_config([], environ={"ALLINONE_CONSOLE_NODES": "http://a:1", "ALLINONE_CONSOLE_PORT": "9000",
                                              "ALLINONE_ADMIN_TOKEN": "s3cret", "ALLINONE_MODELS_ROOT": str(tmp_path)})
    assert (config.port, config.admin_token, config.models_root) == (9000, "s3cret", tmp_path)
    assert "s3cret" not in repr(config)
    for argv, why in [([], "Give the nodes"), (["--nodes", "a:1"], "not an http"),
                      (["--nodes", "http://a:1", "--host", "0.0.0.0"], "--auth"),
                      (["--nodes", "http://a:1", "--interval-s", "0.1"], "at least 1"),
                      (["--nodes", "http://a:1", "--models-root", str(tmp_path / "nope")], "not a directory")]:
        with pytest.raises(ConfigError, match=why):
            load_console_config(argv, environ={})
    assert load_console_config(["--nodes", "http://a:1", "--host", "0.0.0.0", "--auth", "u:p"], environ={}).auth


# ----- the page, in real Chromium --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def admin_node(tiny_app_args, tmp_path_factory):
    """A second live node, with an admin token so the console can reload it."""
    logs = tmp_path_factory.mktemp("admin-node")
    app = LiveApp([*tiny_app_args, "--log-dir", str(logs)], logs / "console.log", env={"ALLINONE_ADMIN_TOKEN": TOKEN})
    yield app
    app.stop()


@pytest.fixture(scope="module")
def console(live_app, admin_node, tmp_path_factory):
    """``python -m ops.console`` on two live nodes and an address where nothing listens."""
    port, dead = free_port(), f"http://127.0.0.1:{free_port()}"
    log = open(tmp_path_factory.mktemp("console") / "console.log", "w")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("ALLINONE_")}, "ALLINONE_ADMIN_TOKEN": TOKEN}
    proc = subprocess.Popen([sys.executable, "-m", "ops.console", "--nodes", f"{live_app.url},{admin_node.url},{dead}",
                             "--port", str(port), "--interval-s", "1"], cwd=REPO, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, f"the console exited with {proc.returncode}; see {log.name}"
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, f"the console did not serve within 60 s; see {log.name}"
        time.sleep(0.3)
    yield argparse.Namespace(url=url, dead=dead)
    proc.terminate()
    proc.wait(15)
    log.close()


@contextlib.contextmanager
def console_page(url: str, timezone_id: str):
    """Headless Chromium (Debian's, as tests/fast/test_browser.py) in a given time zone, opened at ``url``."""
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            page = browser.new_context(timezone_id=timezone_id, viewport={"width": 1400, "height": 1400}).new_page()
            page.set_default_timeout(30_000)
            page.goto(url)
            yield page
        finally:
            browser.close()


def _operator_reloads(url: str) -> float:
    text = httpx.get(url + "/metrics").text
    return float(re.search(r"^allinone_operator_reloads_total (\S+)$", text, re.M).group(1))


def test_the_console_in_chromium_shows_live_and_down_nodes_keeps_updating_and_reloads_a_node(
        console, live_app, admin_node):
    from playwright.sync_api import expect

    for _ in range(3):  # traffic on one node, for its request rate and latency
        httpx.post(live_app.url + "/v1/classify", json={"task": "sentiment", "input": ["Lovely.", "Awful."]},
                   timeout=60).raise_for_status()
    zone = "Asia/Shanghai"
    with console_page(console.url, zone) as page:
        row = lambda url: page.locator(f'#console-nodes tr[data-node="{url}"]')  # noqa: E731
        expect(row(live_app.url)).to_have_attribute("data-state", "ready")
        expect(row(admin_node.url)).to_have_attribute("data-state", "ready")
        expect(row(console.dead)).to_have_attribute("data-state", "down")
        expect(row(console.dead)).to_contain_text("nothing listening")
        expect(row(live_app.url)).to_contain_text("tiny-qwen2@test")
        expect(row(live_app.url).locator("td").nth(4)).not_to_have_text("—")  # requests per second
        expect(row(live_app.url).locator("td").nth(6)).to_contain_text(" s")  # p50
        for plot in ("latency", "errors", "memory"):
            expect(page.locator(f"#console-{plot} .vega-embed")).to_be_visible()

        # It keeps updating: the shared poller's round moves on, and the page with it.
        round_now = lambda: int(page.locator("#console-round").get_attribute("data-polls"))  # noqa: E731
        first = round_now()
        page.wait_for_function(f"() => +document.querySelector('#console-round').dataset.polls > {first + 1}",
                               timeout=15_000)
        # Times are the viewer's local time (the browser's zone, whatever the server's).
        epoch, shown = page.locator("#console-round time").evaluate("el => [el.dataset.epoch, el.textContent]")
        assert shown == dt.datetime.fromtimestamp(float(epoch), ZoneInfo(zone)).strftime("%H:%M:%S")

        page.locator("#console-token input").fill("not the token")
        page.locator("#console-reload-node input").click()
        page.get_by_role("option", name=admin_node.url).click()
        page.locator("#console-reload").click()
        expect(page.locator("#console-action-outcome")).to_contain_text("valid admin token")
        assert _operator_reloads(admin_node.url) == 0

        page.locator("#console-token input").fill(TOKEN)
        page.locator("#console-reload").click()
        expect(page.locator("#console-action-outcome")).to_contain_text("reload started")
        expect(page.locator("#console-actions tr[data-status='done']")).to_contain_text(admin_node.url)
        expect(row(admin_node.url)).to_have_attribute("data-state", "ready", timeout=60_000)
        page.screenshot(path=str(ARTIFACTS / "browser-console.png"), full_page=True)
    assert _operator_reloads(admin_node.url) == 1

    # The reload shows up in that node's own Status history.
    with browser_page(admin_node.url, height=1200) as page:
        page.get_by_role("tab", name="Status").click()
        expect(page.locator("#status-history")).to_contain_text("reload")
        expect(page.locator("#status-history")).to_contain_text("operator request")
