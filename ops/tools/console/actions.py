"""The console's operator actions (reload a node, roll a store link back, a gray release) and their log.

Reload forwards ``POST /admin/reload`` with the typed token. Rollback and gray release change the
store under ``--models-root`` here, so the console checks the token itself first (constant time,
throttled per address); without a token or store they are off and say why. One store action at a
time, only configured nodes are sent requests, and every outcome goes to the shared ``ActionLog``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import Callable, Sequence

import httpx
from loguru import logger

from engine.errors import AllInOneError
from ops.api.admin import AdminDenied, WrongTokenThrottle
from ops.store.versions import ModelStore

__all__ = ["ActionKind", "ActionStatus", "ActionRecord", "ActionLog", "ActionRefused", "ConsoleActions",
           "GrayRelease"]


class ActionKind(str, Enum):
    RELOAD = "reload"
    ROLLBACK = "rollback"
    GRAY = "gray release"


class ActionStatus(str, Enum):
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class ActionRefused(Exception):
    """An action the console will not start (store actions off, another one running, an unknown node)."""


@dataclass(frozen=True)
class ActionRecord:
    number: int
    kind: ActionKind
    target: str
    started_at: float
    status: ActionStatus = ActionStatus.RUNNING
    lines: tuple[str, ...] = ()
    finished_at: float | None = None


class ActionLog:
    """The last ``keep`` actions, newest last; thread-safe, readers get frozen records."""

    def __init__(self, keep: int = 50, clock: Callable[[], float] = time.time) -> None:
        self._records: deque[ActionRecord] = deque(maxlen=keep)
        self._lock = threading.Lock()
        self._clock = clock
        self._count = 0

    def begin(self, kind: ActionKind, target: str) -> int:
        with self._lock:
            self._count += 1
            self._records.append(ActionRecord(self._count, kind, target, self._clock()))
            return self._count

    def note(self, number: int, line: str) -> None:
        self._change(number, lambda r: replace(r, lines=r.lines + (line,)))

    def end(self, number: int, status: ActionStatus, line: str | None = None) -> ActionRecord:
        now = self._clock()
        return self._change(number, lambda r: replace(r, status=status, finished_at=now,
                                                      lines=r.lines + ((line,) if line else ())))

    def get(self, number: int) -> ActionRecord | None:
        with self._lock:
            return next((r for r in self._records if r.number == number), None)

    def recent(self, limit: int = 20) -> list[ActionRecord]:
        """Newest first."""
        with self._lock:
            return list(reversed(self._records))[:limit]

    def _change(self, number: int, change: Callable[[ActionRecord], ActionRecord]) -> ActionRecord | None:
        with self._lock:
            for i, record in enumerate(self._records):
                if record.number == number:
                    self._records[i] = change(record)
                    return self._records[i]
        return None  # fell out of the log meanwhile


@dataclass(frozen=True)
class GrayRelease:
    """What ``python -m ops.models gray`` takes (see ``ops.store.gray``)."""

    version: str
    standby: str
    primary: str
    standby_link: str = "standby"
    link: str = "current"
    watch_s: float = 20.0
    timeout_s: float = 300.0


class _Lines(io.TextIOBase):
    """A text stream that hands each complete line to ``emit``."""

    def __init__(self, emit: Callable[[str], None]) -> None:
        self._emit, self._partial = emit, ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        *lines, self._partial = (self._partial + text).split("\n")
        for line in lines:
            if line.strip():
                self._emit(line.rstrip())
        return len(text)


@dataclass
class ConsoleActions:
    nodes: Sequence[str]
    log: ActionLog = field(default_factory=ActionLog)
    admin_token: str | None = field(default=None, repr=False)
    store: ModelStore | None = None
    probes_file: Path | None = None  # the known-answer probes a gray release sends (default ops/serving/probes.toml)
    client: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=10.0))
    gray: Callable[[ModelStore, argparse.Namespace], int] | None = None  # default ops.store.gray.gray_release
    throttle: WrongTokenThrottle = field(default_factory=WrongTokenThrottle)

    def __post_init__(self) -> None:
        self.nodes = tuple(url.rstrip("/") for url in self.nodes)
        self._store_busy = threading.Lock()

    @property
    def store_actions_off(self) -> str | None:
        """Why rollback and gray release are off (None: they are on)."""
        if self.store is None:
            return ("Rollback and gray release are off: start the console with --models-root pointing at the "
                    "model store the nodes serve (on this machine).")
        if not self.admin_token:
            return ("Rollback and gray release are off: start the console with the nodes' admin token "
                    "(ALLINONE_ADMIN_TOKEN or --admin-token-file), so it can check the token typed here.")
        return None

    # ----- the actions ----------------------------------------------------------------

    def reload(self, node: str, token: str | None, client: str = "unknown") -> ActionRecord:
        number = self.log.begin(ActionKind.RELOAD, node or "?")
        try:
            if self.admin_token:
                self._authorize(token, client)
            self._known(node)
        except (AdminDenied, ActionRefused) as exc:
            return self.log.end(number, ActionStatus.FAILED, str(exc))
        ok, line = self._post_reload(node, token)
        return self.log.end(number, ActionStatus.DONE if ok else ActionStatus.FAILED, line)

    def rollback(self, link: str, nodes: Sequence[str], token: str | None, client: str = "unknown") -> ActionRecord:
        number = self.log.begin(ActionKind.ROLLBACK, f"{link} ({', '.join(nodes) or 'no node to reload'})")
        try:
            self._may_change_store(token, client, nodes)
        except (AdminDenied, ActionRefused) as exc:
            return self.log.end(number, ActionStatus.FAILED, str(exc))
        try:
            target = self.store.rollback(link)
        except (AllInOneError, OSError) as exc:  # nothing to go back to, a bad link, a store it may not write
            return self.log.end(number, ActionStatus.FAILED, str(exc))
        finally:
            self._store_busy.release()
        self.log.note(number, f"{link} -> {target}")
        results = [self._post_reload(node, token) for node in nodes]
        for _, line in results:
            self.log.note(number, line)
        failed = [line for ok, line in results if not ok]
        return self.log.end(number, ActionStatus.FAILED if failed else ActionStatus.DONE,
                            "a node that was not reloaded follows the link within seconds by itself" if failed
                            else f"rolled back to {target}")

    def start_gray(self, release: GrayRelease, token: str | None, client: str = "unknown") -> ActionRecord:
        """Start a gray release on a thread; the record is RUNNING and its lines grow as it goes."""
        number = self.log.begin(ActionKind.GRAY, f"{release.version}: standby {release.standby}, "
                                                 f"then primary {release.primary}")
        try:
            if release.standby.rstrip("/") == release.primary.rstrip("/"):
                raise ActionRefused("The standby and the primary must be two different nodes.")
            self._may_change_store(token, client, (release.standby, release.primary))
        except (AdminDenied, ActionRefused) as exc:
            return self.log.end(number, ActionStatus.FAILED, str(exc))
        threading.Thread(target=self._run_gray, args=(number, release, token), name="console-gray",
                         daemon=True).start()
        return self.log.get(number)

    # ----- parts ----------------------------------------------------------------------

    def _run_gray(self, number: int, release: GrayRelease, token: str) -> None:
        gray = self.gray
        if gray is None:
            from ops.store.gray import gray_release as gray  # gradio_client for its probes: only when used
        args = argparse.Namespace(version=release.version, standby=release.standby, primary=release.primary,
                                  standby_link=release.standby_link, link=release.link, token=token,
                                  watch_s=release.watch_s, timeout_s=release.timeout_s, probes_file=self.probes_file)
        try:
            # gray_release reports its steps with print: they become the action's lines. stdout is the
            # process's, but nothing else in the console prints, and one store action runs at a time.
            with contextlib.redirect_stdout(_Lines(lambda line: self.log.note(number, line))):
                gray(self.store, args)
        except AllInOneError as exc:
            self.log.end(number, ActionStatus.FAILED, str(exc))
        except Exception as exc:  # the thread's last word: never lose why it ended
            logger.exception("console: gray release failed")
            self.log.end(number, ActionStatus.FAILED, f"{type(exc).__name__}: {exc}")
        else:
            self.log.end(number, ActionStatus.DONE)
        finally:
            self._store_busy.release()

    def _may_change_store(self, token: str | None, client: str, nodes: Sequence[str]) -> None:
        """Refuse unless store actions are on, the token is right and the nodes known; then hold the store."""
        off = self.store_actions_off
        if off is not None:
            raise ActionRefused(off)
        self._authorize(token, client)
        for node in nodes:
            self._known(node)
        if not self._store_busy.acquire(blocking=False):
            raise ActionRefused("Another rollback or gray release is running; wait for it to end.")

    def _known(self, node: str) -> None:
        if node is None or node.rstrip("/") not in self.nodes:
            raise ActionRefused(f"{node!r} is not one of this console's nodes.")

    def _authorize(self, token: str | None, client: str) -> None:
        """The nodes' rule (``ops.api.admin``), against the console's own copy of the token."""
        wait = self.throttle.blocked_for(client)
        if wait > 0:
            raise AdminDenied(429, f"Too many wrong admin tokens from {client}; try again in {wait:.0f} s.")
        if not token:
            raise AdminDenied(401, "Type the admin token first.")
        if not secrets.compare_digest(token.encode("utf-8", "surrogatepass"), self.admin_token.encode()):
            count = self.throttle.failed(client)
            logger.warning("console: wrong admin token from {} ({} within a minute)", client, count)
            raise AdminDenied(401, "A valid admin token is required.")

    def _post_reload(self, node: str, token: str | None) -> tuple[bool, str]:
        """Ask ``node`` to reload; whether it accepted, and a line saying what it answered."""
        node = node.rstrip("/")
        try:
            response = self.client.post(node + "/admin/reload", headers={"Authorization": f"Bearer {token or ''}"})
        except httpx.HTTPError as exc:
            return False, f"{node}: no answer ({type(exc).__name__})"
        try:
            body = response.json()
        except ValueError:
            body = {}
        if response.status_code == 202:
            started = "reload started" if body.get("reloading") else "a load was already under way"
            return True, f"{node}: {started} (state {body.get('state', '?')})"
        detail = body.get("detail") if isinstance(body, dict) else None
        return False, f"{node}: HTTP {response.status_code}: {detail or response.text[:200]}"

