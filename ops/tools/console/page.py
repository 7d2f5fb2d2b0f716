"""The console's page: a row per node, plots over the last hour, the alerts, and the operator actions.

Every tab reads the shared poller's ``ConsoleView`` on a ``gr.Timer``; no tab polls a node. Times go to
the browser as unix times and show in the viewer's local time, 24-hour. Node text is escaped.
"""

from __future__ import annotations

import html
from typing import Callable

import gradio as gr
import pandas as pd

from ops.tools.console.actions import ActionRecord, ActionStatus, ConsoleActions, GrayRelease
from ops.tools.console.alerts import AlertName
from ops.tools.console.poller import ConsoleView, Sample

__all__ = ["build_console", "nodes_html", "actions_html", "series_frame"]

# Events that only read the poller or the log: outside the queue, not in the API, no spinner.
QUIET = dict(queue=False, api_visibility="private", show_progress="hidden")

# Formats every <time data-epoch> inside the component in the viewer's local time, now and after each update.
LOCAL_TIME_JS = """
const pad = (n) => String(n).padStart(2, '0');
function localTime(epoch) {
  const d = new Date(epoch * 1000), now = new Date();
  const clock = pad(d.getHours()) + ':' + pad(d.getMinutes()) + ':' + pad(d.getSeconds());
  if (d.toDateString() === now.toDateString()) return clock;
  return d.getFullYear() + '-' + pad(d.getMonth() + 1) + '-' + pad(d.getDate()) + ' ' + clock;
}
function localize() {
  element.querySelectorAll('time[data-epoch]').forEach((el) => {
    const epoch = parseFloat(el.dataset.epoch);
    el.textContent = localTime(epoch);
    el.title = new Date(epoch * 1000).toString();
  });
}
localize();
watch('value', localize);
"""

CSS = """
.console-table { border-collapse: collapse; width: 100%; font-size: 0.9em; }
.console-table th, .console-table td { border-bottom: 1px solid #8884; padding: 4px 6px; text-align: left; }
.console-table td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.state-ready { color: #15803d; font-weight: 600; }
.state-down, .state-failed, .state-bad-answer { color: #b91c1c; font-weight: 600; }
.state-loading, .state-recovering { color: #b45309; font-weight: 600; }
.alert-firing { color: #fff; background: #b91c1c; border-radius: 4px; padding: 0 4px; }
.alert-pending { color: #000; background: #fbbf24; border-radius: 4px; padding: 0 4px; }
.alert-ok, .alert-no-data { color: #6b7280; }
.console-table td:first-child, .console-table td span[class^="alert-"] { white-space: nowrap; }
.swatch { display: inline-block; width: 0.8em; height: 0.8em; border-radius: 2px; margin-right: 4px; }
.action-failed { color: #b91c1c; } .action-done { color: #15803d; } .action-running { color: #b45309; }
"""

# One color per node, the same in the table and every plot (Vega's legend does not fit under a Gradio plot).
NODE_COLORS = ("#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2", "#eeca3b", "#9d755d", "#ff9da6",
               "#bab0ac")
ALERT_LABELS = {AlertName.HIGH_ERROR_RATIO: "errors", AlertName.SLOW_RESPONSES: "latency",
                AlertName.MEMORY_HIGH: "memory"}
NODE_COLUMNS = ("Node", "State", "Model", "Last self-test", "Req/s", "Errors", "p50", "p95", "Worker RSS",
                "Recoveries", "Rollbacks", "Uptime", "Alerts", "Polled")


def _time(epoch: float | None) -> str:
    """A time the browser shows in local time; the UTC text is what shows without JavaScript."""
    if epoch is None:
        return "—"
    utc = pd.Timestamp(epoch, unit="s").strftime("%Y-%m-%d %H:%M:%S UTC")
    return f'<time data-epoch="{epoch:.3f}">{utc}</time>'


def _number(value: object) -> float | None:
    """A number a node sent, or None for anything else (a node's JSON is not trusted to be well formed)."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _num(value: float | None, fmt: str, unit: str = "") -> str:
    return "—" if value is None else f"{value:{fmt}}{unit}"


def _mib(value: float | None) -> str:
    return "—" if value is None else f"{value / 2**20:,.0f} MiB"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if days else f"{hours} h {minutes:02d} m" if hours else f"{minutes} m {secs:02d} s"


def _css_name(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower())


def _alerts_cell(sample: Sample) -> str:
    parts = []
    for status in sample.alerts:
        value = "no data" if status.value is None else f"{status.value:.3g}"
        title = f"{status.name.value}: {value} (fires above {status.above:g})"
        parts.append(f'<span class="alert-{_css_name(status.state.value)}" title="{title}">'
                     f"{ALERT_LABELS[status.name]} {status.state.value}</span>")
    return "<br>".join(parts) or "—"


def _self_test_cell(ready: dict) -> str:
    test = ready.get("last_self_test")
    if not isinstance(test, dict):
        return "—"
    mark = "✓" if test.get("passed") else "✗"
    return f'<span title="{html.escape(str(test.get("detail", "")))}">{mark} {_time(_number(test.get("at")))}</span>'


def node_colors(urls: list[str]) -> dict[str, str]:
    return {url: NODE_COLORS[i % len(NODE_COLORS)] for i, url in enumerate(urls)}


def _node_row(url: str, color: str, sample: Sample | None) -> str:
    escape = html.escape
    node = f'<span class="swatch" style="background: {color}"></span><a href="{escape(url)}" target="_blank">' \
           f"{escape(url)}</a>"
    if sample is None:
        return f'<tr data-node="{escape(url)}"><td>{node}</td><td>not polled yet</td>' + "<td></td>" * 12
    ready = dict(sample.ready or {})
    reading, stats = sample.reading, sample.stats
    state = sample.state
    problem = sample.problem or ready.get("reason") or ""
    cells = [
        node,
        f'<span class="state-{_css_name(state)}" title="{escape(str(problem))}">{escape(state)}</span>'
        + (f"<br><small>{escape(str(problem))}</small>" if problem else ""),
        escape(str(ready.get("model") or "—")),
        _self_test_cell(ready),
        _num(stats and stats.requests_per_s, ".2f"),
        _num(None if stats is None or stats.error_ratio is None else stats.error_ratio * 100, ".1f", " %"),
        _num(stats and stats.p50_s, ".2f", " s"),
        _num(stats and stats.p95_s, ".2f", " s"),
        _mib(reading and reading.worker_rss_bytes),
        _num(reading and reading.recoveries, ".0f"),
        _num(reading and reading.rollbacks, ".0f"),
        _duration(_number(ready.get("uptime_s"))),
        _alerts_cell(sample),
        _time(sample.at),
    ]
    numeric = {4, 5, 6, 7, 8, 9, 10}
    tds = "".join(f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>" for i, c in enumerate(cells))
    return f'<tr data-node="{escape(url)}" data-state="{escape(state)}">{tds}</tr>'


def nodes_html(view: ConsoleView) -> str:
    head = "".join(f"<th>{name}</th>" for name in NODE_COLUMNS)
    colors = node_colors([node.url for node in view.nodes])
    rows = "".join(_node_row(node.url, colors[node.url], node.latest) for node in view.nodes)
    return f'<table class="console-table"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>'


def polled_html(view: ConsoleView) -> str:
    config = view.config
    when = "not yet" if view.polled_at is None else f"round {view.polls} at {_time(view.polled_at)}"
    return (f'<p>{len(view.nodes)} nodes, polled every {config.interval_s:g} s (timeout {config.timeout_s:g} s); '
            f'<span id="console-round" data-polls="{view.polls}">{when}</span>. Req/s, errors and latency are '
            f"over the last {config.stats_window_s:g} s; plots over the last {config.keep_s / 60:g} minutes.</p>")


def actions_html(records: list[ActionRecord]) -> str:
    if not records:
        return "<p>No actions yet.</p>"
    rows = []
    for r in records:
        status = f'<span class="action-{r.status.value}">{"✓ " if r.status is ActionStatus.DONE else ""}' \
                 f'{"✗ " if r.status is ActionStatus.FAILED else ""}{r.status.value}</span>'
        lines = "<br>".join(html.escape(line) for line in r.lines)
        rows.append(f'<tr data-action="{r.number}" data-status="{r.status.value}"><td>{_time(r.started_at)}</td>'
                    f"<td>{r.kind.value}</td><td>{html.escape(r.target)}</td><td>{status}</td><td>{lines}</td></tr>")
    head = "".join(f"<th>{name}</th>" for name in ("Started", "Action", "Target", "Status", "What happened"))
    return f'<table class="console-table"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def series_frame(view: ConsoleView, value: Callable[[Sample], float | None], column: str) -> pd.DataFrame:
    """One row per node and poll that has ``value``: time (for the browser's local time), node, ``column``."""
    rows = [(s.at, node.url, v) for node in view.nodes for s in node.samples if (v := value(s)) is not None]
    frame = pd.DataFrame(rows, columns=["time", "node", column])
    frame["time"] = pd.to_datetime(frame["time"], unit="s")
    return frame


def _p95(sample: Sample) -> float | None:
    return sample.stats.p95_s if sample.stats else None


def _error_percent(sample: Sample) -> float | None:
    return None if sample.stats is None or sample.stats.error_ratio is None else sample.stats.error_ratio * 100


def _memory_mib(sample: Sample) -> float | None:
    r = sample.reading
    if r is None or r.web_rss_bytes is None or r.worker_rss_bytes is None:
        return None
    return (r.web_rss_bytes + r.worker_rss_bytes) / 2**20


def _client(request: gr.Request | None) -> str:
    return getattr(getattr(request, "client", None), "host", None) or "unknown"


def _outcome(record: ActionRecord) -> str:
    last = record.lines[-1] if record.lines else ""
    mark = {ActionStatus.DONE: "✓", ActionStatus.FAILED: "✗", ActionStatus.RUNNING: "…"}[record.status]
    return f"{mark} {record.kind.value} {record.target}: {record.status.value}. {last}"


def build_console(view: Callable[[], ConsoleView], actions: ConsoleActions, refresh_s: float) -> gr.Blocks:
    """The page; ``view`` is the poller's, ``actions`` acts and keeps the log every viewer sees."""
    nodes = list(actions.nodes)
    with gr.Blocks(title="All-in-One console") as demo:
        gr.Markdown("## All-in-One console")
        polled = gr.HTML(elem_id="console-polled", js_on_load=LOCAL_TIME_JS)
        table = gr.HTML(elem_id="console-nodes", js_on_load=LOCAL_TIME_JS)
        with gr.Row():
            plot = dict(x="time", color="node", color_map=node_colors(nodes), colors_in_legend=[], x_title="local time",
                        x_axis_format="%H:%M:%S", height=260)
            latency = gr.LinePlot(y="p95_s", y_title="s", label="Latency p95", elem_id="console-latency", **plot)
            errors = gr.LinePlot(y="errors_pct", y_title="%", label="Error ratio", elem_id="console-errors", **plot)
            memory = gr.LinePlot(y="rss_mib", y_title="MiB", label="Memory (web + worker)",
                                 elem_id="console-memory", **plot)
        with gr.Accordion("Actions", open=True, elem_id="console-actions-panel"):
            token = gr.Textbox(label="Admin token", type="password", elem_id="console-token")
            with gr.Row():
                reload_node = gr.Dropdown(nodes, value=nodes[0] if nodes else None, label="Node",
                                          elem_id="console-reload-node")
                reload_button = gr.Button("Reload node", variant="primary", elem_id="console-reload")
            off = actions.store_actions_off
            if off is not None:
                gr.Markdown(off, elem_id="console-store-off")
            else:
                gr.Markdown(f"Rollback and gray release act on the model store at `{actions.store.root}` on this "
                            "machine: use them only when the nodes serve links of this same store.")
                with gr.Row():
                    link = gr.Textbox("current", label="Link to roll back", elem_id="console-rollback-link")
                    rollback_nodes = gr.CheckboxGroup(nodes, value=nodes, label="then reload",
                                                      elem_id="console-rollback-nodes")
                    rollback_button = gr.Button("Roll back", variant="stop", elem_id="console-rollback")
                with gr.Row():
                    version = gr.Dropdown(actions.store.keys(), label="Version", allow_custom_value=True,
                                          elem_id="console-gray-version")
                    standby = gr.Dropdown(nodes, label="Standby (first)", elem_id="console-gray-standby")
                    primary = gr.Dropdown(nodes, label="Primary (then)", elem_id="console-gray-primary")
                    standby_link = gr.Textbox("standby", label="Standby's link")
                    primary_link = gr.Textbox("current", label="Primary's link")
                    watch_s = gr.Number(20, label="Watch each for (s)", minimum=0)
                    gray_button = gr.Button("Start gray release", variant="primary", elem_id="console-gray")
            outcome = gr.Markdown(elem_id="console-action-outcome")
        gr.Markdown("### Recent actions")
        log = gr.HTML(elem_id="console-actions", js_on_load=LOCAL_TIME_JS)

        def refresh():
            current = view()
            return (polled_html(current), nodes_html(current),
                    series_frame(current, _p95, "p95_s"), series_frame(current, _error_percent, "errors_pct"),
                    series_frame(current, _memory_mib, "rss_mib"), actions_html(actions.log.recent()))

        outputs = [polled, table, latency, errors, memory, log]
        demo.load(refresh, outputs=outputs, **QUIET)
        if off is None:  # versions installed since the console started
            demo.load(lambda: gr.Dropdown(choices=actions.store.keys()), outputs=[version], **QUIET)
        gr.Timer(refresh_s).tick(refresh, outputs=outputs, **QUIET)

        def reload(node: str, given: str, request: gr.Request):
            return _outcome(actions.reload(node, given, _client(request)))

        reload_button.click(reload, inputs=[reload_node, token], outputs=[outcome], **QUIET).then(
            refresh, outputs=outputs, **QUIET)
        if off is None:
            def rollback(link_name: str, chosen: list[str], given: str, request: gr.Request):
                return _outcome(actions.rollback(link_name.strip(), chosen or [], given, _client(request)))

            def gray(key: str, first: str, then: str, first_link: str, then_link: str, seconds: float, given: str,
                     request: gr.Request):
                release = GrayRelease(str(key or "").strip(), first or "", then or "", first_link.strip(),
                                      then_link.strip(), float(seconds or 0))
                return _outcome(actions.start_gray(release, given, _client(request)))

            rollback_button.click(rollback, inputs=[link, rollback_nodes, token], outputs=[outcome], **QUIET).then(
                refresh, outputs=outputs, **QUIET)
            gray_button.click(gray, inputs=[version, standby, primary, standby_link, primary_link, watch_s, token],
                              outputs=[outcome], **QUIET).then(refresh, outputs=outputs, **QUIET)
    return demo
