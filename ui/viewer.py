"""Who is looking: the browser's time zone and language, for text and times built on the server.

On load ``VIEWER_JS`` writes ``{"tz", "lang"}`` into a hidden box that handlers read with ``viewer_of``;
text comes from ``ui.i18n`` in that language, table times on the viewer's clock (plots get instants).
Before the browser has answered: the server's zone and English.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pandas as pd

from engine.types import TaskInfo
from ui.i18n import detail, label_names, language_of, text

if TYPE_CHECKING:
    import gradio as gr

__all__ = ["Viewer", "VIEWER_JS", "viewer_of", "plot_times", "client_host"]

VIEWER_JS = ("() => JSON.stringify({tz: Intl.DateTimeFormat().resolvedOptions().timeZone || '', "
             "lang: navigator.language || ''})")


@dataclass(frozen=True)
class Viewer:
    zone: dt.tzinfo | None = None  # None: the server's own
    chinese: bool = False

    @property
    def lang(self) -> str:
        return "zh" if self.chinese else "en"

    def text(self, key: str, **params: object) -> str:
        """The table's string ``key`` in the viewer's language."""
        return text(key, self.lang, **params)

    def detail(self, message: str) -> str:
        """A message from ops/ or engine/ in the viewer's language, where the table knows its wording."""
        return detail(message, self.lang)

    def labels(self, info: TaskInfo) -> dict[str, str]:
        """The task's labels -> their names in the viewer's language."""
        return label_names(info, self.lang)

    def clock(self, unix: float, now: float | None = None) -> str:
        """``HH:MM:SS`` in the viewer's zone; with the date in front when it is not today there."""
        moment = dt.datetime.fromtimestamp(unix, self.zone)
        today = dt.datetime.fromtimestamp(dt.datetime.now().timestamp() if now is None else now, self.zone).date()
        return moment.strftime("%H:%M:%S" if moment.date() == today else "%Y-%m-%d %H:%M:%S")


def plot_times(unix: pd.Series) -> pd.Series:
    """Unix times as instants (UTC) for a plot's time axis. The browser draws an instant in its own zone,
    so converting them to the viewer's clock here would add the offset a second time."""
    return pd.to_datetime(unix, unit="s", utc=True)


def viewer_of(raw: str | None) -> Viewer:
    """The hidden box's value (see the module doc); anything unreadable is the server's defaults."""
    try:
        data = json.loads(raw or "{}")
        zone = ZoneInfo(data["tz"]) if data.get("tz") else None
        return Viewer(zone, language_of(data.get("lang")) == "zh")
    except (ValueError, TypeError, KeyError, AttributeError, ZoneInfoNotFoundError):
        return Viewer()


def client_host(request: gr.Request | None) -> str:
    """The viewer's address, for the admin token's throttle; Gradio's request may carry no client."""
    return getattr(getattr(request, "client", None), "host", None) or "unknown"
