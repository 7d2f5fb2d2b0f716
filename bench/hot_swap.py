"""Hot swap and automatic rollback on the default model, under steady client traffic.

    .venv/bin/python bench/hot_swap.py [--source models/current] [--root /tmp/allinone-swap-store] [--clients 4]

Builds a store under ``--root`` (once; about 8 GB): the default model twice
(versions ``a`` and ``b``, identical weights) and a broken copy (``broken``:
the output layer negated, so it loads and answers, but every sentiment flips
and the known-answer self-test fails). Starts ``python app.py`` on the
store, keeps ``--clients`` gradio_client users sending sentiment requests
with known answers, then:

1. ``activate b``: time from running the command to ``/ready`` naming ``b``
   (the command itself hashes 2.5 GB first, reported apart), failed requests,
   wrong answers, and the server's peak RSS, web and worker processes together
   (two workers run side by side during the swap);
2. ``activate broken``: time until the app has rolled it back (``current``
   names ``b`` again), whether ``/ready`` ever named ``broken``, failed
   requests and wrong answers.
"""

from __future__ import annotations

import argparse
import collections
import threading
import time
from pathlib import Path

import httpx
import psutil

from common import KNOWN, REPO, header, install_broken_copy, running_app, store_cli, tree_rss

TOKEN = "swap-token"


def build_store(source: Path, root: Path) -> None:
    from ops.store.versions import ModelStore

    store = ModelStore(root)
    name = source.resolve().name.partition("@")[0]
    for version in ("a", "b"):
        if f"{name}@{version}" not in store.keys():
            print(f"installing {name}@{version} ...", flush=True)
            store_cli(root, "install", str(source), "--version", version)
    if f"{name}@broken" not in store.keys():
        print(f"building {name}@broken (output layer negated) ...", flush=True)
        install_broken_copy(source, root, "broken")
    store.activate(f"{name}@a")


class Load:
    """Clients in a loop, plus samplers of /ready's model and the server's RSS."""

    def __init__(self, url: str, pid: int, clients: int) -> None:
        self.url, self.clients = url, clients
        self.process = psutil.Process(pid)
        self.outcomes: collections.Counter = collections.Counter()
        self.wrong = 0
        self.models: list[tuple[float, str | None]] = []
        self.peak_rss = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._user, args=(i,), daemon=True) for i in range(clients)]
        self._threads.append(threading.Thread(target=self._sample, daemon=True))

    def _user(self, i: int) -> None:
        from gradio_client import Client

        client = Client(self.url, verbose=False)
        n = i
        while not self._stop.is_set():
            text, label = KNOWN[n % len(KNOWN)]
            n += 1
            try:
                got = client.predict(text, api_name="/sentiment")["label"]
                self.outcomes["ok"] += 1
                self.wrong += got != label
            except Exception as exc:  # noqa: BLE001 - counted by message
                self.outcomes[str(exc)[:80]] += 1

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak_rss = max(self.peak_rss, sum(tree_rss(self.process.pid)))
            try:
                self.models.append((time.perf_counter(), httpx.get(self.url + "/ready", timeout=5).json()["model"]))
            except (httpx.HTTPError, ValueError):
                self.models.append((time.perf_counter(), None))
            time.sleep(0.1)

    def start(self) -> "Load":
        for t in self._threads:
            t.start()
        time.sleep(5)
        return self

    def reset(self) -> None:
        self.outcomes.clear()
        self.wrong = 0
        self.models.clear()
        self.peak_rss = sum(tree_rss(self.process.pid))

    def wait_model(self, key: str, timeout: float = 300) -> float:
        started = time.perf_counter()
        while time.perf_counter() - started < timeout:
            if self.models and self.models[-1][1] == key:
                return self.models[-1][0]
            time.sleep(0.05)
        raise SystemExit(f"/ready never named {key}")

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(60)


def recoveries(url: str) -> float:
    """Watchdog recoveries so far: a starved CPU can make a step look hung, and that is no swap's doing."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(url + "/metrics", timeout=10).text
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == "allinone_recoveries_total")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--source", type=Path, default=REPO / "models" / "current")
    parser.add_argument("--root", type=Path, default=Path("/tmp/allinone-swap-store"))
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args()
    build_store(args.source, args.root)
    from ops.store.versions import ModelStore

    store = ModelStore(args.root)
    name = store.current().partition("@")[0]
    header(f"hot swap and rollback on {name}, {args.clients} clients")
    with running_app(["--models-root", str(args.root), "--admin-token", TOKEN,
                      "--log-dir", "/tmp/allinone-swap-logs"]) as (proc, url, cold):
        load = Load(url, proc.pid, args.clients).start()
        try:
            time.sleep(20)  # past the background SHA-256 check that follows every load
            load.reset()
            base_rss, recovered = load.peak_rss, recoveries(url)
            started = time.perf_counter()
            activate_s = store_cli(args.root, "activate", f"{name}@b")
            served_at = load.wait_model(f"{name}@b")
            time.sleep(5)
            print({"step": "hot swap a -> b", "cold_start_s": round(cold, 1),
                   "activate_command_s": round(activate_s, 1),
                   "link_to_serving_s": round(served_at - started - activate_s, 1),
                   "activate_to_serving_s": round(served_at - started, 1),
                   "rss_before_gib": round(base_rss / 2**30, 2), "peak_rss_gib": round(load.peak_rss / 2**30, 2),
                   "requests": dict(load.outcomes), "wrong_answers": load.wrong,
                   "watchdog_recoveries_meanwhile": recoveries(url) - recovered}, flush=True)

            time.sleep(20)
            load.reset()
            recovered = recoveries(url)
            started = time.perf_counter()
            activate_s = store_cli(args.root, "activate", f"{name}@broken", "--force")  # --force: rejected last run
            while store.current() != f"{name}@b" and time.perf_counter() - started < 300:
                time.sleep(0.05)
            back_s = time.perf_counter() - started
            time.sleep(5)
            print({"step": "activate broken, automatic rollback", "activate_command_s": round(activate_s, 1),
                   "activate_to_rolled_back_s": round(back_s, 1),
                   "link_to_rolled_back_s": round(back_s - activate_s, 1),
                   "ready_named": sorted({m for _, m in load.models if m}), "rejected": store.rejected().get(
                       f"{name}@broken", {}).get("reason"),
                   "peak_rss_gib": round(load.peak_rss / 2**30, 2), "requests": dict(load.outcomes),
                   "wrong_answers": load.wrong, "watchdog_recoveries_meanwhile": recoveries(url) - recovered},
                  flush=True)
        finally:
            load.stop()


if __name__ == "__main__":
    main()
