"""Who is looking: the browser's time zone and language, so text built on the server reads as theirs.

Component labels follow the browser's language through Gradio's i18n; text a
handler builds at run time (the status line, the Status tab's summary) and
times (tables and plot axes) cannot, because the server does not know the
browser. So the page tells it: on load, a line of JavaScript writes
``{"tz": ..., "lang": ...}`` into a hidden box (``VIEWER_JS``), and the
handlers that build such text take that box as an input. Every time is then
shown in the viewer's own zone, the clock alone for today and with the date
otherwise; before the browser has answered, the server's zone and English.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pandas as pd

__all__ = ["Viewer", "VIEWER_JS", "viewer_of"]

VIEWER_JS = ("() => JSON.stringify({tz: Intl.DateTimeFormat().resolvedOptions().timeZone || '', "
             "lang: navigator.language || ''})")


@dataclass(frozen=True)
class Viewer:
    zone: dt.tzinfo | None = None  # None: the server's own
    chinese: bool = False

    def pick(self, english: str, chinese: str) -> str:
        return chinese if self.chinese else english

    def clock(self, unix: float, now: float | None = None) -> str:
        """``HH:MM:SS`` in the viewer's zone; with the date in front when it is not today there."""
        moment = dt.datetime.fromtimestamp(unix, self.zone)
        today = dt.datetime.fromtimestamp(dt.datetime.now().timestamp() if now is None else now, self.zone).date()
        return moment.strftime("%H:%M:%S" if moment.date() == today else "%Y-%m-%d %H:%M:%S")

    def times(self, unix: pd.Series) -> pd.Series:
        """Unix times as the viewer's wall-clock times (naive), for a plot's axis."""
        stamps = pd.to_datetime(unix, unit="s", utc=True)
        zone = self.zone or dt.datetime.now().astimezone().tzinfo
        return stamps.dt.tz_convert(zone).dt.tz_localize(None)


def viewer_of(raw: str | None) -> Viewer:
    """The hidden box's value (see the module doc); anything unreadable is the server's defaults."""
    try:
        data = json.loads(raw or "{}")
        zone = ZoneInfo(data["tz"]) if data.get("tz") else None
        return Viewer(zone, str(data.get("lang", "")).lower().startswith("zh"))
    except (ValueError, TypeError, KeyError, ZoneInfoNotFoundError):
        return Viewer()
