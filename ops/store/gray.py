"""Gray release on one node: a new version goes to the standby instance first, then the primary.

    python -m ops.models gray V --standby http://127.0.0.1:7861 --primary http://127.0.0.1:7860 \
        [--standby-link standby] [--link current] [--token T] [--watch-s 20]

Each step must pass before the next: verify ``V``, switch and watch the standby, then the primary; a
failure stops the flow, points the links back and exits non-zero. The steps: ``docs/internals.md``.
"""

from __future__ import annotations

import argparse
import time

import httpx
from loguru import logger

from engine.errors import ModelInstallError
from ops.serving.watchdog import DEFAULT_PROBES_FILE, Probes, load_probes
from ops.store.versions import ModelStore

__all__ = ["gray_release"]


def _say(message: str) -> None:
    print(message, flush=True)


class _Instance:
    def __init__(self, role: str, url: str, link: str, token: str | None) -> None:
        self.role, self.url, self.link, self.token = role, url.rstrip("/"), link, token

    def ready(self) -> dict:
        try:
            response = httpx.get(self.url + "/ready", timeout=5)
            return {**response.json(), "http": response.status_code}
        except (httpx.HTTPError, ValueError) as exc:
            return {"http": None, "state": f"unreachable ({exc})", "model": None}

    def nudge(self) -> None:
        """Ask for the reload now instead of waiting for the watchdog's next look at the link."""
        if not self.token:
            return
        try:
            httpx.post(self.url + "/admin/reload", headers={"Authorization": f"Bearer {self.token}"}, timeout=10)
        except httpx.HTTPError as exc:
            logger.warning("gray: could not ask {} to reload ({}); its watchdog will notice", self.role, exc)

    def probe(self, probes: Probes) -> str | None:
        """The known-answer probes through the public API; the first problem, or None."""
        from gradio_client import Client

        try:
            client = Client(self.url, verbose=False)
            for task, text, expected in probes.classify:
                got = client.predict(text, api_name=f"/{task}")["label"]
                if got != expected:
                    return f"{task}({text[:30]!r}) gave {got}, expected {expected}"
            for task, message, _ in probes.generate:
                if not isinstance(client.predict(message, [], api_name=f"/{task}"), str):
                    return f"{task} gave no text"
        except Exception as exc:  # any failure through the API is a finding
            return f"a probe request failed: {exc}"
        return None


def _switch(store: ModelStore, inst: _Instance, key: str, probes: Probes, args) -> str | None:
    """Move one instance to ``key`` and watch it; the reason it failed, or None."""
    old = store.activate(key, inst.link)
    _say(f"  {inst.role}: {inst.link} -> {key} (was {old}); waiting for {inst.url} to serve it")
    inst.nudge()
    started = time.monotonic()
    while True:
        ready = inst.ready()
        if ready.get("http") == 200 and ready.get("model") == key:
            break
        if store.current(inst.link) != key:  # the app rolled its link back
            why = store.rejected().get(key, {}).get("reason", "its link was moved")
            return f"{inst.role} rolled {key} back: {why}"
        if time.monotonic() - started > args.timeout_s:
            return f"{inst.role} did not serve {key} within {args.timeout_s:.0f} s (state {ready.get('state')})"
        time.sleep(0.5)
    _say(f"  {inst.role}: serving {key} after {time.monotonic() - started:.1f} s; watching for {args.watch_s:.0f} s")
    problem = inst.probe(probes)
    deadline = time.monotonic() + args.watch_s
    while problem is None and time.monotonic() < deadline:
        ready = inst.ready()
        if ready.get("http") != 200 or ready.get("model") != key:
            problem = f"/ready turned {ready.get('state')} on {ready.get('model')}: {ready.get('reason')}"
        time.sleep(1.0)
    problem = problem or inst.probe(probes)
    if problem is not None:
        if old is not None and store.point_back(inst.link, key, old, f"gray release: {problem}"):
            inst.nudge()
        return f"{inst.role} failed on {key}: {problem}"
    _say(f"  {inst.role}: {key} passed")
    return None


def gray_release(store: ModelStore, args: argparse.Namespace) -> int:
    key = store.resolve_key(args.version)
    probes = load_probes(args.probes_file or DEFAULT_PROBES_FILE)
    _say(f"1/3 verifying {key}")
    problems = store.verify(key)
    if problems:
        raise ModelInstallError(f"{key} fails verification: {'; '.join(problems[:5])}")
    standby = _Instance("standby", args.standby, args.standby_link, args.token)
    primary = _Instance("primary", args.primary, args.link, args.token)
    standby_old = store.current(standby.link)
    for step, inst in ((2, standby), (3, primary)):
        _say(f"{step}/3 {inst.role}")
        failure = _switch(store, inst, key, probes, args)
        if failure is not None:
            if inst is primary and standby_old not in (None, key):
                store.point_back(standby.link, key, standby_old, f"the primary failed: {failure}")
                standby.nudge()
            raise ModelInstallError(f"gray release stopped: {failure}")
    _say(f"done: both instances serve {key}")
    return 0
