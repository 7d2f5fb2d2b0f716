"""The service follows the model store: switches, rollbacks, memory, integrity (fake workers, real store)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from engine.errors import ModelUnavailable
from engine.tasks import load_tasks
from ops.serving.readiness import RecoveryCause, State
from ops.serving.service import ModelService
from ops.serving.watchdog import Watchdog, WatchdogConfig, load_probes
from ops.store.versions import ModelSource, ModelStore
from tests.fakes import FakeWorker, wait_for
from tests.fast.test_store import tamper


class VersionWorker(FakeWorker):
    """A fake worker that says which store version it was loaded from."""

    def __init__(self, path: Path):
        super().__init__()
        self.model_path = Path(path)
        self.model_label = self.model_path.name
        self.served = 0

    def classify(self, task, texts):
        self.served += 1
        return super().classify(task, texts)


@pytest.fixture()
def store(tmp_path) -> ModelStore:
    store = ModelStore(tmp_path / "models")
    for version in ("1", "2", "3"):
        store.install("m", version, lambda d, v=version: (d / "model.safetensors").write_bytes(v.encode() * 1000))
    store.activate("m@1")
    return store


class Harness:
    """A service over the store, recording every worker it starts; ``bad`` versions fail as asked."""

    def __init__(self, store, fail_self_test=(), fail_load=(), memory=10**12):
        self.engines: list[VersionWorker] = []
        self.fail_self_test, self.fail_load = set(fail_self_test), set(fail_load)

        def load(path):
            if path.name in self.fail_load:
                raise ModelUnavailable(f"Loading the model at {path} failed: size mismatch")
            self.engines.append(VersionWorker(path))
            return self.engines[-1]

        def self_test(engine):
            if engine.model_label in self.fail_self_test:
                raise ModelUnavailable("self-test failed: sentiment gave negative, expected positive")
            return "ok"

        self.service = ModelService(load_tasks(), load, self_test=self_test, max_backoff_s=0.05,
                                    source=ModelSource(store.root / "current"), available_memory=lambda: memory)

    def __enter__(self):
        self.service.lifecycle.start()
        assert self.service.readiness.wait_ready(5)
        return self

    def __exit__(self, *exc):
        self.service.lifecycle.close()

    def serving(self) -> str | None:
        return self.service.readiness.snapshot().model

    def kinds(self) -> list[str]:
        return [e["kind"] for e in self.service.readiness.events.recent(50)]


def vitals_until(dog: Watchdog, action: str, timeout: float = 10.0) -> list[str]:
    """Run the vitals job (every 50 ms, like the real one every 2 s) until it takes ``action``."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and action not in seen:
        seen.append(dog.check_vitals())
        time.sleep(0.05)
    return seen


def test_a_new_version_is_loaded_beside_then_swapped_in(store):
    with Harness(store) as h:
        assert h.serving() == "m@1"
        store.activate("m@2")
        assert h.service.disk.check().switched_to == "m@2"
        assert h.service.lifecycle.reload("test")
        assert wait_for(lambda: h.serving() == "m@2" and h.engines[0].closed)
        # Counted once the reload returns, which the old engine's closing (in the background) may precede.
        assert wait_for(lambda: h.service.readiness.stats.switches == {"beside": 1})
        assert "switch" in h.kinds()
        assert h.service.disk.check().switched_to is None
        assert h.service.classify("sentiment", ["hi"])[0].label == "positive"
        assert h.engines[1].served == 1


@pytest.mark.parametrize("failure, cause", [("self_test", "self_test"), ("load", "load_failed")])
def test_a_failing_version_is_rolled_back_and_never_serves(store, failure, cause):
    bad = {"fail_self_test": ["m@2"]} if failure == "self_test" else {"fail_load": ["m@2"]}
    with Harness(store, **bad) as h:
        good = h.engines[0]
        store.activate("m@2")
        assert h.service.lifecycle.reload("test")
        assert wait_for(lambda: h.service.readiness.stats.rollbacks.get(cause) == 1)
        assert store.current() == "m@1" and store.previous() == "m@2"
        assert "m@2" in store.rejected()
        assert h.serving() == "m@1" and h.service.readiness.snapshot().ready and not good.closed
        assert "rolled back" in h.service.readiness.snapshot().reason
        assert h.service.classify("sentiment", ["hi"]) and good.served == 1
        assert all(e.served == 0 for e in h.engines[1:])
        assert "rollback" in h.kinds()
        # the watchdog does not try the rejected version again; a new activation is tried
        assert h.service.disk.check().switched_to is None
        store.activate("m@3")
        assert h.service.disk.check().switched_to == "m@3"


def test_a_version_whose_files_do_not_match_their_manifest_is_refused_at_load(store):
    with Harness(store) as h:
        target = store.root / "m@2" / "model.safetensors"
        store.activate("m@2")
        target.parent.chmod(0o755)
        target.chmod(0o644)
        target.write_bytes(b"short")  # after activate's verify: only the load's size check can see it
        h.service.lifecycle.reload("test")
        assert wait_for(lambda: h.service.readiness.stats.rollbacks.get("damaged") == 1)
        assert h.serving() == "m@1" and store.current() == "m@1"
        assert len(h.engines) == 1  # never even loaded


def test_without_room_beside_the_old_model_is_unloaded_first_and_the_events_say_so(store):
    with Harness(store, memory=0) as h:
        store.activate("m@2")
        h.service.lifecycle.reload("test")
        assert wait_for(lambda: h.serving() == "m@2" and h.service.readiness.snapshot().ready)
        assert h.engines[0].closed
        assert wait_for(lambda: h.service.readiness.stats.switches == {"unload_first": 1})  # counted after ready
        unload = [e for e in h.service.readiness.events.recent(50) if e["kind"] == "unload-first"]
        assert unload and "not enough free memory" in unload[0]["detail"]


def test_unloaded_first_then_failing_brings_the_good_version_back(store):
    with Harness(store, memory=0, fail_self_test=["m@2"]) as h:
        store.activate("m@2")
        h.service.lifecycle.reload("test")
        assert wait_for(lambda: h.service.readiness.stats.rollbacks.get("self_test") == 1)
        assert wait_for(lambda: h.serving() == "m@1" and h.service.readiness.snapshot().ready)
        assert [e.model_label for e in h.engines] == ["m@1", "m@2", "m@1"]
        assert store.current() == "m@1"


def test_a_request_racing_the_swap_runs_on_the_new_engine(store):
    with Harness(store) as h:
        old = h.engines[0]
        new = VersionWorker(store.root / "m@2")

        def closed_under_the_caller(task, texts):
            h.service.supervisor.swap_in(new)  # the swap lands between picking the worker and submitting
            raise ModelUnavailable()

        old.classify = closed_under_the_caller
        assert h.service.classify("sentiment", ["hi"])[0].label == "positive"
        assert new.served == 1


def test_a_damaged_serving_version_is_replaced_by_the_last_good_one(store):
    with Harness(store) as h:
        store.activate("m@2")
        h.service.lifecycle.reload("test")
        assert wait_for(lambda: h.serving() == "m@2")
        store.point_back("current", "m@3", None, "an earlier failed self-test")  # m@3: rejected, not a target
        dog = Watchdog(h.service, load_probes(), WatchdogConfig(), rss=lambda: 1)
        assert wait_for(lambda: not h.service.integrity.hashing)  # the background check after the load
        assert dog.check_vitals() == "ok"
        tamper(store.root / "m@2" / "model.safetensors")
        assert vitals_until(dog, "restore")[-1] == "restore"  # sizes+mtime changed, then hashed
        assert wait_for(lambda: h.serving() == "m@1")
        assert store.current() == "m@1" and "m@2" in store.rejected()
        assert h.service.readiness.stats.integrity_failures == 1 and h.service.readiness.stats.rollbacks == {"damaged": 1}
        assert {"integrity", "rollback", "switch"} <= set(h.kinds())
        assert dog.check_vitals() == "ok"


def test_a_damaged_version_with_nothing_to_go_back_to_keeps_its_in_memory_copy(store):
    with Harness(store) as h:
        tamper(store.root / "m@1" / "model.safetensors")
        for key in ("m@2", "m@3"):
            tamper(store.root / key / "model.safetensors")  # no good version left either
        dog = Watchdog(h.service, load_probes(), WatchdogConfig(), rss=lambda: 1)
        assert vitals_until(dog, "restore")[-1] == "restore"
        assert wait_for(lambda: "no verified version to go back to" in (h.service.readiness.snapshot().reason or ""))
        assert h.service.readiness.snapshot().ready and not h.engines[0].closed
        assert dog.check_vitals() == "ok"  # reported once, not every tick


def test_touched_but_intact_files_are_hashed_and_accepted(store):
    with Harness(store) as h:
        integrity = h.service.integrity
        assert wait_for(lambda: not integrity.hashing)
        weights = store.root / "m@1" / "model.safetensors"
        os.utime(weights, (1, 1))
        assert h.service.disk.check().damaged is None  # starts the hash
        assert wait_for(lambda: not integrity.hashing and h.service.disk.check().damaged is None)
        assert integrity._fingerprint == integrity._hashed[1]  # the new picture is accepted


def test_requests_keep_being_served_throughout_a_switch(store):
    """Many switches under steady requests: none fails, each answered by a version that passed."""
    with Harness(store) as h:
        failures, stop = [], threading.Event()

        def traffic():
            while not stop.is_set():
                try:
                    h.service.classify("sentiment", ["hi"])
                except Exception as exc:  # noqa: BLE001 - any failure is what this test looks for
                    failures.append(exc)

        threads = [threading.Thread(target=traffic) for _ in range(4)]
        for t in threads:
            t.start()
        try:
            for key in ("m@2", "m@3", "m@1", "m@2"):
                store.activate(key)
                assert h.service.lifecycle.reload("test")
                assert wait_for(lambda key=key: h.serving() == key)
        finally:
            stop.set()
            for t in threads:
                t.join(5)
        assert failures == []
        assert h.service.readiness.snapshot().state is State.READY


def test_the_store_rule_picks_the_newest_verified_version_that_is_not_rejected(store):
    assert store.fallback(exclude=("m@3",)) == "m@2"  # newest first
    assert store.fallback(exclude=("m@3",), prefer="m@1") == "m@1"  # the serving one, while eligible
    store.point_back("current", "m@2", None, "self-test failed")
    assert store.fallback(exclude=("m@3",)) == "m@1"  # rejected versions are skipped
    tamper(store.root / "m@1" / "model.safetensors")
    assert store.fallback(exclude=("m@3",), prefer="m@1") is None  # unverified ones too; None: nothing left
    listed = {v.key: v.eligibility(hashed=True) for v in store.versions(hashed=True)}
    assert not listed["m@2"].eligible and "rejected" in listed["m@2"].why
    assert not listed["m@1"].eligible and "damaged" in listed["m@1"].why
    assert listed["m@3"].eligible


def test_damage_after_a_rollback_never_lands_on_the_rejected_version_and_a_hang_then_reloads_what_serves(store):
    """The outage found by running drills in a row on one store: a rejected C, a damaged serving B
    whose previous is C, an intact A, then a hang. It must end with A serving, never failed."""
    with Harness(store, fail_self_test=["m@3"]) as h:
        states: list[str] = []
        watching = threading.Event()

        def watch() -> None:
            while not watching.is_set():
                states.append(h.service.readiness.snapshot().state.value)
                time.sleep(0.005)

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            store.activate("m@2")
            h.service.lifecycle.reload("test")
            assert wait_for(lambda: h.serving() == "m@2")
            store.activate("m@3")  # fails its self-test: rolled back, and becomes current's previous
            h.service.lifecycle.reload("test")
            assert wait_for(lambda: h.service.readiness.stats.rollbacks.get("self_test") == 1)
            assert store.current() == "m@2" and store.previous() == "m@3" and "m@3" in store.rejected()
            dog = Watchdog(h.service, load_probes(), WatchdogConfig(), rss=lambda: 1)
            assert wait_for(lambda: not h.service.integrity.hashing)
            tamper(store.root / "m@2" / "model.safetensors")
            assert vitals_until(dog, "restore")[-1] == "restore"
            assert wait_for(lambda: h.serving() == "m@1")  # not m@3, though it is current's previous
            assert store.current() == "m@1"
            serving_before = h.engines[-1]
            assert h.service.recovery.recover(RecoveryCause.HANG, "an inference hung for 11 s (limit 10 s)")
            assert wait_for(lambda: h.service.readiness.snapshot().ready and h.engines[-1] is not serving_before)
            assert h.serving() == "m@1" and h.engines[-1].model_label == "m@1"  # what served, not the link's
            assert h.service.classify("sentiment", ["hi"])[0].label == "positive"
        finally:
            watching.set()
            watcher.join()
        assert "failed" not in states
        assert [e.model_label for e in h.engines].count("m@3") == 1  # tried once, never again


def test_a_recovery_reloads_what_serves_even_when_the_link_moved(store):
    with Harness(store) as h:
        store.point_back("current", "m@1", "m@2", "pretend an operator is mid-change")  # link: m@2
        assert h.serving() == "m@1"
        assert h.service.recovery.recover(RecoveryCause.HANG, "hung")
        assert wait_for(lambda: h.service.readiness.snapshot().ready and len(h.engines) == 2)
        assert h.engines[-1].model_label == "m@1"


def test_a_rejected_version_named_by_the_link_is_not_loaded_at_start(store):
    store.activate("m@2")
    store.point_back("current", "m@2", None, "failed its self-test on another node")  # link still names it
    with Harness(store) as h:
        assert h.serving() == "m@3"  # the newest verified version that is not rejected
        assert store.current() == "m@3"
        assert all(e.model_label != "m@2" for e in h.engines)
