"""Builder for the Status tab: what the service is doing, and buttons to break it on purpose.

State, model, self-tests, recoveries, latency and memory over time, other instances, and with an admin
token a drill panel (``AdminActions``), in the viewer's language and time zone. It reads plain dicts
through the callables it is given, on a timer that runs only while the tab is open, outside the queue.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import gradio as gr
import pandas as pd

from ui.i18n import t
from ui.task_admin import TaskAdmin, build_task_panel
from ui.viewer import Viewer, client_host, plot_times, viewer_of

__all__ = ["StatusSource", "Drills", "build_status_tab", "peer_frame", "REFRESH_S", "QUIET"]

REFRESH_S = 3.0
AXIS_CLOCK = "%H:%M:%S"  # the plots' time axis (d3 format)
# Events that only read or poke the service: outside the queue (they work while it is full),
# not in the API, no spinner.
QUIET = dict(queue=False, api_visibility="private", show_progress="hidden")
SELF_TEST = ("self-test",)
LIFECYCLE = ("loaded", "load-failed", "reload", "recovering", "recovered", "switch", "unload-first", "rollback",
             "integrity")


@dataclass(frozen=True)
class StatusSource:
    snapshot: Callable[[], dict]  # the /ready JSON
    events: Callable[[int, tuple[str, ...]], list[dict]]  # newest first: {at, kind, ok, detail}
    latency_rows: Callable[[], list[dict]]  # {time, task, mean_s, max_s, requests}
    memory_rows: Callable[[], list[dict]]  # {time, process ("web" or "worker"), rss_mib}
    peers: Callable[[], list[dict]] | None = None  # {url, ready, state, model, latency_ms, error} (ops.serving.peers)


class Drills(TaskAdmin, Protocol):
    """What the drill panel and the task panel call (``ops.api.admin.AdminActions``); an error's text
    (``str``) is what the operator sees."""

    enabled: bool
    fault_kinds: tuple[str, ...]
    tasks: object | None  # the runtime tasks; None: this app cannot change its tasks at run time

    def reload(self, token: str | None, client: str = ...) -> dict: ...

    def fault(self, kind: str, token: str | None, client: str = ...) -> dict: ...


EVENT_COLUMNS = ("col.time", "col.event", "col.detail")
PEER_COLUMNS = ("col.instance", "col.ready", "col.state", "col.model", "col.latency", "col.detail")


def headers(keys: tuple[str, ...], viewer: Viewer = Viewer()) -> list[str]:
    """A table's headers in the viewer's language (they come with the rows: Gradio shows keys raw there)."""
    return [viewer.text(key) for key in keys]


def _named(viewer: Viewer, prefix: str, value: str) -> str:
    """``value`` (a state, an event kind...) by its name in the table, or as it is where it has none."""
    try:
        return viewer.text(f"{prefix}.{value}")
    except KeyError:
        return value


def summary_markdown(snapshot: dict, viewer: Viewer = Viewer()) -> str:
    """The snapshot as Markdown, in the viewer's language and time zone."""
    def item(key: str, value: object, **params: object) -> None:
        lines.append(f"- **{viewer.text(key, **params)}**: {value}")

    lines = [f"### {_named(viewer, 'state', snapshot['state'])}"]
    item("summary.model", f"`{snapshot.get('model') or '—'}`")
    if snapshot.get("reason"):
        item("summary.reason", viewer.detail(snapshot["reason"]))
    test = snapshot.get("last_self_test")
    if test:
        verdict = "✓" if test["passed"] else viewer.text("summary.failed")
        took = viewer.text("summary.seconds", seconds=f"{test['duration_s']:.2f}")
        item("summary.self_test", f"{verdict} {viewer.clock(test['at'])} ({took}) {viewer.detail(test['detail'])}")
    item("summary.failures", snapshot.get("consecutive_failures", 0))
    item("summary.uptime", viewer.text("summary.seconds", seconds=f"{snapshot.get('uptime_s', 0):.0f}"))
    if snapshot.get("worker_pid"):
        item("summary.worker", f"pid {snapshot['worker_pid']}")
    if snapshot.get("backend"):
        item("summary.runtime", f"{snapshot['backend']['name']} ({snapshot['backend']['reason']})")
    if snapshot.get("precision"):
        item("summary.weights", f"{snapshot['precision']['format']} ({snapshot['precision']['reason']})")
    for task, head in (snapshot.get("heads") or {}).items():
        item("summary.head", f"{_named(viewer, 'head', head['status'])}: {viewer.detail(head['detail'])}",
             task=_named(viewer, "task", task))
    return "\n".join(lines)


def event_frame(events: list[dict], viewer: Viewer = Viewer()) -> pd.DataFrame:
    rows = [[viewer.clock(e["at"]), ("✓ " if e["ok"] else "✗ ") + _named(viewer, "event", e["kind"]),
             viewer.detail(e["detail"])] for e in events]
    return pd.DataFrame(rows, columns=headers(EVENT_COLUMNS, viewer))


def peer_frame(peers: list[dict], viewer: Viewer = Viewer()) -> pd.DataFrame:
    rows = [[p["url"], "✓" if p["ready"] else "✗", _named(viewer, "state", p["state"]), p.get("model") or "—",
             "—" if p.get("latency_ms") is None else p["latency_ms"], p.get("error") or ""] for p in peers]
    return pd.DataFrame(rows, columns=headers(PEER_COLUMNS, viewer))


def latency_frame(rows: list[dict], viewer: Viewer = Viewer()) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["time", "task", "mean_s", "max_s", "requests"])
    frame["time"] = plot_times(frame["time"])
    frame["task"] = [_named(viewer, "task", task) for task in frame["task"]]
    return frame


def memory_frame(rows: list[dict], viewer: Viewer = Viewer()) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["time", "process", "rss_mib"])
    frame["time"] = plot_times(frame["time"])
    frame["process"] = [_named(viewer, "process", process) for process in frame["process"]]
    return frame


def _or_none(frame: pd.DataFrame) -> pd.DataFrame | None:
    """No frame for a plot with no points yet (Vega would draw an empty axis from -Infinity to Infinity)."""
    return None if frame.empty else frame


def build_status_tab(source: StatusSource, drills: Drills | None, viewer_box: gr.Textbox
                     ) -> tuple[gr.Timer, Callable, list]:
    """Render the tab into the current Blocks context. ``viewer_box`` holds the browser's time zone and
    language (``ui.viewer``): every refresh takes it as its input.

    Returns the (inactive) refresh timer and the refresh function with its
    outputs, so the caller can run the timer only while this tab is shown
    (the function takes ``viewer_box``'s value).
    """
    summary = gr.Markdown(elem_id="status-summary")
    peers = None
    if source.peers is not None:
        peers = gr.Dataframe(label=t("peers"), interactive=False, wrap=True, elem_id="status-peers")
    with gr.Row():
        # 24-hour clock on the axes, as in the tables (Vega's default is 12-hour: "10:32" for 22:32).
        axes = dict(x="time", x_title=t("axis.time"), height=240, x_axis_format=AXIS_CLOCK)
        latency_plot = gr.LinePlot(y="mean_s", color="task", label=t("latency_plot"), y_title=t("axis.seconds"),
                                   color_title=t("axis.task"), elem_id="status-latency", **axes)
        memory_plot = gr.LinePlot(y="rss_mib", color="process", label=t("memory_plot"), y_title=t("axis.mib"),
                                  color_title=t("axis.process"), elem_id="status-memory", **axes)
    with gr.Row():
        # No headers until the first refresh brings them in the viewer's language.
        self_tests = gr.Dataframe(label=t("recent_self_tests"), interactive=False, wrap=True,
                                  max_height=320, elem_id="status-self-tests")
        history = gr.Dataframe(label=t("reload_history"), interactive=False, wrap=True,
                               max_height=320, elem_id="status-history")

    def refresh(viewer_raw: str | None = None):
        viewer = viewer_of(viewer_raw)
        return (summary_markdown(source.snapshot(), viewer),
                _or_none(latency_frame(source.latency_rows(), viewer)),
                _or_none(memory_frame(source.memory_rows(), viewer)),
                event_frame(source.events(10, SELF_TEST), viewer),
                event_frame(source.events(20, LIFECYCLE), viewer))

    outputs = [summary, latency_plot, memory_plot, self_tests, history]
    if drills is not None and drills.enabled:
        _build_drill_panel(drills, refresh, outputs, viewer_box)
    timer = gr.Timer(REFRESH_S, active=False)
    timer.tick(refresh, inputs=[viewer_box], outputs=outputs, **QUIET)
    if peers is not None:
        timer.tick(lambda raw: peer_frame(source.peers(), viewer_of(raw)), inputs=[viewer_box], outputs=[peers],
                   **QUIET)
    return timer, refresh, outputs


def _build_drill_panel(drills: Drills, refresh: Callable, refresh_outputs: list, viewer_box: gr.Textbox) -> None:
    with gr.Accordion(t("drills"), open=False, elem_id="status-drills"):
        gr.Markdown(t("drills_help"))
        token = gr.Textbox(label=t("admin_token"), type="password", elem_id="status-token")
        with gr.Row():
            actions = [("reload", t("reload_button"))] + [(kind, kind) for kind in drills.fault_kinds]
            buttons = [(name, gr.Button(label, variant="primary" if name == "reload" else "stop",
                                        size="sm", elem_id=f"status-drill-{name}")) for name, label in actions]
        outcome = gr.Markdown(elem_id="status-drill-outcome")
    if drills.tasks is not None:  # the app can change its tasks at run time
        build_task_panel(drills, token, viewer_box)

    def run(name: str, given: str, request: gr.Request):
        client = client_host(request)  # for the token throttle
        try:
            result = drills.reload(given, client) if name == "reload" else drills.fault(name, given, client)
        except Exception as exc:  # AdminDenied: show why, never a traceback
            return f"✗ {exc}"
        return f"✓ `{name}`: {result}"

    for name, button in buttons:
        button.click(_handler(run, name), inputs=[token], outputs=[outcome], **QUIET).then(
            refresh, inputs=[viewer_box], outputs=refresh_outputs, **QUIET)


def _handler(run: Callable, name: str) -> Callable:
    """One button's handler; Gradio hands it the request (for the client address) by its type hint."""

    def handle(given: str, request: gr.Request):
        return run(name, given, request)

    return handle
